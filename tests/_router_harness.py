"""Run a :class:`MessageRouter` on its own asyncio loop in a background thread.

Both asyncio and trio tests then talk to it over real sockets, exactly as they will to
``FakeGiosg``. Every router method must run on the router's loop: use :meth:`call` (sync,
tiny operations) or :meth:`acall` (from async tests, without blocking their loop), or
:meth:`submit` to run a whole coroutine (a chaos script) there.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import Any, ParamSpec, Self, TypeVar, final

import anyio.to_thread

from giosg_visitor.testing._router import MessageRouter


__all__ = ["RouterHarness"]

T = TypeVar("T")
P = ParamSpec("P")


@final
class RouterHarness:
    """Start ``router`` on a fresh asyncio loop in a daemon thread.

    Args:
        router: The router to serve (not started yet).
    """

    def __init__(self, router: MessageRouter) -> None:
        self.router = router
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="router-loop", daemon=True)
        self._started = False

    def __enter__(self) -> Self:
        self._thread.start()
        self.call_coro(self.router.start(host="127.0.0.1"))
        self._started = True
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if self._started:
                self.call_coro(self.router.stop())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)
            self._loop.close()

    @property
    def socket_url(self) -> str:
        """The router's ``socket_url``."""
        return self.router.socket_url

    def call(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn(*args, **kwargs)`` on the router's loop and return its result."""
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            try:
                future.set_result(fn(*args, **kwargs))
            except BaseException as exc:  # handed to the caller's thread
                future.set_exception(exc)

        self._loop.call_soon_threadsafe(run)
        return future.result(timeout=10)

    async def acall(self, fn: Callable[..., T], *args: Any) -> T:
        """:meth:`call` from an async test, without blocking the test's event loop."""
        return await anyio.to_thread.run_sync(lambda: self.call(fn, *args))

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Run ``coro`` on the router's loop; returns a thread-safe future."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    def call_coro(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the router's loop and wait for its result (blocking)."""
        return self.submit(coro).result(timeout=10)

    async def await_coro(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the router's loop; wait for it without blocking the test's loop."""
        future = self.submit(coro)
        return await anyio.to_thread.run_sync(future.result)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()
