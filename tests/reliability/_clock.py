"""A virtual clock that is fast on asyncio too.

``giosg_visitor.testing.FakeClock`` waits for "every task blocked" with
``anyio.wait_all_tasks_blocked()``, which on asyncio sleeps 0.1 s of *real* time whenever
a task is still runnable: every wake-up that wakes another task costs 0.1 s, so a test of
ten token lifetimes takes 20 s on asyncio and 0.2 s on trio. :func:`virtual_clock` is the
same clock (``FakeClock(settle=settle)``) with a settle step that yields to the asyncio
loop until every other task waits on an unfinished future, without sleeping; it peeks at
asyncio's private ``Task._fut_waiter``, which is why it lives here and not in the package.
On trio it uses trio's exact ``wait_all_tasks_blocked``.

Meant for in-process tests only (no real sockets in flight).
"""

from __future__ import annotations

import asyncio

import anyio
import sniffio

from giosg_visitor.testing import FakeClock


__all__ = ["settle", "virtual_clock"]


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


def virtual_clock() -> FakeClock:
    """A ``FakeClock`` that settles with :func:`settle` (same API and wake-up order)."""
    return FakeClock(settle=settle)
