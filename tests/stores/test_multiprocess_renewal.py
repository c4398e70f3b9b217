"""Four worker processes sharing one store renew each visitor once per renewal period.

The workers (``tests/_renewal_worker.py``) serve the same visitors from one RedisStore or
one SQLiteStore, half of them on asyncio and half on trio. They all use the same jitter,
so they reach every renewal point together: without cross-process single-flight each of
them would renew (up to four tokens per period); with it, one renews and the others adopt
the token it stored. The fake's token journal shows which happened.

The workers stop half-way between two renewal points: a worker closed while its renewal
is in flight drops a token the server already issued, and the next worker would rightly
renew again.
"""

from __future__ import annotations

import itertools
import json
import math
import sys
import time
import uuid
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.abc import Process
from anyio.streams.buffered import BufferedByteReceiveStream

from giosg_visitor import RenewalPolicy, Visitor
from giosg_visitor.stores import RedisStore, SQLiteStore
from giosg_visitor.testing import FakeGiosg

from .._helpers import ORG_ID


ROOT = Path(__file__).resolve().parent.parent.parent
WORKERS = 4
VISITORS = 5
LIFETIME = 3.0
LIFETIMES = 3  # roughly how long the workers run, in token lifetimes
JITTER = 0.0  # every worker's random draw (the latest soft point: the longest period)
POLICY = RenewalPolicy()
PERIOD = POLICY.soft_offset(LIFETIME, JITTER)  # from one renewal to the next
RENEWALS = math.floor(LIFETIMES * LIFETIME / PERIOD)
# Closer together than this, two tokens of one visitor mean two processes renewed at once.
MIN_GAP = POLICY.spacing(LIFETIME)


async def read_line(stream: BufferedByteReceiveStream) -> str:
    return (await stream.receive_until(b"\n", 1 << 20)).decode()


def kill_if_running(process: Process) -> None:
    if process.returncode is None:
        process.kill()


async def start_worker(
    stack: AsyncExitStack, options: dict[str, Any]
) -> tuple[Process, BufferedByteReceiveStream]:
    process = await stack.enter_async_context(
        await anyio.open_process(
            [sys.executable, "-m", "tests._renewal_worker", json.dumps(options)],
            cwd=ROOT,
            stderr=None,  # the worker's tracebacks go to the test's captured output
        )
    )
    # On failure the workers are killed at once rather than waited for.
    stack.callback(kill_if_running, process)
    assert process.stdout is not None
    return process, BufferedByteReceiveStream(process.stdout)


@pytest.mark.parametrize("kind", ["redis", "sqlite"])
async def test_workers_renew_each_visitor_once_per_period(
    kind: str, anyio_backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """4 processes on one store: one renewal per visitor per period, no lost secret."""
    if kind == "redis":
        target = request.getfixturevalue("redis_url")
        prefix = f"test-renewal:{uuid.uuid4().hex}:"
        store: RedisStore | SQLiteStore = RedisStore(target, prefix=prefix)
    else:
        target = str(tmp_path / "visitors.sqlite3")
        prefix = ""
        store = SQLiteStore(target)
    keys = [f"visitor-{i}" for i in range(VISITORS)]
    other_backend = "trio" if anyio_backend == "asyncio" else "asyncio"
    async with FakeGiosg(token_lifetime=LIFETIME) as giosg, store, AsyncExitStack() as stack:
        workers = []
        for index in range(WORKERS):
            options = {
                "base_url": giosg.base_url,
                "org_id": ORG_ID,
                "kind": kind,
                "target": target,
                "prefix": prefix,
                "keys": keys,
                "jitter": JITTER,
                "backend": (anyio_backend, other_backend)[index % 2],
            }
            workers.append(await start_worker(stack, options))
        with anyio.fail_after(60):
            for _, stdout in workers:
                assert await read_line(stdout) == "ready"
        # Create the visitors once (together, so their renewal points nearly coincide);
        # the workers then resume them from the store.
        created: dict[str, str] = {}

        async def create(key: str) -> None:
            async with Visitor(
                ORG_ID, base_url=giosg.base_url, store=store, key=key, realtime=False
            ) as visitor:
                created[key] = visitor.visitor_id

        async with anyio.create_task_group() as tg:
            for key in keys:
                tg.start_soon(create, key)
        first = await giosg.call(lambda: [t.issued_at for t in giosg.state.tokens.values()])
        assert max(first) - min(first) < PERIOD / 4, "the visitors were created too far apart"
        stop_at = max(first) + (RENEWALS + 0.5) * PERIOD
        for process, _ in workers:
            assert process.stdin is not None
            await process.stdin.send(json.dumps({"stop_at": stop_at}).encode() + b"\n")
        with anyio.fail_after(stop_at - time.monotonic() + 30):
            reports = [json.loads(await read_line(stdout)) for _, stdout in workers]
            for process, _ in workers:
                assert await process.wait() == 0
        finished = time.monotonic()
        records = {key: await store.load(key) for key in keys}
        tokens = await giosg.call(lambda: list(giosg.state.tokens.values()))

    # No lost secret, no second visitor: every worker served the visitors created once.
    assert len(giosg.state.visitors) == VISITORS
    for report in reports:
        assert report["visitor_ids"] == created
        assert report["failures"] == []
        assert report["requests"] > 0
    for key, stored in records.items():
        assert stored is not None
        assert stored.visitor_secret_id is not None
        assert giosg.state.visitor_id_for(ORG_ID, stored.visitor_secret_id.reveal()) == created[key]
        assert stored.sessions[ORG_ID].visitor_id == created[key]
    sent_secret = [r.sent_secret for r in giosg.auth_requests]
    assert sent_secret == [False] * VISITORS + [True] * (len(sent_secret) - VISITORS)
    assert giosg.expired_token_requests == []

    # One renewal per visitor per renewal period, shared by the four workers.
    assert len(tokens) == len(sent_secret)
    for key, visitor_id in created.items():
        issued = sorted(token.issued_at for token in tokens if token.visitor_id == visitor_id)
        gaps = [round(b - a, 3) for a, b in itertools.pairwise(issued)]
        shown = f"{key}: {len(issued)} tokens, gaps {gaps}"
        # Never renewed by two processes at once, nor more often than the policy allows ...
        assert min(gaps) >= MIN_GAP, shown
        # ... and renewed at every renewal point until the workers stopped, once.
        assert len(issued) == 1 + RENEWALS, shown
        assert issued[-1] < finished
