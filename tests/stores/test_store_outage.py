"""A real store outage during renewal over real sockets: the visitor goes on.

Another process holds the SQLite database with ``BEGIN EXCLUSIVE``, the FileStore's
folder and files are made immutable (``chattr +i``: like a read-only mount, and unlike
``chmod`` it stops root), or Redis refuses writes, for longer than the visitor's token
lives, while the visitor makes requests against FakeGiosg. The ``async with`` body must
run to its end, no request may fail, and once the store is back it must hold the
visitor's current token and the other visitor's record unchanged.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest

from giosg_visitor import FileStore, RedisStore, Secret, SQLiteStore, Visitor
from giosg_visitor.stores import VisitorRecord
from giosg_visitor.testing import FakeGiosg

from .._helpers import FAST_RETRY, ORG_ID, get_chats
from .._store_faults import immutable_folder, redis_refusing_writes, sqlite_held_exclusive


LIFETIME = 2.0
OUTAGE = 3.0  # longer than the token lives: the visitor must renew through it


@pytest.mark.parametrize("kind", ["sqlite", "file", "redis"])
async def test_a_store_outage_longer_than_the_token_never_ends_the_visitor(
    tmp_path: Path, kind: str, caplog: pytest.LogCaptureFixture, request: pytest.FixtureRequest
) -> None:
    """A store that refuses writes for 3 s while tokens live 2 s: the body goes on.

    SQLite held with ``BEGIN EXCLUSIVE`` by another process, a read-only (immutable)
    folder, a Redis server refusing writes (``NOREPLICAS``).
    """
    caplog.set_level(logging.WARNING, logger="giosg_visitor")
    folder = tmp_path / "store"
    folder.mkdir()
    store: FileStore | SQLiteStore | RedisStore
    if kind == "sqlite":
        store = SQLiteStore(folder / "visitors.db", busy_timeout=0.2)
    elif kind == "file":
        store = FileStore(folder / "visitors.json")
    else:
        redis_url: str = request.getfixturevalue("redis_url")
        store = RedisStore(redis_url, prefix=f"outage-{uuid.uuid4().hex}:")

    @asynccontextmanager
    async def outage() -> AsyncIterator[None]:
        if kind == "sqlite":
            async with sqlite_held_exclusive(folder / "visitors.db"):
                yield
        elif kind == "file":
            async with immutable_folder(folder):
                yield
        else:
            async with redis_refusing_writes(redis_url):
                yield

    other = VisitorRecord(visitor_secret_id=Secret("other-visitor-secret-0123456789"))
    await store.save("other", other)
    statuses: list[int] = []
    finished = False
    async with FakeGiosg(token_lifetime=LIFETIME) as giosg:
        async with Visitor(
            ORG_ID, base_url=giosg.base_url, store=store, key="me", retry=FAST_RETRY
        ) as visitor:
            async with outage():
                with anyio.move_on_after(OUTAGE):
                    while True:
                        statuses.append((await get_chats(giosg, visitor)).status_code)
                        await anyio.sleep(0.05)
            renewals_during_outage = len(giosg.auth_requests) - 1
            # The store is back: the renewed token reaches it within the save backoff.
            session = visitor._session
            assert session is not None
            with anyio.fail_after(10):
                while session.has_unsaved:
                    statuses.append((await get_chats(giosg, visitor)).status_code)
                    await anyio.sleep(0.05)
            # Tokens live 2 s, so a renewal may land between reading the current token
            # and loading the record: read again until none did.
            with anyio.fail_after(10):
                while True:
                    current = session.current
                    assert current is not None
                    stored = await store.load("me")
                    if session.current is current and not session.has_unsaved:
                        break
            other_after = await store.load("other")
            finished = True
        expired = giosg.expired_token_requests
    if isinstance(store, SQLiteStore | RedisStore):
        await store.aclose()
    assert finished
    assert set(statuses) == {200}
    assert expired == []
    assert renewals_during_outage >= 1  # the token really was renewed during the outage
    assert stored is not None
    assert stored.sessions[ORG_ID].access_token == current.access_token
    assert other_after == other  # nothing else lost
    assert "renewing from memory" in caplog.text or "using it from memory" in caplog.text
    assert current.access_token.reveal() not in caplog.text
