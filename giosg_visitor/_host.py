"""Run a coroutine as a root task of the running event loop (asyncio or trio).

These are the deliberate exceptions to "background work lives in a task group owned by
an ``async with``":

* a notebook runs every cell as its own task, so a visitor started in one cell and
  closed in another needs a host task that outlives the cell. The host task owns the
  visitor's ``async with`` (so its task groups are entered and exited in one task) and
  never raises: it reports its outcome through the caller's events;
* the event loop's shared timer task (:func:`giosg_visitor._timers.loop_timers`) serves
  every connection and visitor of the loop, so no one of them can own it. It runs only
  while a timer is pending and never raises either.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import sniffio


__all__ = ["spawn_root_task"]

# Strong references: asyncio keeps only weak references to tasks.
_asyncio_tasks: set[Any] = set()


def spawn_root_task(fn: Callable[[], Awaitable[None]]) -> None:
    """Start ``fn()`` as a root task of the running loop. ``fn`` must not raise."""
    library = sniffio.current_async_library()
    if library == "asyncio":
        import asyncio

        async def run() -> None:
            await fn()

        # Named as trio names it: after the function.
        name = f"{getattr(fn, '__module__', '')}.{getattr(fn, '__qualname__', repr(fn))}"
        task = asyncio.get_running_loop().create_task(run(), name=name)
        _asyncio_tasks.add(task)
        task.add_done_callback(_asyncio_tasks.discard)
    elif library == "trio":
        import trio

        trio.lowlevel.spawn_system_task(fn)
    else:  # pragma: no cover - anyio supports only these two
        raise RuntimeError(f"unsupported async library {library!r}")
