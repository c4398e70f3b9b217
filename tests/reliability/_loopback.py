"""An in-process message router for virtual-time tests of the real-time path.

:class:`LoopbackRouter` is a ``SocketTransport`` for ``RealtimeConnection``: its sockets
live in memory, it speaks the router's messages (``sub`` checked against the in-process
``FakeGiosg``'s tokens at the virtual moment it arrives, ``unsub``, ``changed``
notifications for everything the fake publishes) and :meth:`LoopbackRouter.drop_all`
kills every socket (an abnormal close, 1006). No real I/O, so a ``FakeClock`` can run
hours of reconnects, renewals and messages in seconds. The wire-level behaviour is
covered over real sockets by ``MessageRouter`` tests; this one is for long runs.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any, final

import anyio
import anyio.lowlevel
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from giosg_visitor.errors import ConnectionClosedError
from giosg_visitor.testing import FakeGiosg


__all__ = ["LoopbackRouter"]

#: Frames a socket may have queued (the client reads them at once in these tests).
_BUFFER = 10_000


@final
class _Socket:
    def __init__(self, router: LoopbackRouter) -> None:
        self._router = router
        self.subscriptions: set[str] = set()
        self._send: MemoryObjectSendStream[str | None]
        self._receive: MemoryObjectReceiveStream[str | None]
        self._send, self._receive = anyio.create_memory_object_stream[str | None](_BUFFER)
        self.dead = False

    def deliver(self, text: str | None) -> None:
        if not self.dead:
            self._send.send_nowait(text)

    def kill(self) -> None:
        self.deliver(None)
        self.dead = True

    async def send(self, text: str) -> None:
        await anyio.lowlevel.checkpoint()
        if self.dead:
            raise ConnectionClosedError("the socket was killed", code=1006)
        self._router.handle(self, json.loads(text))

    async def recv(self) -> str:
        if self.dead and self._receive.statistics().current_buffer_used == 0:
            raise ConnectionClosedError("the socket was killed", code=1006)
        text = await self._receive.receive()
        if text is None:
            raise ConnectionClosedError("the socket was killed", code=1006)
        return text

    async def ping(self) -> None:
        await anyio.lowlevel.checkpoint()

    async def close(self, code: int = 1000, reason: str = "") -> None:
        await anyio.lowlevel.checkpoint()
        self.dead = True

    async def abort(self) -> None:
        await anyio.lowlevel.checkpoint()
        self.dead = True

    def release(self) -> None:
        self.dead = True
        self._send.close()
        self._receive.close()


@final
class LoopbackRouter:
    """In-memory sockets speaking the router's messages for an in-process ``FakeGiosg``."""

    def __init__(self, giosg: FakeGiosg) -> None:
        self._giosg = giosg
        self.sockets: set[_Socket] = set()
        #: Connections opened, ``sub`` messages refused because the token had expired.
        self.connects = 0
        self.expired_subs = 0
        giosg.state.publishers.append(self._publish)

    @asynccontextmanager
    async def connect(self, url: str, **options: Any) -> AsyncIterator[_Socket]:
        """Open a socket (the ``SocketTransport`` protocol)."""
        await anyio.lowlevel.checkpoint()
        socket = _Socket(self)
        self.sockets.add(socket)
        self.connects += 1
        try:
            yield socket
        finally:
            self.sockets.discard(socket)
            socket.release()

    def drop_all(self) -> int:
        """Kill every socket (the client sees an abnormal close); how many there were."""
        count = 0
        for socket in list(self.sockets):
            if not socket.dead:
                socket.kill()
                count += 1
        return count

    def handle(self, socket: _Socket, message: Any) -> None:
        """Answer one client message."""
        method, args, kwargs = message
        query = kwargs.get("query")
        if method == "sub":
            channel, token = args[0], args[1]
            verdict = self._giosg._authorize_channel(token, channel)
            if verdict is True:
                socket.subscriptions.add(channel)
                socket.deliver(json.dumps(["__qr__", [[]], {"query": query}]))
            else:
                if verdict == "token expired":
                    self.expired_subs += 1
                socket.deliver(json.dumps(["__qr__", [verdict], {"query": query, "fail": True}]))
        elif method in ("unsub", "uns"):
            socket.subscriptions.discard(args[0])
            socket.deliver(json.dumps(["__qr__", [[]], {"query": query}]))
        elif query is not None:
            socket.deliver(
                json.dumps(["__qr__", ["unknown method"], {"query": query, "fail": True}])
            )

    def _publish(
        self,
        channel: str,
        action: str,
        resource: Mapping[str, Any] | None,
        resource_id: str | None,
    ) -> None:
        if resource_id is None and resource is not None and resource.get("id") is not None:
            resource_id = str(resource["id"])
        body = {
            "action": action,
            "resourceId": resource_id,
            "resource_id": resource_id,
            "resource": None if resource is None else dict(resource),
            "channel": channel,
        }
        text = json.dumps(["changed", [channel, body]])
        for socket in self.sockets:
            if channel in socket.subscriptions:
                socket.deliver(text)
