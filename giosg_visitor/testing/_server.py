"""``FakeGiosg``: the fake Giosg served over real sockets on 127.0.0.1.

The HTTP app (uvicorn) and the message router run on their own asyncio loop in a
background thread, so asyncio tests and trio tests alike talk to it over real sockets.
Operator controls are async methods that hop to that loop and back.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self, TypeVar, final

import anyio
import httpx
import uvicorn

from .._clock import Clock
from ._fake import FakeState, RecordedRequest, build_app
from ._faults import Fault, FaultPlan


__all__ = ["FakeGiosg"]

T = TypeVar("T")


@final
class FakeGiosg:
    """A faithful local Giosg: visitor auth, the public API and (with the router) sockets.

    Use ``async with FakeGiosg() as giosg:`` on either backend, then point a visitor at
    ``giosg.base_url``. For virtual-time tests, skip the ``async with`` and pass
    ``giosg.transport()`` to an ``httpx.AsyncClient`` instead: the same app then runs
    in-process on the test's own loop and clock.

    Args:
        token_lifetime: Seconds each access token lives.
        clock: Time source for token expiry (a ``FakeClock`` for in-process use).
        unknown_secret: ``"reject"`` an unknown secret (400) or ``"mint"`` a new visitor.
        organizations: If given, the only organization ids that exist.
        host: Interface to bind (loopback only).
        port: Port to bind (0: a free one).
        data_file: If given, visitors are loaded from it at start and saved at stop (0600),
            so a second run of a demo meets the same visitors.
    """

    def __init__(
        self,
        *,
        token_lifetime: float = 1800.0,
        clock: Clock | None = None,
        unknown_secret: Literal["reject", "mint"] = "reject",
        organizations: set[str] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        data_file: str | os.PathLike[str] | None = None,
    ) -> None:
        self.state = FakeState(
            clock=clock,
            token_lifetime=token_lifetime,
            unknown_secret=unknown_secret,
            organizations=organizations,
        )
        self.app = build_app(self.state)
        self._host = host
        self._port = port
        self._data_file = Path(data_file) if data_file is not None else None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        # In-process (ASGI) use: any loopback origin will do, nothing listens on it.
        self._set_urls("http://127.0.0.1")

    # URLs ---------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """The API origin (``http://127.0.0.1:<port>`` once started)."""
        return self.state.base_url

    @property
    def socket_url(self) -> str:
        """The ``socket_url`` handed out by auth."""
        return self.state.socket_url

    def _set_urls(self, base_url: str) -> None:
        self.state.base_url = base_url
        self.state.socket_url = f"{base_url}/router"

    # In-process use -------------------------------------------------------------------------

    def transport(self) -> httpx.AsyncBaseTransport:
        """An in-process transport to the app (for virtual-time tests; no sockets)."""
        return httpx.ASGITransport(app=self.app)

    # Journal and faults -----------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request so far (a copy)."""
        return list(self.state.requests)

    @property
    def auth_requests(self) -> list[RecordedRequest]:
        """Requests to the auth endpoint."""
        return self.state.auth_requests

    @property
    def expired_token_requests(self) -> list[RecordedRequest]:
        """Requests that carried an expired token."""
        return self.state.expired_token_requests

    @property
    def faults(self) -> FaultPlan:
        """The fault plan (thread-safe)."""
        return self.state.faults

    def inject(self, **kwargs: Any) -> Fault:
        """Schedule a :class:`~giosg_visitor.testing.Fault` (keyword arguments as for it)."""
        return self.state.faults.add(Fault(**kwargs))

    @property
    def token_lifetime(self) -> float:
        """Seconds each new access token lives."""
        return self.state.token_lifetime

    @token_lifetime.setter
    def token_lifetime(self, value: float) -> None:
        self.state.token_lifetime = value

    # Controls ---------------------------------------------------------------------------------

    async def revoke_visitor(self, visitor_id: str) -> None:
        """Invalidate a visitor's secret (and its tokens)."""
        await self.call(lambda: self.state.revoke_visitor(visitor_id))

    async def expire_tokens(self) -> None:
        """Expire every token now."""
        await self.call(self.state.expire_tokens)

    async def call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the fake's own loop (or inline when running in-process)."""
        loop = self._loop
        if loop is None:
            return fn()

        async def run() -> T:
            return fn()

        future = asyncio.run_coroutine_threadsafe(run(), loop)
        return await anyio.to_thread.run_sync(future.result)

    # Lifecycle ---------------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        await anyio.to_thread.run_sync(self.start)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await anyio.to_thread.run_sync(self.stop)

    def start(self) -> None:
        """Start serving in a background thread (blocking until ready)."""
        if self._thread is not None:
            raise RuntimeError("FakeGiosg is already running")
        if self._data_file is not None and self._data_file.exists():
            self.state.restore(json.loads(self._data_file.read_text()))
        self._thread = threading.Thread(target=self._run, name="FakeGiosg", daemon=True)
        self._thread.start()
        self._ready.wait(timeout=30)
        if self._error is not None:
            raise RuntimeError("FakeGiosg failed to start") from self._error
        if not self._ready.is_set():
            raise RuntimeError("FakeGiosg did not start within 30 s")

    def stop(self) -> None:
        """Stop serving (blocking until the thread has ended)."""
        loop, stop, thread = self._loop, self._stop, self._thread
        if loop is not None and stop is not None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(stop.set)
        if thread is not None:
            thread.join(timeout=30)
        self._thread = None
        if self._data_file is not None:
            self._save_data(self._data_file)

    def _save_data(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(self.state.dump(), handle)
        os.replace(tmp, path)

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # reported to start(); the thread must not die silently
            self._error = exc
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self._host, self._port))
        port = sock.getsockname()[1]
        self._set_urls(f"http://{self._host}:{port}")
        config = uvicorn.Config(
            self.app,
            log_level="warning",
            lifespan="off",
            ws="none",
            access_log=False,
            timeout_graceful_shutdown=1,
        )
        server = uvicorn.Server(config)
        serving = asyncio.ensure_future(server.serve(sockets=[sock]))
        try:
            while not server.started:
                if serving.done():
                    serving.result()
                    raise RuntimeError("uvicorn stopped before it started")
                await asyncio.sleep(0.005)
            self._ready.set()
            await self._stop.wait()
        finally:
            server.should_exit = True
            with contextlib.suppress(Exception):
                await asyncio.wait_for(serving, timeout=5)
            self._loop = None

    def __repr__(self) -> str:
        running = "running" if self._thread is not None else "stopped"
        return f"<FakeGiosg {self.base_url} {running}>"
