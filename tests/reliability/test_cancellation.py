"""Cancellation at random points, on asyncio and trio: nothing hangs, leaks or breaks.

A visitor's whole working life runs in a cancel scope over real sockets against
``FakeGiosg``: start (auth), a chat whose message stream subscribes and reads history
back, a send, the socket dropped (resubscribe and backfill), an explicit renewal. Each
trial picks a phase (round robin) and, when the work enters it, cancels the scope after a
random 0-30 ms (0-4 ms for the short renewal), so the cancellation lands inside that
phase or just after it. Then:

* leaving the visitor's ``async with`` takes no longer than the close timeout (+1 s);
* the event loop's task count and the process's fd count return to their starting values;
* the store's folder holds no temporary file;
* the stored record is intact: loadable, and always the first visitor's secret (the key
  never changes visitor), and a last, uncancelled start resumes that visitor.

File and SQLite stores alternate. The fake's request log is cleared between trials.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from pathlib import Path

import anyio
import anyio.abc
import pytest

from giosg_visitor import Secret, Store, Timeouts, Visitor
from giosg_visitor.stores import FileStore, SQLiteStore
from giosg_visitor.testing import FakeGiosg

from .._helpers import FAST_RETRY, ORG_ID
from ._resources import fd_count, task_count
from .figures import Figures


ROOM_ID = "9926bdfa-56e0-11e5-b98c-6c4008c08dfe"
PHASES = ("auth", "subscribe", "send", "backfill", "renewal")
#: The longest random delay after entering each phase (about the phase's own length).
MAX_DELAY = {"auth": 0.03, "subscribe": 0.03, "send": 0.02, "backfill": 0.03, "renewal": 0.004}
TRIALS = 100
TIMEOUTS = Timeouts(close=2.0)
#: A whole trial (start, cancel, leave) takes well under a second; one that takes this
#: long is hung on something an earlier cancellation left behind.
TRIAL_BOUND = 30.0


async def _work(
    giosg: FakeGiosg,
    store: Store,
    phase_entered: list[str],
    on_phase: anyio.abc.ObjectSendStream[str],
) -> None:
    async def enter(phase: str) -> None:
        phase_entered.append(phase)
        await on_phase.send(phase)

    await enter("auth")
    async with Visitor(
        ORG_ID, base_url=giosg.base_url, store=store, retry=FAST_RETRY, timeouts=TIMEOUTS
    ) as visitor:
        await enter("subscribe")
        chat = await visitor.start_chat(ROOM_ID, join_room=False)
        async with chat.messages() as stream:
            await enter("send")
            sent = await chat.send("hello")
            async for message in stream:
                if message.id == sent.id:
                    break
            await enter("backfill")
            await giosg.drop_sockets("reset")
            await chat.send("again")
            async for message in stream:
                if message.message == "again":
                    break
        await enter("renewal")
        await visitor.renew()
        phase_entered.append("done")


async def _settle(limit: int, count: Callable[[], int], seconds: float = 5.0) -> int:
    """Wait until ``count()`` is at most ``limit`` (sockets close in other threads too)."""
    deadline = time.monotonic() + seconds
    while (now := count()) > limit and time.monotonic() < deadline:  # noqa: ASYNC110
        await anyio.sleep(0.02)
    return now


async def _trial(
    giosg: FakeGiosg, store: Store, target: str, delay: float
) -> tuple[list[str], float]:
    """Run the work, cancelling ``delay`` s after it enters ``target``; (phases, exit time)."""
    entered: list[str] = []
    send, receive = anyio.create_memory_object_stream[str](10)
    cancelled_at: list[float] = []
    async with anyio.create_task_group() as group:

        async def cancel_in_phase() -> None:
            async with receive:
                async for phase in receive:
                    if phase == target:
                        await anyio.sleep(delay)
                        cancelled_at.append(time.monotonic())
                        group.cancel_scope.cancel()
                        return

        async def run() -> None:
            async with send:
                await _work(giosg, store, entered, send)

        group.start_soon(cancel_in_phase)
        group.start_soon(run)
    finished = time.monotonic()
    return entered, finished - (cancelled_at[0] if cancelled_at else finished)


def _temp_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


# httpx's request-body iterator (an async generator inside httpx) is left unfinished when a
# send is cancelled mid-body; trio warns when it is collected. Not SDK code, nothing held.
@pytest.mark.filterwarnings(
    "ignore:Exception ignored in. <async_generator object ByteStream.__aiter__"
    ":pytest.PytestUnraisableExceptionWarning"
)
async def test_cancelling_at_random_points_leaks_nothing(
    giosg: FakeGiosg, tmp_path: Path, figures: Figures
) -> None:
    """100 trials over five phases: bounded exit, no leaked task or fd, no temp file."""
    rng = random.Random(20)
    stores: dict[str, Store] = {
        "file": FileStore(tmp_path / "file" / "visitors.json"),
        "sqlite": SQLiteStore(tmp_path / "sqlite" / "visitors.db"),
    }
    first_secret: dict[str, Secret] = {}
    hits = dict.fromkeys(PHASES, 0)
    leaks: list[str] = []
    # One full run per store first: the starting counts include what stays open on purpose
    # (the fake's listening sockets, an SQLite connection, worker threads' fds).
    for store in stores.values():
        with anyio.fail_after(TRIAL_BOUND):  # a hang is a failure, not a stuck suite
            await _trial(giosg, store, target="never", delay=0)
    tasks, fds = task_count(), fd_count()
    for trial in range(TRIALS):
        kind = ("file", "sqlite")[trial % 2]
        store = stores[kind]
        target = PHASES[(trial // 2) % len(PHASES)]
        with anyio.move_on_after(TRIAL_BOUND) as bound:
            entered, exit_took = await _trial(
                giosg, store, target, rng.uniform(0, MAX_DELAY[target])
            )
        if bound.cancelled_caught:
            # Something a cancelled trial left behind (a lock, a task) blocks the next one.
            leaks.append(f"trial {trial} ({target}): hung for {TRIAL_BOUND:.0f} s")
            break
        hits[target] += target in entered and "done" not in entered
        giosg.state.requests.clear()
        if exit_took > TIMEOUTS.close + 1:
            leaks.append(f"trial {trial} ({target}): leaving took {exit_took:.2f} s")
        if (now := await _settle(tasks, task_count)) > tasks:
            leaks.append(f"trial {trial} ({target}): {now} tasks, started with {tasks}")
        if (now := await _settle(fds, fd_count)) > fds:
            leaks.append(f"trial {trial} ({target}): {now} fds, started with {fds}")
        for folder in (tmp_path / "file", tmp_path / "sqlite"):
            if stray := _temp_files(folder):
                leaks.append(f"trial {trial} ({target}): temporary files {stray}")
        record = await store.load("default")
        if record is not None and record.visitor_secret_id is not None:
            secret = first_secret.setdefault(kind, record.visitor_secret_id)
            if record.visitor_secret_id.reveal() != secret.reveal():
                leaks.append(f"trial {trial} ({target}): the stored secret changed")
    figures.add("trials.cancellations", TRIALS)
    figures.add("cancel.leaks", len(leaks))
    assert leaks == [], "\n".join(leaks[:20])
    assert all(hits[phase] >= 3 for phase in PHASES), hits  # cancelled inside each phase
    for kind, store in stores.items():
        record = await store.load("default")
        assert record is not None
        stored = record.sessions[ORG_ID].visitor_id
        with anyio.fail_after(TRIAL_BOUND):
            async with Visitor(ORG_ID, base_url=giosg.base_url, store=store) as visitor:
                assert visitor.visitor_id == stored, kind
    sqlite = stores["sqlite"]
    assert isinstance(sqlite, SQLiteStore)
    await sqlite.aclose()
