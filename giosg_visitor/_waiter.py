"""A one-shot wake-up for one parked task, at a fraction of an ``anyio.Event``'s memory.

Every idle subscription parks its consumer until the read loop brings an event, and
every pooled visitor's host waits until the pool closes it: thousands of waiters that
wait for hours. On asyncio an ``anyio.Event`` wraps an ``asyncio.Event``, whose empty
waiter deque alone is 624 bytes, and a future per wait on top. A :class:`Waiter` holds
one future (asyncio) or the parked task (trio), and only while a task waits.

Cancellation behaves as for any checkpoint: a cancelled ``wait()`` raises the backend's
cancellation and leaves the waiter usable; ``set()`` after that wakes nobody.
"""

from __future__ import annotations

from typing import Any, final

import anyio.lowlevel
import sniffio


__all__ = ["Waiter"]


@final
class Waiter:
    """Set once; :meth:`wait` returns once it is set (at once if it already is).

    One task at a time may wait (a second concurrent :meth:`wait` raises
    ``RuntimeError``): it is the wake-up of one consumer, not a broadcast.
    """

    __slots__ = ("_is_set", "_parked")

    def __init__(self) -> None:
        self._is_set = False
        # The waiting task's future (asyncio) or the task itself (trio), while it waits.
        self._parked: Any = None

    def __repr__(self) -> str:
        return f"<Waiter {'set' if self._is_set else 'unset'}>"

    def is_set(self) -> bool:
        """Whether :meth:`set` was called."""
        return self._is_set

    def set(self) -> None:
        """Wake the waiting task (if any); later waits return at once. Idempotent."""
        if self._is_set:
            return
        self._is_set = True
        parked, self._parked = self._parked, None
        if parked is None:
            return
        if hasattr(parked, "set_result"):
            if not parked.done():
                parked.set_result(None)
        else:
            import trio

            trio.lowlevel.reschedule(parked)

    async def wait(self) -> None:
        """Return once set: a checkpoint when it already is, else park until it is."""
        if self._is_set:
            await anyio.lowlevel.checkpoint()
            return
        if self._parked is not None:
            raise RuntimeError("another task is already waiting on this Waiter")
        if sniffio.current_async_library() == "trio":
            await self._wait_trio()
        else:
            await self._wait_asyncio()

    async def _wait_asyncio(self) -> None:
        import asyncio

        future = self._parked = asyncio.get_running_loop().create_future()
        try:
            await future
        finally:
            if self._parked is future:
                self._parked = None

    async def _wait_trio(self) -> None:
        import trio

        self._parked = trio.lowlevel.current_task()

        def abort(_: Any) -> trio.lowlevel.Abort:
            self._parked = None
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)
