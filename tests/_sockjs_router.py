"""A real SockJS server for the socket tests: our message router on sockjs-node.

``tests/sockjs_router/server.js`` is a small Giosg-style message router written on the
``sockjs`` npm package (the server library a SockJS deployment would run). It serves the
raw endpoint ``<socket_url>/websocket``, SockJS framing
``<socket_url>/<server>/<session>/websocket`` (heartbeated with WebSocket pings, as
sockjs-node does) and ``<socket_url>/info``, and speaks the visitor protocol (``sub``,
``__qr__`` acknowledgements and refusals with ``fail``, ``changed`` notifications).

Use the ``sockjs_router`` fixture (function scope: every test gets a fresh node process
with short heartbeats)::

    async def test_quiet_socket(sockjs_router: SockJSRouter) -> None:
        async with FakeGiosg(socket_url=sockjs_router.socket_url) as giosg:
            await sockjs_router.attach(giosg)  # subs checked by the fake, pushes relayed
            ...
            await sockjs_router.publish(channel, "added", {"id": "1"})
            await sockjs_router.refuse(tokens=[token])  # or refuse(next=1)
            await sockjs_router.serve_raw("404")  # no raw endpoint: "auto" moves on
            await sockjs_router.drop()  # close every connection (code 3000)
            sockjs_router.freeze()  # a silent server: sockets stay open, no frame...
            sockjs_router.thaw()  # ...until this
            stats = await sockjs_router.stats()  # connections by protocol, subs, refusals

For other settings use :func:`start_sockjs_router` (a context manager) directly.

The first use runs ``npm ci`` (``npm install`` without a lock file) into
``tests/sockjs_router`` when ``node_modules`` is missing, serialised by a lock file so that
parallel test runs do not fight. Without node or npm the tests skip, except in CI (the
``CI`` environment variable is set), where they fail.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import threading
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Final, Literal, NoReturn

import anyio.to_thread

from giosg_visitor.testing import FakeGiosg

from ._install import install_once, run_installer, stop_process, unavailable as skip_or_fail


__all__ = [
    "ROUTER_DIR",
    "SockJSRouter",
    "SockJSRouterUnavailable",
    "start_sockjs_router",
    "unavailable",
]

#: The node package of the router.
ROUTER_DIR: Final = Path(__file__).parent / "sockjs_router"
_INSTALL_TIMEOUT: Final = 600.0
_START_TIMEOUT: Final = 20.0
#: The fake's endpoint the router asks about each ``sub``.
AUTHORIZE_PATH: Final = "/_fake/router/authorize"


class SockJSRouterUnavailable(Exception):  # noqa: N818 - a reason to skip, not an error
    """node, npm or the ``sockjs`` package could not be had; the message says why."""


def unavailable(reason: str) -> NoReturn:
    """Skip the test for ``reason``; in CI, fail instead (the SockJS tests must run there)."""
    skip_or_fail(f"the SockJS router tests need Node.js and npm: {reason}")


def _installed() -> Path | None:
    """The installed ``sockjs`` package, or ``None``."""
    package = ROUTER_DIR / "node_modules" / "sockjs"
    return package if package.is_dir() else None


def ensure_installed() -> str:
    """Install the router's npm dependencies if missing; return the path of ``node``.

    Raises:
        SockJSRouterUnavailable: node or npm is missing, or the install failed.
    """
    node = shutil.which("node")
    if node is None:
        raise SockJSRouterUnavailable("node is not on PATH")
    if _installed():
        return node
    npm = shutil.which("npm")
    if npm is None:
        raise SockJSRouterUnavailable("npm is not on PATH")
    verb = "ci" if (ROUTER_DIR / "package-lock.json").exists() else "install"
    install_once(
        "sockjs",
        _installed,
        lambda: run_installer(
            [npm, verb, "--no-audit", "--no-fund", "--loglevel=error"],
            error=SockJSRouterUnavailable,
            timeout=_INSTALL_TIMEOUT,
            cwd=ROUTER_DIR,
            name=f"npm {verb}",
        ),
    )
    return node


class SockJSRouter:
    """A running router: its ``socket_url`` and the test controls.

    Attributes:
        socket_url: The URL to hand out as ``socket_url`` (``http://127.0.0.1:<port>/router``).
        control_url: The origin of the control API.
        heartbeat: The SockJS heartbeat delay, seconds.
    """

    def __init__(
        self, port: int, *, prefix: str, heartbeat: float, process: subprocess.Popen[bytes]
    ) -> None:
        self._process = process
        self.control_url = f"http://127.0.0.1:{port}"
        self.socket_url = f"{self.control_url}{prefix}"
        self.heartbeat = heartbeat

    def __repr__(self) -> str:
        return f"<SockJSRouter {self.socket_url}>"

    def control_sync(self, path: str, body: Mapping[str, Any] | None = None) -> Any:
        """POST ``body`` (or GET when ``None``) to ``/_control/<path>``; the JSON answer."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"{self.control_url}/_control/{path}",
            data=data,
            method="GET" if body is None else "POST",
            headers={"content-type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    async def control(self, path: str, body: Mapping[str, Any] | None = None) -> Any:
        """:meth:`control_sync` in a worker thread (does not block the test's loop)."""
        return await anyio.to_thread.run_sync(self.control_sync, path, body)

    def publish_sync(
        self,
        channel: str,
        action: str,
        resource: Mapping[str, Any] | None,
        resource_id: str | None = None,
    ) -> int:
        """Send a ``changed`` notification to the channel's subscribers; how many got it."""
        answer = self.control_sync(
            "publish",
            {
                "channel": channel,
                "action": action,
                "resource": dict(resource) if resource is not None else None,
                "resource_id": resource_id,
            },
        )
        return int(answer["delivered"])

    async def publish(
        self,
        channel: str,
        action: str,
        resource: Mapping[str, Any] | None,
        resource_id: str | None = None,
    ) -> int:
        """:meth:`publish_sync` without blocking the test's loop."""
        return await anyio.to_thread.run_sync(
            self.publish_sync, channel, action, resource, resource_id
        )

    async def refuse(
        self, *, tokens: list[str] | None = None, next: int | None = None, clear: bool = False
    ) -> None:
        """Refuse ``sub`` for ``tokens``, or the ``next`` N subs; ``clear`` forgets both first."""
        body: dict[str, Any] = {"clear": clear, "tokens": tokens or []}
        if next is not None:
            body["next"] = next
        await self.control("refuse", body)

    async def serve_raw(self, mode: Literal["serve", "404", "200", "close"]) -> None:
        """How the raw endpoint ``<socket_url>/websocket`` answers from now on.

        ``"serve"`` (default), ``"404"`` (a deployment without it), ``"200"`` (a 200
        without upgrade) or ``"close"`` (the WebSocket opens and is closed at once).
        """
        await self.control("config", {"raw": mode})

    async def drop(self, *, code: int = 3000, reason: str = "dropped by the test") -> int:
        """Close every connection with ``code`` (1000 or 3000-4999); how many there were."""
        answer = await self.control("drop", {"code": code, "reason": reason})
        return int(answer["dropped"])

    def freeze(self) -> None:
        """Stop the node process (SIGSTOP): sockets stay open, nothing is sent or read."""
        self._process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        """Let a frozen node process run again (SIGCONT)."""
        self._process.send_signal(signal.SIGCONT)

    async def stats(self) -> dict[str, Any]:
        """The router's counters (connections by protocol, subs, refusals, deliveries)."""
        answer: dict[str, Any] = await self.control("stats")
        return answer

    async def attach(self, giosg: FakeGiosg) -> None:
        """Let a running ``FakeGiosg`` check every ``sub`` and relay its notifications here.

        The fake must have been made with ``FakeGiosg(socket_url=router.socket_url)`` so
        that its auth hands out this router.
        """
        await self.control("config", {"authorize_url": f"{giosg.base_url}{AUTHORIZE_PATH}"})
        giosg.add_publisher(self.publish_sync)


@contextlib.contextmanager
def start_sockjs_router(
    *, heartbeat: float = 0.25, prefix: str = "/router"
) -> Iterator[SockJSRouter]:
    """Start the router on a free 127.0.0.1 port; stop it on exit.

    Args:
        heartbeat: sockjs ``heartbeat_delay`` in seconds (sockjs-node pings framed
            WebSocket sessions this often; the raw endpoint is never heartbeated).
        prefix: The URL prefix (``socket_url`` path).

    Raises:
        SockJSRouterUnavailable: node/npm missing, the install failed or it did not start.
    """
    node = ensure_installed()
    env = {
        **os.environ,
        "ROUTER_PORT": "0",
        "ROUTER_PREFIX": prefix,
        "ROUTER_HEARTBEAT_MS": str(max(1, round(heartbeat * 1000))),
    }
    process = subprocess.Popen(
        [node, str(ROUTER_DIR / "server.js")],
        cwd=ROUTER_DIR,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        port = _read_port(process)
        # Keep draining stderr so that a chatty node never blocks on a full pipe.
        threading.Thread(target=_drain, args=(process,), daemon=True).start()
        yield SockJSRouter(port, prefix=prefix, heartbeat=heartbeat, process=process)
    finally:
        stop_process(process)
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()


def _read_port(process: subprocess.Popen[bytes]) -> int:
    assert process.stdout is not None
    result: list[int] = []

    def read() -> None:
        assert process.stdout is not None
        line = process.stdout.readline()
        with contextlib.suppress(ValueError, KeyError, TypeError):
            result.append(int(json.loads(line)["port"]))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(_START_TIMEOUT)
    if not result:
        process.kill()
        _, err = process.communicate(timeout=5)
        tail = err.decode(errors="replace").strip().splitlines()[-5:]
        raise SockJSRouterUnavailable(f"the router did not start: {' | '.join(tail)}")
    return result[0]


def _drain(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ValueError, OSError):
        for stream in (process.stderr,):
            if stream is not None:
                for _ in stream:
                    pass
