"""Many timers, one task: the keepalive and renewal schedules of every visitor in a loop.

Every connected visitor pings its socket every few seconds and renews its token before
it expires. A task per schedule costs memory (a task, its coroutine frame and the
cancel scopes it sleeps in) for work that takes microseconds a few times a minute.
:class:`Timers` keeps all of those deadlines in one heap and runs them from one task,
on the injected :class:`~giosg_visitor._clock.Clock` (so tests drive it with a fake
clock). :func:`loop_timers` gives every connection and visitor of an event loop the
same one (per clock), the way an event loop keeps one heap of timer callbacks.

Its task is a root task of the loop (like the host of a visitor started with
``Visitor.start()``), running only while a timer is pending: it starts with the first
timer and ends when none is left, so no task lingers after the last visitor closed.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Self, final

import anyio
import anyio.lowlevel

from giosg_visitor._clock import Clock, SystemClock
from giosg_visitor._host import spawn_root_task


__all__ = ["Timer", "Timers", "loop_timers"]

logger = logging.getLogger("giosg_visitor")

#: A callback: plain, or a coroutine function whose work never waits on the network
#: (it runs in the shared task, ahead of every other due timer).
Callback = Callable[[], Awaitable[None] | None]


@final
class Timer:
    """One scheduled call; :meth:`cancel` it when it is no longer wanted."""

    __slots__ = ("_callback", "_owner", "when")

    def __init__(self, when: float, callback: Callback | None, owner: Timers) -> None:
        #: When it is due, on the clock of the :class:`Timers` that holds it.
        self.when = when
        self._callback = callback
        self._owner = owner

    @property
    def cancelled(self) -> bool:
        """Whether it was cancelled (or has run)."""
        return self._callback is None

    def cancel(self) -> None:
        """Do not run it. Safe to call twice, and after it ran."""
        if self._callback is not None:
            self._callback = None
            self._owner._cancelled()

    def __repr__(self) -> str:
        return f"<Timer when={self.when:.3f}{' cancelled' if self.cancelled else ''}>"


@final
class Timers(anyio.AsyncContextManagerMixin):
    """Runs scheduled calls from one task: ``async with Timers(clock)``, or :meth:`run`.

    Callbacks run in the order of their deadlines, each once, never before its deadline
    on ``clock``. A callback that raises is logged and does not stop the others. Timers
    scheduled before the block is entered wait for it; those still pending when it is
    left are dropped.
    """

    __slots__ = (
        "_autostart",
        "_clock",
        "_count",
        "_dead",
        "_heap",
        "_running",
        "_sleep_until",
        "_wake",
    )

    def __init__(self, clock: Clock, *, autostart: bool = False) -> None:
        self._clock = clock
        # Whether call_at() starts a root task to run the timers (see loop_timers()).
        self._autostart = autostart
        self._running = False
        self._heap: list[tuple[float, int, Timer]] = []
        # Ties keep scheduling order (heap entries never compare two Timers).
        self._count = itertools.count()
        self._wake: anyio.CancelScope | None = None
        self._sleep_until = math.inf
        # Cancelled timers still in the heap (dropped when due, or all at once when
        # they pile up: visitors that come and go cancel timers due far ahead).
        self._dead = 0

    def __len__(self) -> int:
        """Pending timers, cancelled ones not yet dropped included."""
        return len(self._heap)

    def __repr__(self) -> str:
        return f"<Timers pending={len(self._heap)}>"

    def call_at(self, when: float, callback: Callback) -> Timer:
        """Run ``callback()`` once the clock reads ``when`` (or later)."""
        timer = Timer(when, callback, self)
        heapq.heappush(self._heap, (when, next(self._count), timer))
        if when < self._sleep_until and self._wake is not None:
            # The task sleeps past this deadline: wake it to sleep less.
            self._wake.cancel()
        elif self._autostart and not self._running:
            self._running = True
            spawn_root_task(self._run_until_idle)
        return timer

    def call_later(self, delay: float, callback: Callback) -> Timer:
        """Run ``callback()`` ``delay`` seconds from now on the clock."""
        return self.call_at(self._clock.monotonic() + max(0.0, delay), callback)

    def _cancelled(self) -> None:
        self._dead += 1
        if self._dead == len(self._heap) and self._wake is not None:
            # Nothing left to run: let a root task end now, not at a dead deadline.
            self._wake.cancel()
        if self._dead > 64 and self._dead * 2 > len(self._heap):
            self._heap = [entry for entry in self._heap if not entry[2].cancelled]
            heapq.heapify(self._heap)
            self._dead = 0

    @asynccontextmanager
    async def __asynccontextmanager__(self) -> AsyncIterator[Self]:
        async with anyio.create_task_group() as task_group:
            self._running = True
            task_group.start_soon(self.run, name="giosg_visitor timers")
            try:
                yield self
            finally:
                task_group.cancel_scope.cancel()
        self._heap.clear()

    async def _run_until_idle(self) -> None:
        # A root task: nothing may escape it (trio would end the whole run).
        try:
            await self.run(until_idle=True)
        except Exception:
            logger.exception("the timer task failed; pending timers are dropped")
            self._heap.clear()
            self._dead = 0
        finally:
            self._running = False

    async def run(self, *, until_idle: bool = False) -> None:
        """Run due callbacks until cancelled (or, ``until_idle``, until none is pending)."""
        clock = self._clock
        while True:
            now = clock.monotonic()
            # Not bound once: _cancelled() may replace the list.
            while self._heap and self._heap[0][0] <= now:
                timer = heapq.heappop(self._heap)[2]
                callback, timer._callback = timer._callback, None
                if callback is None:
                    self._dead -= 1
                    continue
                try:
                    result = callback()
                    if result is not None:
                        await result
                except Exception:
                    logger.exception("a scheduled callback failed")
            if until_idle and len(self._heap) == self._dead:
                self._heap.clear()
                self._dead = 0
                return
            until = self._heap[0][0] if self._heap else math.inf
            self._sleep_until = until
            with anyio.CancelScope() as self._wake:
                if math.isinf(until):
                    await anyio.sleep_forever()
                elif until > clock.monotonic():
                    await clock.sleep(until - clock.monotonic())
            self._wake = None
            self._sleep_until = math.inf


#: Per event loop: the shared timers of each clock in use.
_LOOP_TIMERS: anyio.lowlevel.RunVar[dict[object, Timers]] = anyio.lowlevel.RunVar(
    "giosg_visitor_timers"
)


def loop_timers(clock: Clock) -> Timers:
    """The running event loop's shared :class:`Timers` on ``clock``.

    Every :class:`SystemClock` is the same clock; any other clock gets timers of its own
    (kept, with the clock, as long as the loop runs).
    """
    try:
        registry = _LOOP_TIMERS.get()
    except LookupError:
        registry = {}
        _LOOP_TIMERS.set(registry)
    key: object = SystemClock if type(clock) is SystemClock else id(clock)
    timers = registry.get(key)
    if timers is None:
        timers = registry[key] = Timers(clock, autostart=True)
    return timers
