"""Time sources. The SDK never reads the clock directly: it asks a :class:`Clock`.

Live expiry bookkeeping uses ``monotonic()`` (immune to wall-clock jumps); ``time()`` (UNIX
seconds) is used only for what is persisted and read back by another process.
Tests pass ``giosg_visitor.testing.FakeClock`` to run hours of renewals in milliseconds.
"""

from __future__ import annotations

import time
from typing import Protocol, runtime_checkable

import anyio


__all__ = ["Clock", "SystemClock", "blocking_sleep"]


@runtime_checkable
class Clock(Protocol):
    """What the SDK needs to know about time."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes backwards."""
        ...

    def time(self) -> float:
        """Wall-clock UNIX time in seconds."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Sleep for ``seconds`` on this clock (cancellable)."""
        ...


class SystemClock:
    """The real clock: ``time.monotonic``, ``time.time`` and ``anyio.sleep``."""

    def monotonic(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(max(0.0, seconds))

    def blocking_sleep(self, seconds: float) -> None:
        """Block the calling thread for ``seconds`` (for code without an event loop)."""
        time.sleep(max(0.0, seconds))

    def __repr__(self) -> str:
        return "SystemClock()"


def blocking_sleep(clock: Clock, seconds: float) -> None:
    """Wait ``seconds`` on ``clock`` from a thread without an event loop.

    Uses the clock's own ``blocking_sleep`` (``SystemClock`` and ``FakeClock`` have one);
    a clock of the user's own that only knows ``await sleep`` gets ``time.sleep``. The
    method is not part of :class:`Clock`, so clocks written before it stay valid.
    """
    sleep = getattr(clock, "blocking_sleep", None)
    if callable(sleep):
        sleep(seconds)
    else:
        time.sleep(max(0.0, seconds))
