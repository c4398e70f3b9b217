"""Run as a subprocess: the leak-free soak of ``test_soak.py``, its result as a JSON line.

A process of its own, so that RSS, tasks and fds are the SDK's alone: inside pytest, the
log capture and the secret sentinel keep every log record of the run, which is most of a
test process's growth over an hour of reconnects.

    python -m tests.reliability._soak_child BACKEND CYCLES REAL_SECONDS
"""

from __future__ import annotations

import functools
import gc
import json
import random
import sys
import time
from typing import Any

import anyio
import attrs

import giosg_visitor._dedupe as dedupe
import giosg_visitor.visitor as visitor_module
from giosg_visitor import Visitor
from giosg_visitor._api import _CLAIMED_CACHE
from giosg_visitor.chat import Chat, MessageStream
from giosg_visitor.realtime import RealtimeConnection, ReconnectPolicy

from .._helpers import ORG_ID
from ._loopback import LoopbackRouter
from ._resources import fd_count, rss_bytes, task_count
from ._support import virtual_fake


__all__ = ["CACHE_BOUNDS", "CYCLE", "LIFETIME", "WARM_UP", "WINDOW", "SoakResult", "soak"]

ROOM_ID = "9926bdfa-56e0-11e5-b98c-6c4008c08dfe"
LIFETIME = 600.0
CYCLE = 5.0
#: A dedupe window this small is overrun every few minutes of the soak.
WINDOW = 64
#: Messages of the long chat the fake keeps (the SDK reads them all back on reconnects).
HISTORY_KEPT = 4 * WINDOW
#: Cycles before the baseline is taken (imports, first renewals, allocator warm-up).
WARM_UP = 121


@attrs.define
class SoakResult:
    """What a soak run measured."""

    cycles: int = 0
    baseline_rss: int = 0
    peak_rss: int = 0
    baseline_tasks: int = 0
    peak_tasks: int = 0
    baseline_fds: int = 0
    peak_fds: int = 0
    peak_caches: dict[str, int] = attrs.Factory(dict)
    reconnects: int = 0
    renewals: int = 0
    short_chats: int = 0
    expected: int = 0
    lost: int = 0
    duplicates: int = 0
    expired_subs: int = 0
    expired_requests: int = 0


def _caches(visitor: Visitor, stream: MessageStream) -> dict[str, int]:
    """The size of every collection the SDK keeps for a visitor, a connection, a stream."""
    connection = visitor.realtime
    return {
        "dedupe window": len(stream._seen),
        "pending messages": len(stream._pending),
        "chats": len(visitor._chats),
        "rooms joined": len(visitor._rooms_joined),
        "channels": len(connection._channels),
        "outbox": len(connection._channels._outbox),
        "reauthorizations": len(connection._channels._reauths),
        "event listeners": len(connection._listeners),
        "query tokens": len(connection._channels._query_tokens),
        "claimed sends": len(visitor._api._claimed) if visitor._api is not None else 0,
    }


#: Upper bounds of :func:`_caches`: one long chat and one short chat a minute, one room.
#: The chat registry is weak, but the refresh of every chat after a reconnect holds the
#: chats of that moment until it is done, so a short chat may outlive its minute once.
CACHE_BOUNDS = {
    "dedupe window": WINDOW,
    "pending messages": WINDOW,
    "chats": 3,
    "rooms joined": 1,
    "channels": 8,
    "outbox": 8,
    "reauthorizations": 2,
    "event listeners": 4,
    "query tokens": 8,
    "claimed sends": _CLAIMED_CACHE,
}


