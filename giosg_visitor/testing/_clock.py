"""A virtual clock for tests: hours of renewals and backoff in milliseconds."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import final

import anyio
import anyio.lowlevel


__all__ = ["FakeClock"]


@final
class FakeClock:
    """A manually driven :class:`~giosg_visitor.Clock` (in the spirit of trio's MockClock).

    Time moves only when a test calls :meth:`advance` (or :meth:`run_until`). Sleepers wake
    in deadline order, and after each wake-up the clock waits until every task is blocked
    again, so the code under test sees time pass exactly as it would for real. Works on
    both anyio backends, and its readings may be shared with a ``FakeGiosg`` running in
    another thread (reads of a float are atomic).

    Args:
        start: The initial monotonic reading.
        wall_start: The initial wall-clock UNIX time.
        settle: How to wait until every other task is blocked, after each wake-up.
            ``anyio.wait_all_tasks_blocked`` by default, which is exact on trio but on
            asyncio polls with 0.1 s of real sleep while any task is runnable; a test
            suite with many wake-ups may pass a faster wait of its own.
    """

    def __init__(
        self,
        start: float = 1_000.0,
        *,
        wall_start: float = 1_700_000_000.0,
        settle: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._now = float(start)
        self._wall_offset = float(wall_start) - float(start)
        self._sleepers: list[tuple[float, int, anyio.Event]] = []
        self._counter = itertools.count()
        self._settle = settle if settle is not None else anyio.wait_all_tasks_blocked

    def monotonic(self) -> float:
        """The virtual monotonic time."""
        return self._now

    def time(self) -> float:
        """The virtual wall-clock time (moves with :meth:`monotonic`)."""
        return self._now + self._wall_offset

    def skew_wall(self, seconds: float) -> None:
        """Jump the wall clock alone (clock-skew tests); monotonic time is unaffected."""
        self._wall_offset += seconds

    async def sleep(self, seconds: float) -> None:
        """Sleep until the virtual time has moved ``seconds`` forward."""
        if seconds <= 0:
            await anyio.lowlevel.checkpoint()
            return
        event = anyio.Event()
        heapq.heappush(self._sleepers, (self._now + seconds, next(self._counter), event))
        await event.wait()

    def blocking_sleep(self, seconds: float) -> None:
        """A blocking caller's sleep: moves the virtual time forward by ``seconds`` at once.

        Code without an event loop (``httpx.Client`` auth) cannot wait for a test to call
        :meth:`advance`, so its own sleep is the time passing. Async sleepers whose
        deadline it passes wake at the next :meth:`advance`.
        """
        self._now += max(0.0, seconds)

    @property
    def next_deadline(self) -> float | None:
        """The earliest pending sleeper's wake-up time."""
        return self._sleepers[0][0] if self._sleepers else None

    async def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds``, waking sleepers one deadline at a time."""
        await self.run_until(self._now + seconds)

    async def run_until(self, when: float) -> None:
        """Move time forward to ``when``, waking sleepers one deadline at a time."""
        await self._settle()
        while self._sleepers and self._sleepers[0][0] <= when:
            deadline, _, event = heapq.heappop(self._sleepers)
            self._now = max(self._now, deadline)
            event.set()
            await self._settle()
        self._now = max(self._now, when)
        await self._settle()

    @asynccontextmanager
    async def autojump(self) -> AsyncIterator[None]:
        """Jump to the next deadline whenever every task is blocked (trio's autojump).

        Use it around code that sleeps on this clock where the test cannot drive time
        step by step (start-up retries, backoff). Meant for in-process tests: with real
        sockets in flight, "all tasks blocked" does not mean idle.
        """
        error: Exception | None = None
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._autojump_forever)
            try:
                yield
            except Exception as exc:
                # Re-raised below, outside the task group, so tests never see an ExceptionGroup.
                error = exc
            finally:
                tg.cancel_scope.cancel()
        if error is not None:
            raise error

    async def _autojump_forever(self) -> None:
        while True:
            await self._settle()
            if self._sleepers:
                deadline, _, event = heapq.heappop(self._sleepers)
                self._now = max(self._now, deadline)
                event.set()
            else:
                # Nothing to wake: yield for real so I/O (if any) can progress.
                await anyio.sleep(0.001)

    def __repr__(self) -> str:
        return f"<FakeClock now={self._now:.3f} sleepers={len(self._sleepers)}>"
