"""A virtual clock that is fast on asyncio too.

``giosg_visitor.testing.FakeClock`` waits for "every task blocked" with
``anyio.wait_all_tasks_blocked()``, which on asyncio sleeps 0.1 s of *real* time whenever
a task is still runnable: every wake-up that wakes another task costs 0.1 s, so a test of
ten token lifetimes takes 20 s on asyncio and 0.2 s on trio. :class:`VirtualClock` is the
same clock (same API and wake-up order) with a settle step that yields to the asyncio loop
until every other task waits on an unfinished future, without sleeping. On trio it uses
trio's exact ``wait_all_tasks_blocked``.

Meant for in-process tests only (no real sockets in flight).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import final

import anyio
import anyio.lowlevel
import sniffio


__all__ = ["VirtualClock", "settle"]


async def settle() -> None:
    """Return once every other task is blocked (asyncio: without real sleeps)."""
    if sniffio.current_async_library() != "asyncio":
        await anyio.wait_all_tasks_blocked()
        return
    this = asyncio.current_task()
    while True:
        await asyncio.sleep(0)
        for task in asyncio.all_tasks():
            if task is this:
                continue
            waiter = task._fut_waiter  # type: ignore[attr-defined]
            if waiter is None or waiter.done():
                break
        else:
            return


@final
class VirtualClock:
    """A manually driven clock (``giosg_visitor.Clock``), like ``FakeClock`` but fast.

    Args:
        start: The initial monotonic reading.
        wall_start: The initial wall-clock UNIX time.
    """

    def __init__(self, start: float = 1_000.0, *, wall_start: float = 1_700_000_000.0) -> None:
        self._now = float(start)
        self._wall_offset = float(wall_start) - float(start)
        self._sleepers: list[tuple[float, int, anyio.Event]] = []
        self._counter = itertools.count()
        #: How many sleepers were woken so far.
        self.wakeups = 0

    def monotonic(self) -> float:
        """The virtual monotonic time."""
        return self._now

    def time(self) -> float:
        """The virtual wall-clock time."""
        return self._now + self._wall_offset

    async def sleep(self, seconds: float) -> None:
        """Sleep until the virtual time has moved ``seconds`` forward."""
        if seconds <= 0:
            await anyio.lowlevel.checkpoint()
            return
        event = anyio.Event()
        heapq.heappush(self._sleepers, (self._now + seconds, next(self._counter), event))
        await event.wait()

    @property
    def next_deadline(self) -> float | None:
        """The earliest pending sleeper's wake-up time."""
        return self._sleepers[0][0] if self._sleepers else None

    async def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds``, waking sleepers one deadline at a time."""
        await self.run_until(self._now + seconds)

    async def run_until(self, when: float) -> None:
        """Move time forward to ``when``, waking sleepers one deadline at a time."""
        await settle()
        while self._sleepers and self._sleepers[0][0] <= when:
            deadline, _, event = heapq.heappop(self._sleepers)
            self._now = max(self._now, deadline)
            self.wakeups += 1
            event.set()
            await settle()
        self._now = max(self._now, when)
        await settle()

    @asynccontextmanager
    async def autojump(self) -> AsyncIterator[None]:
        """Jump to the next deadline whenever every task is blocked."""
        error: Exception | None = None
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._autojump_forever)
            try:
                yield
            except Exception as exc:
                error = exc
            finally:
                tg.cancel_scope.cancel()
        if error is not None:
            raise error

    async def _autojump_forever(self) -> None:
        while True:
            await settle()
            if self._sleepers:
                deadline, _, event = heapq.heappop(self._sleepers)
                self._now = max(self._now, deadline)
                self.wakeups += 1
                event.set()
            else:
                await anyio.sleep(0.001)

    def __repr__(self) -> str:
        return f"<VirtualClock now={self._now:.3f} sleepers={len(self._sleepers)}>"
