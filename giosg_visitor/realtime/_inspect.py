"""A WebSocket opened for inspection: the I/O shell of ``giosg-visitor probe``.

The real-time connection needs neither the handshake response nor the control frames; a
diagnosis does. :func:`open_inspected` opens a socket like
:class:`~giosg_visitor.realtime._transport.WebSocketTransport` (same websockets clients,
redirects never followed, the same logger and its filters, the same error mapping for
reads and writes) and also keeps:

* the handshake response, status and headers, also for a refused handshake
  (:class:`InspectedHandshakeError`);
* the control frames the server sent (``ping``, ``pong``, ``close``), which websockets
  answers itself and never hands to ``recv()``.

No client keepalive pings are sent: every ping seen came from the server.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Final, final

import anyio
import attrs
import websockets.asyncio.client
from websockets.exceptions import InvalidStatus
from websockets.frames import Frame, Opcode
from websockets.protocol import Event

from giosg_visitor.errors import TransportError

from ._transport import (
    WEBSOCKETS_LOGGER,
    HandshakeRejectedError,
    SocketConnection,
    WebSocketTransport,
    _AsyncioConnect,
    _safe_cause,
    _WebSocket,
    current_backend,
)


__all__ = ["HandshakeResponse", "InspectedHandshakeError", "InspectedSocket", "open_inspected"]

_CONTROL_OPCODES: Final = {Opcode.PING: "ping", Opcode.PONG: "pong", Opcode.CLOSE: "close"}
#: Maps a failed opening handshake as the real-time connection does (a refused status
#: aside: a probe reports the whole response instead).
_CONNECTION_ERRORS: Final = WebSocketTransport()


@final
@attrs.frozen(kw_only=True)
class HandshakeResponse:
    """The HTTP response to a WebSocket handshake.

    Attributes:
        status: The HTTP status (``101`` when the upgrade was accepted).
        headers: Every response header, in order, as ``(name, value)`` pairs.
    """

    status: int
    headers: tuple[tuple[str, str], ...]


class InspectedHandshakeError(HandshakeRejectedError):
    """The server answered the handshake with a status other than 101 (a redirect too).

    Attributes:
        response: The status and headers of the answer.
    """

    def __init__(self, message: str, *, response: HandshakeResponse) -> None:
        super().__init__(message, status_code=response.status)
        self.response = response


@final
class InspectedSocket:
    """An open socket, its handshake response and the control frames seen so far.

    Attributes:
        socket: The socket (send, receive, ping, close), errors mapped as for the
            real-time connection.
        response: The accepted handshake's response.
    """

    def __init__(self, socket: SocketConnection, ws: Any, response: HandshakeResponse) -> None:
        self.socket = socket
        self.response = response
        self._ws = ws

    def __repr__(self) -> str:
        return f"<InspectedSocket status={self.response.status}>"

    def control_frames(self) -> list[str]:
        """Return the control frames received since the last call (``"ping"``...)."""
        seen: list[str] = self._ws.probe_control_frames
        frames, seen[:] = list(seen), []
        return frames


@asynccontextmanager
async def open_inspected(
    url: str, *, open_timeout: float, close_timeout: float = 5.0, max_size: int = 2**20
) -> AsyncIterator[InspectedSocket]:
    """Open a WebSocket to ``url`` (already checked by the caller); leaving closes it.

    Args:
        url: The ``ws``/``wss`` URL.
        open_timeout: Seconds for TCP, TLS and the handshake.
        close_timeout: Seconds for the closing handshake.
        max_size: Largest incoming message.

    Yields:
        The open socket.

    Raises:
        InspectedHandshakeError: The server answered with a status other than 101.
        TransportTimeoutError: The handshake did not finish within ``open_timeout``.
        TransportError: The network failed.
        UntrustedEndpointError: ``url`` is not a valid WebSocket URL.
    """
    backend = current_backend()
    kwargs: dict[str, Any] = {
        "open_timeout": open_timeout,
        "ping_interval": None,
        "ping_timeout": None,
        "close_timeout": close_timeout,
        "max_size": max_size,
        "compression": "deflate",
        "proxy": True,
        "user_agent_header": "giosg-visitor",
        "logger": WEBSOCKETS_LOGGER,
    }
    manager: AbstractAsyncContextManager[Any]
    if backend == "trio":
        manager = _trio_inspect_connect(url, kwargs)
    else:
        manager = _AsyncioConnect(url, create_connection=_AsyncioInspected, **kwargs)
    try:
        ws = await manager.__aenter__()
    except Exception as exc:
        mapped = _map_open_error(exc)
        if mapped is exc:
            raise
        raise mapped from _safe_cause(exc)
    response = ws.response
    if response is None:  # pragma: no cover - websockets sets it before returning
        raise TransportError("the WebSocket handshake returned no response")
    inspected = InspectedSocket(
        _WebSocket(ws, backend=backend, close_timeout=close_timeout),
        ws,
        HandshakeResponse(status=response.status_code, headers=tuple(response.headers.raw_items())),
    )
    try:
        yield inspected
    finally:
        cancelled = anyio.current_effective_deadline() == -math.inf
        with anyio.CancelScope(shield=True):
            if cancelled and backend == "trio":
                await inspected.socket.abort()
            else:
                await inspected.socket.close()
            try:
                await manager.__aexit__(None, None, None)
            except Exception:  # teardown errors of a dead socket are irrelevant
                WEBSOCKETS_LOGGER.debug("error while releasing a probe socket", exc_info=False)


class _NotesControlFrames:
    """Mixed into a websockets connection class: notes the control frames it receives."""

    probe_control_frames: list[str]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.probe_control_frames = []

    def process_event(self, event: Event) -> None:
        if isinstance(event, Frame):
            kind = _CONTROL_OPCODES.get(event.opcode)
            if kind is not None:
                self.probe_control_frames.append(kind)
        super().process_event(event)  # type: ignore[misc]  # the connection class's


class _AsyncioInspected(_NotesControlFrames, websockets.asyncio.client.ClientConnection):
    """websockets' asyncio connection that also notes the control frames it receives."""


def _trio_inspect_connect(url: str, kwargs: dict[str, Any]) -> AbstractAsyncContextManager[Any]:
    import websockets.trio.client

    class _TrioInspected(_NotesControlFrames, websockets.trio.client.ClientConnection):
        """websockets' trio connection that also notes the control frames it receives."""

    class _TrioConnect(websockets.trio.client.connect):
        """websockets' trio ``connect`` that never follows a redirect."""

        def process_redirect(self, exc: Exception) -> Exception | str:
            return exc

    return _TrioConnect(url, create_connection=_TrioInspected, **kwargs)


def _map_open_error(exc: Exception) -> Exception:
    if isinstance(exc, InvalidStatus):
        response = HandshakeResponse(
            status=exc.response.status_code, headers=tuple(exc.response.headers.raw_items())
        )
        return InspectedHandshakeError(
            f"the socket endpoint answered the WebSocket handshake with HTTP {response.status}",
            response=response,
        )
    # Every other failure reads as it does for the real-time connection.
    return _CONNECTION_ERRORS._map_open_error(exc)
