"""``MessageRouter``: a fake Giosg message router over real WebSockets, with fault injection.

It speaks the visitor socket protocol (``sub``, ``__qr__`` acks, ``fail`` refusals,
``changed`` notifications) as a real websockets server
(``websockets.asyncio.server``) and runs on the asyncio loop of whoever starts it. The
``FakeGiosg`` server runs it on its own loop in a background thread, so that asyncio and
trio clients alike connect over real sockets.

Endpoints, under ``prefix`` (default ``/router``; ``socket_url`` is
``http://127.0.0.1:<port>/router``):

* ``<prefix>/websocket``: raw WebSocket, one JSON message per text frame;
* ``<prefix>/<3 digits>/<session>/websocket``: SockJS framing (``o`` first, ``h`` every
  ``heartbeat_interval``, ``a[...]`` messages, ``c[code, "reason"]`` on close);
* ``GET <prefix>/info``: the SockJS info JSON.

Messages it understands (``[method, args, kwargs]``):

* ``["sub", [channel, token], {"query": n}]``: the token is checked at that moment
  (``token_expiry`` and ``now``, then ``authorize``); answered with
  ``["__qr__", [[]], {"query": n}]`` or ``["__qr__", [reason], {"query": n, "fail": true}]``.
  A second ``sub`` for a channel replaces the token held for it (re-authorisation).
* ``["unsub", [channel], {"query": n}]`` and ``["uns", ...]``: answered with ``__qr__``.

Notifications (:meth:`MessageRouter.push`) use the draft frame shape with both key
spellings: ``["changed", [channel, {"action", "resourceId", "resource_id", "resource",
"channel"}]]``.

Every public method must be called on the router's own event loop (from its thread).
Controls: :meth:`~MessageRouter.drop_all` (``"reset"``: TCP reset, ``"close"``: close
frame with a code, ``"blackhole"``: stop reading, writing and answering pings while
keeping TCP open), :meth:`~MessageRouter.refuse_handshakes`,
:attr:`~MessageRouter.strict_expiry` (close with 4401 when a subscription's token
expires), :meth:`~MessageRouter.hold_acks` / :meth:`~MessageRouter.release_acks`, and
:meth:`~MessageRouter.hostile` (send any frame, even invalid UTF-8 or binary). Everything
clients send is recorded in :attr:`~MessageRouter.frames_received`.

Extending it: subclass and override :meth:`~MessageRouter.handle_message` (called for
every parsed client message; call ``super()`` for the default behaviour), or
:meth:`~MessageRouter.check_subscription` (decide a ``sub``). Send from an override with
:meth:`~MessageRouter.reply` (one client) or :meth:`~MessageRouter.push` (every
subscriber). Per-connection state lives on :class:`RouterClient`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import re
import socket
import struct
import time
from collections.abc import Callable, Mapping
from typing import Any, Literal, final

import attrs
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from giosg_visitor._redact import RedactingFilter
from giosg_visitor.realtime._transport import FrameLogFilter

from ._kinds import DropMode


__all__ = ["MessageRouter", "ReceivedFrame", "RouterClient"]

logger = logging.getLogger("giosg_visitor.testing.router")
# The fake sees tokens in every ``sub``: keep them out of its (websockets) DEBUG logs too.
logger.addFilter(FrameLogFilter(show_data=True))
logger.addFilter(RedactingFilter())

#: How often strict expiry and black-hole lingering are checked, seconds.
_MAINTENANCE_INTERVAL = 0.05


@final
@attrs.frozen(kw_only=True)
class ReceivedFrame:
    """One message a client sent (a SockJS frame with N messages gives N records).

    Attributes:
        connection_id: Which connection sent it.
        method: ``"sub"``, ``"unsub"``, ``"uns"``, another string, or ``None`` when it
            could not be parsed.
        channel: The channel argument, if any.
        query: The query id, if any.
        token: The token of a ``sub`` (hidden from repr).
        token_valid: For a ``sub``: whether the token was unexpired at that moment.
        allowed: For a ``sub``: whether it was acknowledged.
        at: ``now()`` when it arrived.
    """

    connection_id: int
    method: str | None
    channel: str | None = None
    query: int | None = None
    token: str | None = attrs.field(default=None, repr=False)
    token_valid: bool | None = None
    allowed: bool | None = None
    at: float = 0.0


@final
@attrs.define(kw_only=True, eq=False)
class RouterClient:
    """The router's state for one connected client.

    Attributes:
        id: Connection number, from 1.
        ws: The websockets connection.
        framing: ``"raw"`` or ``"sockjs"``.
        subscriptions: Channel -> the token of its latest accepted ``sub``.
        blackholed: Reading and writing stopped (see :meth:`MessageRouter.drop_all`).
        closing: A close or reset was requested; nothing more is sent.
    """

    id: int
    ws: ServerConnection
    framing: Literal["raw", "sockjs"]
    subscriptions: dict[str, str] = attrs.field(factory=dict, repr=False)
    blackholed: bool = False
    blackholed_at: float = 0.0
    closing: bool = False
    outbox: asyncio.Queue[tuple[str, Any]] = attrs.field(factory=asyncio.Queue, repr=False)
    held: list[str] = attrs.field(factory=list, repr=False)

    @property
    def is_live(self) -> bool:
        """Whether frames sent to this client can arrive."""
        return not (self.blackholed or self.closing)


class MessageRouter:
    """A fake Giosg message router (see the module docstring).

    Args:
        authorize: ``(token, channel) -> True`` to allow a ``sub``; ``False`` or a reason
            string to refuse it. Allows everything by default.
        now: The time base of ``token_expiry`` (``time.time`` by default).
        token_expiry: ``token -> expiry time`` (in ``now()``'s time base), or ``None``
            when unknown or never expiring. Expired tokens are always refused at ``sub``.
        strict_expiry: Close a connection with 4401 as soon as the token held for one of
            its subscriptions expires.
        heartbeat_interval: Seconds between SockJS ``h`` frames.
        blackhole_linger: Seconds a black-holed connection is kept before it is aborted.
        prefix: The URL path prefix.
        max_size: Largest message accepted from a client.
    """

    def __init__(
        self,
        *,
        authorize: Callable[[str, str], bool | str] | None = None,
        now: Callable[[], float] = time.time,
        token_expiry: Callable[[str], float | None] | None = None,
        strict_expiry: bool = False,
        heartbeat_interval: float = 25.0,
        blackhole_linger: float = 30.0,
        prefix: str = "/router",
        max_size: int = 2**20,
    ) -> None:
        if not prefix.startswith("/") or prefix.endswith("/"):
            raise ValueError("prefix must start with '/' and not end with '/'")
        self.authorize = authorize if authorize is not None else _allow_all
        self.now = now
        self.token_expiry = token_expiry if token_expiry is not None else _never
        self.strict_expiry = strict_expiry
        self.heartbeat_interval = heartbeat_interval
        self.blackhole_linger = blackhole_linger
        self.prefix = prefix
        self.max_size = max_size
        #: Every message clients sent, in arrival order.
        self.frames_received: list[ReceivedFrame] = []
        #: Successful WebSocket handshakes.
        self.handshakes = 0
        #: Handshakes refused by :meth:`refuse_handshakes`.
        self.refused_handshakes = 0
        #: Connections closed with 4401 by strict expiry.
        self.expiry_closes = 0
        #: Client frames that could not be parsed.
        self.malformed_frames = 0
        self.acks_held = False
        self._clients: dict[int, RouterClient] = {}
        self._ids = itertools.count(1)
        self._server: Server | None = None
        self._host = "127.0.0.1"
        self._port = 0
        self._refuse: tuple[int, float | None] | None = None
        self._refuse_left: int | None = None
        self._raw_path = f"{prefix}/websocket"
        self._sockjs_path = re.compile(re.escape(prefix) + r"/\d{3}/[^/.]+/websocket")

    def __repr__(self) -> str:
        return f"<MessageRouter {self.socket_url} clients={len(self._clients)}>"

    # Life cycle.

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Start serving on ``host:port`` (0: a free port) on the running asyncio loop."""
        if self._server is not None:
            raise RuntimeError("the router is already started")
        self._server = await serve(
            self._handle_connection,
            host,
            port,
            process_request=self._process_request,
            ping_interval=None,  # black-holing must be able to stop all traffic
            compression=None,
            close_timeout=1,
            max_size=self.max_size,
            logger=logger,
        )
        self._host = host
        self._port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Drop every connection and stop listening."""
        server, self._server = self._server, None
        if server is None:
            return
        for client in list(self._clients.values()):
            _reset(client.ws)
        server.close(close_connections=False)
        await server.wait_closed()

    @property
    def socket_url(self) -> str:
        """The ``socket_url`` to hand to clients: ``http://<host>:<port><prefix>``."""
        return f"http://{self._host}:{self._port}{self.prefix}"

    @property
    def port(self) -> int:
        """The listening port (0 before :meth:`start`)."""
        return self._port

    # Inspection.

    @property
    def clients(self) -> list[RouterClient]:
        """The connected clients."""
        return list(self._clients.values())

    @property
    def subs(self) -> list[ReceivedFrame]:
        """The ``sub`` messages received, in order."""
        return [frame for frame in self.frames_received if frame.method == "sub"]

    @property
    def expired_token_subs(self) -> list[ReceivedFrame]:
        """The ``sub`` messages that carried an expired token."""
        return [frame for frame in self.subs if frame.token_valid is False]

    def subscriber_count(self, channel: str) -> int:
        """How many live connections are subscribed to ``channel``."""
        return sum(
            1
            for client in self._clients.values()
            if client.is_live and channel in client.subscriptions
        )

    # Sending.

    def push(
        self,
        channel: str,
        action: str,
        resource: Mapping[str, Any] | None,
        resource_id: str | None = None,
    ) -> int:
        """Send a ``changed`` notification to every live subscriber of ``channel``.

        Args:
            channel: The channel.
            action: ``"added"``, ``"changed"`` or ``"removed"`` (not checked: tests may
                send others).
            resource: The resource (or its changed attributes), or ``None``.
            resource_id: Defaults to ``resource["id"]``.

        Returns:
            How many connections it was queued for.
        """
        if resource_id is None and resource is not None:
            value = resource.get("id")
            resource_id = None if value is None else str(value)
        body = {
            "action": action,
            "resourceId": resource_id,
            "resource_id": resource_id,
            "resource": None if resource is None else dict(resource),
            "channel": channel,
        }
        text = json.dumps(["changed", [channel, body]])
        delivered = 0
        for client in self._clients.values():
            if client.is_live and channel in client.subscriptions:
                client.outbox.put_nowait(("message", text))
                delivered += 1
        return delivered

    def reply(self, client: RouterClient, message: list[Any]) -> None:
        """Send one application message to one client (framed for its mode)."""
        if client.is_live:
            client.outbox.put_nowait(("message", json.dumps(message)))

    def hostile(self, frame: str | bytes, *, text: bool | None = None) -> int:
        """Send ``frame`` as is (no SockJS framing) to every live client.

        Args:
            frame: A ``str`` goes out as a text frame, ``bytes`` as a binary frame.
            text: With ``bytes``, ``True`` sends them as a text frame unchecked (for
                example invalid UTF-8).

        Returns:
            How many connections it was queued for.
        """
        count = 0
        for client in self._clients.values():
            if client.is_live:
                client.outbox.put_nowait(("frame", (frame, text)))
                count += 1
        return count

    # Faults.

    def drop_all(self, mode: DropMode = "reset", *, code: int = 1011, reason: str = "") -> int:
        """Drop every live connection.

        Args:
            mode: ``"reset"`` aborts TCP with a reset; ``"close"`` sends a close frame
                with ``code`` (SockJS: ``c[code, reason]`` first); ``"blackhole"`` stops
                reading, writing and answering pings while TCP stays open (aborted after
                ``blackhole_linger`` seconds).
            code: Close code for ``"close"``.
            reason: Close reason for ``"close"``.

        Returns:
            How many connections were dropped.
        """
        if mode not in ("reset", "close", "blackhole"):
            raise ValueError(f"unknown drop mode {mode!r}")
        count = 0
        for client in list(self._clients.values()):
            if not client.is_live:
                continue
            count += 1
            client.subscriptions.clear()
            if mode == "reset":
                client.closing = True
                _reset(client.ws)
            elif mode == "close":
                client.closing = True
                client.outbox.put_nowait(("close", (code, reason)))
            else:
                client.blackholed = True
                client.blackholed_at = time.monotonic()
                with contextlib.suppress(Exception):
                    client.ws.transport.pause_reading()
        return count

    def refuse_handshakes(
        self, status: int | None, *, retry_after: float | None = None, count: int | None = None
    ) -> None:
        """Answer the next WebSocket handshakes with an HTTP status instead of 101.

        Args:
            status: The status (``None`` accepts handshakes again).
            retry_after: Seconds to put in a ``Retry-After`` header.
            count: How many handshakes to refuse (``None``: until called again).
        """
        self._refuse = None if status is None else (status, retry_after)
        self._refuse_left = count

    def hold_acks(self) -> None:
        """Keep ``__qr__`` answers back (``sub`` is still processed) until released."""
        self.acks_held = True

    def release_acks(self) -> None:
        """Send every held ``__qr__`` answer, in order, and stop holding."""
        self.acks_held = False
        for client in self._clients.values():
            held, client.held = client.held, []
            for text in held:
                if client.is_live:
                    client.outbox.put_nowait(("message", text))

    # Extension points.

    def handle_message(
        self, client: RouterClient, method: str, args: list[Any], kwargs: dict[str, Any]
    ) -> None:
        """Act on one client message. Override to extend; call ``super()`` to keep defaults.

        Args:
            client: The sender.
            method: The message's method.
            args: Its positional arguments.
            kwargs: Its keyword object.
        """
        query = kwargs.get("query")
        now = self.now()
        if (
            method == "sub"
            and len(args) >= 2
            and isinstance(args[0], str)
            and isinstance(args[1], str)
        ):
            channel, token = args[0], args[1]
            expiry = self.token_expiry(token)
            token_valid = expiry is None or now < expiry
            verdict: bool | str = (
                self.check_subscription(token, channel) if token_valid else "token expired"
            )
            allowed = verdict is True
            self.frames_received.append(
                ReceivedFrame(
                    connection_id=client.id,
                    method=method,
                    channel=channel,
                    query=query if isinstance(query, int) else None,
                    token=token,
                    token_valid=token_valid,
                    allowed=allowed,
                    at=now,
                )
            )
            if allowed:
                client.subscriptions[channel] = token
                self._answer(client, ["__qr__", [[]], {"query": query}])
            else:
                reason = verdict if isinstance(verdict, str) else "permission denied"
                self._answer(client, ["__qr__", [reason], {"query": query, "fail": True}])
            return
        target = args[0] if args and isinstance(args[0], str) else None
        self.frames_received.append(
            ReceivedFrame(
                connection_id=client.id,
                method=method,
                channel=target,
                query=query if isinstance(query, int) else None,
                at=now,
            )
        )
        if method in ("unsub", "uns") and target is not None:
            client.subscriptions.pop(target, None)
            self._answer(client, ["__qr__", [[]], {"query": query}])
        elif query is not None:
            self._answer(client, ["__qr__", ["unknown method"], {"query": query, "fail": True}])

    def check_subscription(self, token: str, channel: str) -> bool | str:
        """Decide an unexpired ``sub``: ``True`` allows; ``False`` or a reason refuses."""
        return self.authorize(token, channel)

    # Internals.

    def _answer(self, client: RouterClient, message: list[Any]) -> None:
        text = json.dumps(message)
        if self.acks_held:
            client.held.append(text)
        elif client.is_live:
            client.outbox.put_nowait(("message", text))

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        path = request.path.split("?", 1)[0]
        if path == f"{self.prefix}/info":
            body = json.dumps(
                {"websocket": True, "cookie_needed": False, "origins": ["*:*"], "entropy": 12345}
            )
            return Response(
                200,
                "OK",
                Headers([("Content-Type", "application/json; charset=UTF-8")]),
                body.encode(),
            )
        if path != self._raw_path and not self._sockjs_path.fullmatch(path):
            return connection.respond(404, "Not Found\n")
        if self._refuse is not None and (self._refuse_left is None or self._refuse_left > 0):
            if self._refuse_left is not None:
                self._refuse_left -= 1
            status, retry_after = self._refuse
            self.refused_handshakes += 1
            response = connection.respond(status, "refused by the test\n")
            if retry_after is not None:
                response.headers["Retry-After"] = (
                    str(int(retry_after)) if retry_after == int(retry_after) else str(retry_after)
                )
            return response
        return None

    async def _handle_connection(self, ws: ServerConnection) -> None:
        path = ws.request.path.split("?", 1)[0] if ws.request is not None else ""
        framing: Literal["raw", "sockjs"] = "raw" if path == self._raw_path else "sockjs"
        client = RouterClient(id=next(self._ids), ws=ws, framing=framing)
        self.handshakes += 1
        self._clients[client.id] = client
        if framing == "sockjs":
            client.outbox.put_nowait(("frame", ("o", None)))
        helpers = [
            asyncio.ensure_future(self._write_loop(client)),
            asyncio.ensure_future(self._maintain(client)),
        ]
        if framing == "sockjs":
            helpers.append(asyncio.ensure_future(self._heartbeat_loop(client)))
        try:
            await self._read_loop(client)
        finally:
            self._clients.pop(client.id, None)
            for task in helpers:
                task.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)

    async def _read_loop(self, client: RouterClient) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for frame in client.ws:
                if isinstance(frame, bytes):
                    self.malformed_frames += 1
                    continue
                if client.framing == "sockjs":
                    self._receive_sockjs(client, frame)
                else:
                    self._receive_message(client, frame)

    def _receive_sockjs(self, client: RouterClient, frame: str) -> None:
        try:
            messages = json.loads(frame)
        except ValueError:
            self.malformed_frames += 1
            return
        if isinstance(messages, str):
            messages = [messages]
        if not isinstance(messages, list):
            self.malformed_frames += 1
            return
        for message in messages:
            if isinstance(message, str):
                self._receive_message(client, message)
            else:
                self.malformed_frames += 1

    def _receive_message(self, client: RouterClient, text: str) -> None:
        try:
            message = json.loads(text)
        except ValueError:
            message = None
        if (
            not isinstance(message, list)
            or len(message) not in (2, 3)
            or not isinstance(message[0], str)
            or not isinstance(message[1], list)
            or (len(message) == 3 and not isinstance(message[2], dict))
        ):
            self.malformed_frames += 1
            self.frames_received.append(
                ReceivedFrame(connection_id=client.id, method=None, at=self.now())
            )
            return
        kwargs = message[2] if len(message) == 3 else {}
        self.handle_message(client, message[0], message[1], kwargs)

    async def _write_loop(self, client: RouterClient) -> None:
        ws = client.ws
        with contextlib.suppress(ConnectionClosed, OSError):
            while True:
                kind, payload = await client.outbox.get()
                if client.blackholed:
                    continue
                if kind == "message":
                    texts = [payload]
                    # SockJS batches whatever is queued into one ``a`` frame.
                    while client.framing == "sockjs" and not client.outbox.empty():
                        next_kind, next_payload = client.outbox.get_nowait()
                        if next_kind != "message":
                            await ws.send("a" + json.dumps(texts))
                            texts = []
                            await self._send_other(client, next_kind, next_payload)
                            break
                        texts.append(next_payload)
                    if not texts:
                        continue
                    if client.framing == "sockjs":
                        await ws.send("a" + json.dumps(texts))
                    else:
                        await ws.send(texts[0])
                else:
                    await self._send_other(client, kind, payload)

    async def _send_other(self, client: RouterClient, kind: str, payload: Any) -> None:
        ws = client.ws
        if kind == "frame":
            frame, text = payload
            await ws.send(frame, text=text)
        elif kind == "close":
            code, reason = payload
            if client.framing == "sockjs":
                await ws.send("c" + json.dumps([code, reason]))
            await ws.close(code, reason)

    async def _heartbeat_loop(self, client: RouterClient) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_interval)
            if client.is_live:
                client.outbox.put_nowait(("frame", ("h", None)))

    async def _maintain(self, client: RouterClient) -> None:
        while True:
            await asyncio.sleep(_MAINTENANCE_INTERVAL)
            if client.blackholed:
                if time.monotonic() - client.blackholed_at >= self.blackhole_linger:
                    _reset(client.ws)
                    return
                continue
            if not self.strict_expiry or not client.is_live:
                continue
            now = self.now()
            for token in set(client.subscriptions.values()):
                expiry = self.token_expiry(token)
                if expiry is not None and now >= expiry:
                    self.expiry_closes += 1
                    client.closing = True
                    client.subscriptions.clear()
                    client.outbox.put_nowait(("close", (4401, "token expired")))
                    break


def _reset(ws: ServerConnection) -> None:
    """Abort the TCP connection with a reset (SO_LINGER 0), no close frame."""
    transport = ws.transport
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


def _allow_all(token: str, channel: str) -> bool:
    return True


def _never(token: str) -> float | None:
    return None
