"""``LoopThread``: an asyncio event loop in a background thread, for servers under test."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import Any, ParamSpec, Self, TypeVar, final

import anyio.to_thread


__all__ = ["LoopThread"]

T = TypeVar("T")
P = ParamSpec("P")


@final
class LoopThread:
    """An asyncio event loop running in a daemon thread, for a server a test talks to.

    A server on its own loop is reached over real sockets by asyncio and trio tests alike,
    and a test that blocks its own loop cannot stall it. ``FakeGiosg`` runs this way;
    use it for a server of your own (an ASGI app under uvicorn, a
    :class:`MessageRouter`) next to it.

    Use it as a context manager: entering starts the thread, leaving stops the loop and
    joins the thread (tasks still running on the loop are dropped). Everything the loop
    runs must be submitted through the methods below, which are safe from any thread.

    Example:
        >>> with LoopThread() as loop:
        ...     loop.run(asyncio.sleep(0, result=42))
        42

    Args:
        name: The thread's name (shown in tracebacks and thread dumps).
        timeout: Seconds the blocking calls wait for a result before ``TimeoutError``.
    """

    def __init__(self, name: str = "giosg-loop-thread", *, timeout: float = 10.0) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._timeout = timeout

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=self._timeout)
        self._loop.close()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The loop (hand it to code that must schedule on it; do not run it)."""
        return self._loop

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Start ``coro`` on the loop; return a thread-safe future of its result."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the loop and wait for its result (blocking this thread)."""
        return self.submit(coro).result(timeout=self._timeout)

    async def arun(self, coro: Coroutine[Any, Any, T]) -> T:
        """:meth:`run` from async code (asyncio or trio), without blocking its loop."""
        future = self.submit(coro)
        return await anyio.to_thread.run_sync(future.result)

    def call(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Call ``fn(*args, **kwargs)`` on the loop's thread and return its result.

        For short synchronous work that must happen on the loop (most asyncio objects
        may only be touched there).
        """
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def call_here() -> None:
            try:
                future.set_result(fn(*args, **kwargs))
            except BaseException as exc:  # handed to the caller's thread
                future.set_exception(exc)

        self._loop.call_soon_threadsafe(call_here)
        return future.result(timeout=self._timeout)

    async def acall(self, fn: Callable[..., T], *args: Any) -> T:
        """:meth:`call` from async code, without blocking its loop."""
        return await anyio.to_thread.run_sync(lambda: self.call(fn, *args))

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()
