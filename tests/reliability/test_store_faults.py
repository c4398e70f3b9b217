"""Store faults never end a visitor: outages during renewal, on virtual time.

The store of many visitors fails again and again (typed ``StoreUnavailableError`` as the
built-in stores raise it, and the raw ``OSError`` / ``sqlite3.OperationalError`` a store
of the user's own might raise) for longer than a token lives, while the visitors make
requests. Wanted: no visitor ends, no request fails or carries an expired token, and once
the store is back it holds each visitor's current token and nothing else was lost.
"""

from __future__ import annotations

import errno
import logging
import random
import sqlite3
from collections.abc import Callable
from typing import Any

import anyio
import pytest

from giosg_visitor import (
    GiosgError,
    MemoryStore,
    RetryPolicy,
    Secret,
    StoreUnavailableError,
    VisitorRecord,
)

from .._store_faults import BreakableStore
from ._support import virtual_fake
from .figures import Figures


LIFETIME = 8.0
OUTAGE = 12.0  # longer than a token lives
#: Fast retries keep the save backoff short on virtual time too (capped at max_delay).
RETRY = RetryPolicy(first_delay=0.25, max_delay=2.0)

FAULTS: dict[str, Callable[[], BaseException]] = {
    "typed": lambda: StoreUnavailableError("SQLite store: database is locked"),
    "oserror": lambda: OSError(errno.EROFS, "Read-only file system"),
    "sqlite3": lambda: sqlite3.OperationalError("database is locked"),
}


async def _outages(
    fault: str, *, visitors: int, outages: int, figures: Figures, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="giosg_visitor")
    store = BreakableStore(MemoryStore())
    bystander = VisitorRecord(visitor_secret_id=Secret("bystander-secret-0123456789abcdef"))
    await store.save("bystander", bystander)
    ended: list[str] = []
    failures: list[str] = []
    statuses: list[int] = []
    running: dict[str, Any] = {}
    async with virtual_fake(lifetime=LIFETIME) as w:
        async with anyio.create_task_group() as tg:

            async def run(index: int, *, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
                rng = random.Random(index)
                key = f"visitor-{index}"
                started = False
                try:
                    async with w.visitor(store=store, key=key, rng=rng.random, retry=RETRY) as v:
                        running[key] = v
                        started = True
                        task_status.started()
                        while True:
                            try:
                                statuses.append((await w.get_chats(v)).status_code)
                            except GiosgError as exc:
                                failures.append(type(exc).__name__)
                            await w.clock.sleep(rng.uniform(0.2, 1.0))
                except Exception as exc:  # the visitor ended: what must never happen
                    ended.append(f"{key}: {type(exc).__name__}")
                    if not started:
                        task_status.started()

            for index in range(visitors):
                await tg.start(run, index)
            for _ in range(outages):
                await w.clock.advance(3.0)
                store.broken = FAULTS[fault]
                await w.clock.advance(OUTAGE)
                store.broken = None
            # Back for long enough that every visitor's save retry has run.
            await w.clock.advance(3 * RETRY.max_delay + LIFETIME)
            saved = {key: await store.load(key) for key in running}
            current = {key: v._session.current for key, v in running.items()}
            tg.cancel_scope.cancel()
        figures.add(f"faults.store_{fault}", store.failures)
        figures.add("visitors.ended_by_fault", len(ended))
        figures.add("trials.store_outage_visitors", visitors)
        expired = w.giosg.expired_token_requests
        auths = len(w.giosg.auth_requests)
    assert ended == []
    assert failures == []
    assert set(statuses) == {200}
    assert expired == []
    assert store.failures > visitors * outages  # the renewals really met the outage
    assert auths >= visitors * (1 + outages)  # and renewed through it
    # Nothing lost: the bystander is intact, every visitor's current token is stored.
    assert await store.load("bystander") == bystander
    for key, record in saved.items():
        token = current[key]
        assert record is not None
        assert token is not None
        assert record.sessions[token.session.organization_id].access_token == token.access_token
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("renewing from memory" in r.getMessage() for r in warnings)


@pytest.mark.parametrize("fault", list(FAULTS))
async def test_store_outages_during_renewal_never_end_a_visitor(
    fault: str, figures: Figures, caplog: pytest.LogCaptureFixture
) -> None:
    """10 visitors with 8 s tokens, three 12 s store outages: none ends, none sees a failure."""
    await _outages(fault, visitors=10, outages=3, figures=figures, caplog=caplog)


@pytest.mark.slow
@pytest.mark.parametrize("fault", list(FAULTS))
async def test_store_outages_during_renewal_never_end_a_visitor_long(
    fault: str, figures: Figures, caplog: pytest.LogCaptureFixture
) -> None:
    """The long run: 100 visitors, ten 12 s outages."""
    await _outages(fault, visitors=100, outages=10, figures=figures, caplog=caplog)


async def test_a_store_outage_at_start_is_a_typed_error(figures: Figures) -> None:
    """Starting needs the store (the stored secret): a raw store error arrives typed."""
    store = BreakableStore(MemoryStore())
    store.broken = FAULTS["sqlite3"]
    async with virtual_fake(lifetime=LIFETIME) as w:
        with pytest.raises(StoreUnavailableError) as caught:
            async with w.visitor(store=store):
                pass
        figures.add("faults.store_sqlite3", store.failures)
    assert isinstance(caught.value.__cause__, sqlite3.OperationalError)


async def test_a_token_the_store_never_took_is_saved_at_close(figures: Figures) -> None:
    """The store comes back only as the visitor stops: the last renewed token is saved then."""
    store = BreakableStore(MemoryStore())
    async with virtual_fake(lifetime=LIFETIME) as w:
        async with w.visitor(store=store, retry=RetryPolicy(first_delay=60.0, max_delay=60.0)) as v:
            store.broken = FAULTS["typed"]
            await w.clock.advance(2 * LIFETIME)  # renewed from memory, saves retried rarely
            session = v._session
            assert session is not None
            assert session.has_unsaved
            current = session.current
            store.broken = None  # back, but the next save retry is a minute away
        figures.add("faults.store_typed", store.failures)
    assert current is not None
    record = await store.load("default")
    assert record is not None
    assert record.sessions[current.session.organization_id].access_token == current.access_token