async def soak(*, cycles: int, real_seconds: float = 0.0) -> SoakResult:
    """Run the soak cycles (at least ``cycles``, and at least ``real_seconds``)."""
    result = SoakResult()
    received: list[str] = []
    archived: list[str] = []
    async with virtual_fake(lifetime=LIFETIME) as world:
        giosg, clock = world.giosg, world.clock
        router = LoopbackRouter(giosg)
        connection_type: Any = functools.partial(
            RealtimeConnection, transport=router, rng=random.Random(7)
        )
        # This process exists for the soak alone: patching module globals is harmless.
        visitor_module.RealtimeConnection = connection_type  # type: ignore[attr-defined]
        dedupe.DEFAULT_SEEN_CAPACITY = WINDOW  # type: ignore[misc]
        visitor = Visitor(
            ORG_ID,
            base_url=giosg.base_url,
            clock=clock,
            http_client=world.client,
            reconnect=ReconnectPolicy(first_delay=0.2, max_delay=1.0),
            ping_interval=None,
            rng=random.Random(3).random,
        )
        async with visitor:
            operator = await giosg.operator_online(ROOM_ID, "Olga")
            chat = await visitor.start_chat(ROOM_ID)
            await giosg.operator_joins(chat.id, operator)
            async with chat.messages() as stream, anyio.create_task_group() as group:

                async def consume() -> None:
                    async for message in stream:
                        received.append(message.id)

                group.start_soon(consume)
                await clock.advance(1)
                started = time.monotonic()
                cycle = 0
                while cycle < cycles or time.monotonic() - started < real_seconds:
                    await _one_cycle(cycle, giosg, clock, router, visitor, chat, operator)
                    cycle += 1
                    result.short_chats += cycle % 12 == 1
                    result.renewals += len(giosg.auth_requests)
                    result.expired_requests += len(giosg.expired_token_requests)
                    # The fake's own memory, not the SDK's: its request log, and all but
                    # the newest messages of the long chat (read back on every reconnect;
                    # still far more than the dedupe window, so its horizon is exercised).
                    giosg.state.requests.clear()
                    history = giosg.state.chats.chats[chat.id].messages
                    if len(history) > HISTORY_KEPT:
                        cut = len(history) - HISTORY_KEPT
                        archived.extend(m["id"] for m in history[:cut])
                        del history[:cut]
                    _sample(result, cycle, visitor, stream)
                await clock.advance(CYCLE)
                group.cancel_scope.cancel()
            stored = await giosg.messages(chat.id)
        result.cycles = cycle
        result.reconnects = router.connects - 1
        result.expired_subs = router.expired_subs
    expected = archived + [m["id"] for m in stored]
    got = received
    result.expected = len(expected)
    result.lost = len(set(expected) - set(got))
    result.duplicates = len(got) - len(set(got))
    assert got == expected or result.lost or result.duplicates, "messages out of order"
    return result


async def _one_cycle(
    cycle: int,
    giosg: Any,
    clock: Any,
    router: LoopbackRouter,
    visitor: Visitor,
    chat: Chat,
    operator: str,
) -> None:
    router.drop_all()
    await clock.advance(CYCLE / 2)
    await giosg.operator_says(chat.id, operator, f"operator {cycle}")
    await chat.send(f"visitor {cycle}")
    if cycle % 12 == 0:  # a short chat every virtual minute
        short = await visitor.start_chat(ROOM_ID)
        await giosg.operator_says(short.id, operator, "hello")
        with anyio.fail_after(30):  # real seconds: a hang guard
            async with short.messages() as messages:
                async for message in messages:
                    if message.message == "hello":
                        break
        await short.end()
        del short
    await clock.advance(CYCLE / 2)


def _sample(result: SoakResult, cycle: int, visitor: Visitor, stream: MessageStream) -> None:
    if cycle % 12 != 1:  # sample right after the short chat of the minute ended
        return
    gc.collect()  # the visitor's chat registry is weak: let ended chats go first
    caches = _caches(visitor, stream)
    for name, size in caches.items():
        result.peak_caches[name] = max(result.peak_caches.get(name, 0), size)
    if cycle < WARM_UP:
        return
    tasks, fds, rss = task_count(), fd_count(), rss_bytes()
    if cycle == WARM_UP:
        result.baseline_tasks, result.baseline_fds, result.baseline_rss = tasks, fds, rss
    result.peak_tasks = max(result.peak_tasks, tasks)
    result.peak_fds = max(result.peak_fds, fds)
    result.peak_rss = max(result.peak_rss, rss)


def main(argv: list[str]) -> None:
    """Soak on the backend ``argv[0]``; print the result as JSON."""
    backend, cycles, seconds = argv[0], int(argv[1]), float(argv[2])
    result = anyio.run(
        functools.partial(soak, cycles=cycles, real_seconds=seconds), backend=backend
    )
    print(json.dumps(attrs.asdict(result)), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:4])
