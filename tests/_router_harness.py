"""Run a :class:`MessageRouter` on a :class:`LoopThread`, for asyncio and trio tests alike.

Both backends then talk to it over real sockets, exactly as they will to ``FakeGiosg``.
Every router method must run on the router's loop: use :meth:`call` (sync, tiny
operations) or :meth:`acall` (from async tests, without blocking their loop), or
:meth:`submit` to run a whole coroutine (a chaos script) there.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import Any, ParamSpec, Self, TypeVar, final

from giosg_visitor.testing import LoopThread, MessageRouter


__all__ = ["RouterHarness"]

T = TypeVar("T")
P = ParamSpec("P")


@final
class RouterHarness:
    """Start ``router`` on a fresh :class:`LoopThread`.

    Args:
        router: The router to serve (not started yet).
    """

    def __init__(self, router: MessageRouter) -> None:
        self.router = router
        self._thread = LoopThread("router-loop")
        self._started = False

    def __enter__(self) -> Self:
        self._thread.__enter__()
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
            self._thread.__exit__(exc_type, exc, tb)

    @property
    def socket_url(self) -> str:
        """The router's ``socket_url``."""
        return self.router.socket_url

    def call(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn(*args, **kwargs)`` on the router's loop and return its result."""
        return self._thread.call(fn, *args, **kwargs)

    async def acall(self, fn: Callable[..., T], *args: Any) -> T:
        """:meth:`call` from an async test, without blocking the test's event loop."""
        return await self._thread.acall(fn, *args)

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Run ``coro`` on the router's loop; returns a thread-safe future."""
        return self._thread.submit(coro)

    def call_coro(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the router's loop and wait for its result (blocking)."""
        return self._thread.run(coro)

    async def await_coro(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the router's loop; wait for it without blocking the test's loop."""
        return await self._thread.arun(coro)
