"""The WebSocket I/O shell: the only module of the SDK that imports websockets.

It picks ``websockets.asyncio.client`` or ``websockets.trio.client`` for the running
backend and maps every websockets, ``OSError`` and backend exception to the SDK's errors:

* a closed socket -> :class:`~giosg_visitor.errors.ConnectionClosedError` with the close
  code (``1006`` when no close frame was exchanged) and reason;
* a refused handshake -> :class:`HandshakeRejectedError` with ``status_code`` and
  ``retry_after``; a redirect -> :class:`~giosg_visitor.errors.UntrustedEndpointError`
  (redirects are never followed: the socket will carry a token);
* a network failure -> :class:`~giosg_visitor.errors.TransportError`
  (:class:`~giosg_visitor.errors.TransportTimeoutError` for the open timeout).

websockets logs through ``giosg_visitor.websockets``, a logger of ours with two filters:
one hides the payload of data frames (websockets' DEBUG lines would otherwise show the
ends of ``sub`` frames, and so part of a token), and a
:class:`~giosg_visitor._redact.RedactingFilter` for anything else.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Final, Literal, Protocol, final

import anyio
import websockets.asyncio.client
from websockets.exceptions import (
    ConnectionClosed,
    InvalidStatus,
    InvalidURI,
    ProtocolError as WebSocketProtocolError,
    WebSocketException,
)
from websockets.frames import Close, Frame, Opcode
from websockets.protocol import State
from websockets.proxy import get_proxy
from websockets.uri import parse_uri

from giosg_visitor._redact import RedactingFilter, redact
from giosg_visitor._renewal import parse_retry_after
from giosg_visitor.errors import (
    BinaryFrameError as BinaryFrameError,
    ConnectionClosedError,
    HandshakeRejectedError as HandshakeRejectedError,
    TransportError,
    TransportTimeoutError,
    UntrustedEndpointError,
)


__all__ = [
    "BinaryFrameError",
    "HandshakeRejectedError",
    "RedirectRefusedError",
    "SocketConnection",
    "SocketTransport",
    "WebSocketTransport",
    "current_backend",
]

#: The logger handed to websockets.
WEBSOCKETS_LOGGER: Final = logging.getLogger("giosg_visitor.websockets")

_ABNORMAL_CLOSURE: Final = 1006
_DATA_OPCODES: Final = frozenset({Opcode.TEXT, Opcode.BINARY, Opcode.CONT})
#: Characters of a text frame shown when payloads are logged (``show_data``).
_LOGGED_TEXT: Final = 200


class RedirectRefusedError(UntrustedEndpointError):
    """The socket endpoint answered the handshake with a redirect (never followed).

    Attributes:
        status_code: The HTTP status (3xx).
    """

    def __init__(self, message: str, *, status_code: int) -> None:
        super().__init__(message)
        self.status_code = status_code


class SocketConnection(Protocol):
    """One open WebSocket, as the real-time connection uses it.

    A socket may also offer ``watch_frames(callback)`` (as the default transport's do):
    ``callback(kind)`` for every inbound control frame (``"ping"``, ``"pong"``,
    ``"close"``). The connection then counts pings and pongs as signs of life besides
    what :meth:`recv` returns; without it, only messages and answered pings count.

    And it may offer ``async send_ping() -> Callable[[], bool] | None`` (the default
    transport's do): send a ping without waiting for its pong and return a check that
    tells, when called later, whether the pong has arrived. It must not wait for the
    network: when the ping cannot go out at once (the socket is closing, or its send
    buffer is full) it returns ``None`` and the connection pings with :meth:`ping`
    instead. The keepalive then costs no task per ping; sockets without it are pinged
    with :meth:`ping` as before.
    """

    async def send(self, text: str) -> None:
        """Send one text frame."""
        ...

    async def recv(self) -> str:
        """Receive one text frame. Raises :class:`BinaryFrameError` for a binary one."""
        ...

    async def ping(self) -> None:
        """Send a ping and return when its pong arrives."""
        ...

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close with the closing handshake (bounded by the close timeout)."""
        ...

    async def abort(self) -> None:
        """Drop the TCP connection at once, without a closing handshake."""
        ...


class SocketTransport(Protocol):
    """Opens sockets. Tests may pass their own; the default is :class:`WebSocketTransport`."""

    def connect(
        self,
        url: str,
        *,
        open_timeout: float | None,
        ping_interval: float | None,
        ping_timeout: float | None,
        close_timeout: float,
        max_size: int | None,
    ) -> AbstractAsyncContextManager[SocketConnection]:
        """Open a WebSocket to ``url``; closing the context closes it."""
        ...


@functools.lru_cache(maxsize=256)
def _environment_proxy(secure: bool, host: str, port: int) -> str | None:
    """websockets' reading of the environment's proxy settings for one endpoint."""
    scheme = "wss" if secure else "ws"
    return get_proxy(parse_uri(f"{scheme}://{host}:{port}/"))


def resolve_proxy(url: str) -> str | None:
    """The proxy URL the environment configures for ``url``, or ``None`` to go direct.

    websockets' ``proxy=True`` reads the environment (``getproxies``, ``proxy_bypass``)
    on every connect; this reads it once per process per (scheme, host, port), so a
    proxy setting changed after the first connect to an endpoint is not seen.
    """
    uri = parse_uri(url)
    return _environment_proxy(uri.secure, uri.host, uri.port)


@final
class WebSocketTransport:
    """The websockets-based :class:`SocketTransport`, on asyncio or trio.

    Args:
        proxy: ``True`` uses the environment's proxy settings (read once per process
            per endpoint), ``None`` connects directly, a URL forces a proxy.
        compression: Negotiate permessage-deflate.
        user_agent: The ``User-Agent`` header (``None`` removes it).
        wall_time: UNIX time, to read an HTTP-date ``Retry-After``.
    """

    def __init__(
        self,
        *,
        proxy: str | Literal[True] | None = True,
        compression: bool = True,
        user_agent: str | None = "giosg-visitor",
        wall_time: Callable[[], float] | None = None,
    ) -> None:
        self._proxy = proxy
        self._compression = compression
        self._user_agent = user_agent
        self._wall_time = wall_time

    def __repr__(self) -> str:
        return f"WebSocketTransport(compression={self._compression})"

    @asynccontextmanager
    async def connect(
        self,
        url: str,
        *,
        open_timeout: float | None = 10.0,
        ping_interval: float | None = 20.0,
        ping_timeout: float | None = 20.0,
        close_timeout: float = 10.0,
        max_size: int | None = 2**20,
    ) -> AsyncIterator[SocketConnection]:
        """Open a WebSocket to ``url``; leaving the context closes it.

        Args:
            url: The ``ws``/``wss`` URL (already checked by the caller).
            open_timeout: Seconds for TCP, TLS and the handshake.
            ping_interval: websockets keepalive period (``None``: off).
            ping_timeout: websockets keepalive pong timeout.
            close_timeout: Seconds for the closing handshake before the socket is dropped.
            max_size: Largest incoming message; larger ones close the socket with 1009.

        Yields:
            The open socket.

        Raises:
            HandshakeRejectedError: The server refused the upgrade with an HTTP status.
            UntrustedEndpointError: The server answered with a redirect.
            TransportTimeoutError: The handshake did not finish within ``open_timeout``.
            TransportError: The network failed.
        """
        backend = current_backend()
        kwargs: dict[str, Any] = {
            "open_timeout": open_timeout,
            "ping_interval": ping_interval,
            "ping_timeout": ping_timeout,
            "close_timeout": close_timeout,
            "max_size": max_size,
            "compression": "deflate" if self._compression else None,
            "proxy": resolve_proxy(url) if self._proxy is True else self._proxy,
            "user_agent_header": self._user_agent,
            "logger": WEBSOCKETS_LOGGER,
        }
        manager: AbstractAsyncContextManager[Any]
        if backend == "trio":
            manager = _trio_connect(url, kwargs)
        else:
            manager = _AsyncioConnect(url, create_connection=_AsyncioClientConnection, **kwargs)
        try:
            ws = await manager.__aenter__()
        except Exception as exc:
            mapped = self._map_open_error(exc)
            if mapped is exc:
                raise
            raise mapped from _safe_cause(exc)
        socket = _WebSocket(ws, backend=backend, close_timeout=close_timeout)
        try:
            yield socket
        finally:
            # websockets.trio reads frames in a nursery opened inside our (now cancelled)
            # scope: nobody would read the server's close frame, and a graceful close
            # would wait out close_timeout. Abort at once then; close gracefully otherwise.
            cancelled = anyio.current_effective_deadline() == -math.inf
            # Shielded: the socket must be released even when the caller is cancelled.
            with anyio.CancelScope(shield=True):
                if cancelled and backend == "trio":
                    await socket.abort()
                else:
                    await socket.close()
                try:
                    await manager.__aexit__(None, None, None)
                except Exception:  # teardown errors of a dead socket are irrelevant
                    WEBSOCKETS_LOGGER.debug("error while releasing a socket", exc_info=False)

    def _map_open_error(self, exc: Exception) -> Exception:
        if isinstance(exc, InvalidStatus):
            status = exc.response.status_code
            if 300 <= status < 400:
                return RedirectRefusedError(
                    f"the socket endpoint answered with a redirect (HTTP {status}); "
                    "redirects are not followed",
                    status_code=status,
                )
            header = exc.response.headers.get("Retry-After")
            now = self._wall_time() if self._wall_time is not None else 0.0
            retry_after = parse_retry_after(header, now=now) if header else None
            return HandshakeRejectedError(
                f"the socket endpoint refused the WebSocket handshake with HTTP {status}",
                status_code=status,
                retry_after=retry_after,
            )
        if isinstance(exc, InvalidURI):
            return UntrustedEndpointError("the socket URL is not a valid WebSocket URL")
        if isinstance(exc, TimeoutError):
            return TransportTimeoutError("timed out opening the socket")
        if isinstance(exc, ConnectionClosed):
            return _closed_error(exc)
        if isinstance(exc, OSError):
            return TransportError(f"could not connect the socket: {type(exc).__name__}")
        if isinstance(exc, WebSocketException) or _is_trio_stream_error(exc):
            return TransportError(f"the WebSocket handshake failed: {type(exc).__name__}")
        # Anything else (a RuntimeError, TypeError...) is a bug: let it through as is.
        return exc


#: Frame kinds reported to a :meth:`_WebSocket.watch_frames` callback. Data frames are
#: not: the read loop sees each message anyway, and this runs for every frame.
_CONTROL_KINDS: Final = {
    Opcode.PING: "ping",
    Opcode.PONG: "pong",
    Opcode.CLOSE: "close",
}


def _report_frame(connection: Any, event: object) -> None:
    """Tell the connection's frame watcher (if any) that a control frame arrived."""
    watcher = connection.frame_watcher
    if watcher is not None and isinstance(event, Frame):
        kind = _CONTROL_KINDS.get(event.opcode)
        if kind is not None:
            watcher(kind)


class _AsyncioClientConnection(websockets.asyncio.client.ClientConnection):
    """websockets' asyncio connection that reports inbound control frames.

    websockets answers pings and consumes pongs itself; a server that heartbeats with
    WebSocket pings (sockjs-node does) would otherwise look silent to us.
    """

    frame_watcher: Callable[[str], None] | None = None

    def process_event(self, event: Any) -> None:
        super().process_event(event)
        _report_frame(self, event)


class _AsyncioConnect(websockets.asyncio.client.connect):
    """websockets' asyncio ``connect`` that never follows a redirect."""

    def process_redirect(self, exc: Exception) -> Exception | str:
        return exc


def _trio_connect(url: str, kwargs: dict[str, Any]) -> AbstractAsyncContextManager[Any]:
    import websockets.trio.client

    class _TrioClientConnection(websockets.trio.client.ClientConnection):
        """websockets' trio connection that reports inbound control frames (see asyncio's)."""

        frame_watcher: Callable[[str], None] | None = None

        def process_event(self, event: Any) -> None:
            super().process_event(event)
            _report_frame(self, event)

    class _TrioConnect(websockets.trio.client.connect):
        """websockets' trio ``connect`` that never follows a redirect."""

        def process_redirect(self, exc: Exception) -> Exception | str:
            return exc

    return _TrioConnect(url, create_connection=_TrioClientConnection, **kwargs)


@final
class _WebSocket:
    """A :class:`SocketConnection` over a websockets asyncio or trio connection."""

    def __init__(self, ws: Any, *, backend: str, close_timeout: float) -> None:
        self._ws = ws
        self._backend = backend
        self._close_timeout = close_timeout
        self._closed = False

    def __repr__(self) -> str:
        return f"<_WebSocket backend={self._backend} closed={self._closed}>"

    def watch_frames(self, callback: Callable[[str], None] | None) -> None:
        """Call ``callback(kind)`` for every inbound control frame.

        ``kind`` is ``"ping"``, ``"pong"`` or ``"close"`` (data frames come out of
        :meth:`recv`). It runs inside websockets' frame processing: it must not block or
        raise. ``None`` stops watching.
        """
        self._ws.frame_watcher = callback

    async def send(self, text: str) -> None:
        try:
            await self._ws.send(text)
        except Exception as exc:
            raise _map_io_error(exc) from _safe_cause(exc)

    async def recv(self) -> str:
        try:
            message = await self._ws.recv()
        except Exception as exc:
            raise _map_io_error(exc) from _safe_cause(exc)
        if isinstance(message, str):
            return message
        raise BinaryFrameError(f"binary frame of {len(message)} bytes")

    async def ping(self) -> None:
        try:
            if self._backend == "trio":
                event = await self._ws.ping(ack_on_close=True)
                await event.wait()
                if self._ws.state is not State.OPEN:
                    raise ConnectionClosedError(
                        "the socket closed while waiting for a pong",
                        code=self._ws.close_code or _ABNORMAL_CLOSURE,
                        reason=self._ws.close_reason or "",
                    )
            else:
                waiter = await self._ws.ping()
                await waiter
        except ConnectionClosedError:
            raise
        except Exception as exc:
            raise _map_io_error(exc) from _safe_cause(exc)

    async def send_ping(self) -> Callable[[], bool] | None:
        """Send a ping without waiting for its pong; ``None`` if it would have to wait.

        Returns:
            A check, true once the pong has arrived; ``None`` when the socket is not open
            or its writes are backed up (asyncio: websockets' write buffer is above its
            limit; trio: another send holds the socket), where ``ping()`` would wait.
        """
        ws = self._ws
        trio = self._backend == "trio"
        if ws.state is not State.OPEN or _sends_backed_up(ws, trio=trio):
            return None
        try:
            # Neither waits for the pong. On asyncio the frame goes to the transport's
            # buffer, below its limit: no suspension. On trio ten bytes go to the
            # kernel; with the send lock free, no other send is stuck on a full buffer.
            if trio:
                event = await ws.ping()
                answered: Callable[[], bool] = event.is_set
            else:
                answered = functools.partial(_pong_arrived, await ws.ping())
        except Exception as exc:
            raise _map_io_error(exc) from _safe_cause(exc)
        return answered

    async def close(self, code: int = 1000, reason: str = "") -> None:
        if self._closed:
            return
        self._closed = True
        with anyio.move_on_after(self._close_timeout, shield=True) as scope:
            try:
                # websockets' trio connection closes with aclose(); asyncio's with close().
                if self._backend == "trio":
                    await self._ws.aclose(code, reason)
                else:
                    await self._ws.close(code, reason)
            except Exception:  # closing a broken socket: nothing left to do
                pass
        if scope.cancelled_caught:
            await self._abort()

    async def abort(self) -> None:
        self._closed = True
        await self._abort()

    async def _abort(self) -> None:
        try:
            if self._backend == "trio":
                import trio

                await trio.aclose_forcefully(self._ws.stream)
            else:
                self._ws.transport.abort()
                # Let the event loop deliver connection_lost().
                await asyncio.sleep(0)
        except Exception:  # aborting a socket that is already gone
            pass


def _sends_backed_up(ws: Any, *, trio: bool) -> bool:
    """Whether a send on websockets' connection ``ws`` would wait (for room or for a lock).

    Reads websockets' flow-control state (``paused`` on asyncio, ``send_lock`` on trio);
    a release without it reads as "not backed up", the way pings were sent before.
    """
    if trio:
        lock = getattr(ws, "send_lock", None)
        return lock is not None and bool(lock.locked())
    return bool(getattr(ws, "paused", False))


def _pong_arrived(waiter: asyncio.Future[float]) -> bool:
    """Whether websockets' asyncio pong waiter was answered (not failed by a close)."""
    return waiter.done() and not waiter.cancelled() and waiter.exception() is None


def _safe_cause(exc: Exception) -> Exception | None:
    """The cause to chain to a translated error, or ``None`` to hide it.

    websockets' ``ConnectionClosed`` quotes the close reason in its message, and servers
    echo rejected tokens there; the translated error carries the code and the masked
    reason, so the original adds nothing but the risk.
    """
    return None if isinstance(exc, ConnectionClosed) else exc


def _closed_error(exc: ConnectionClosed) -> ConnectionClosedError:
    if exc.rcvd is not None:
        code, reason = exc.rcvd.code, exc.rcvd.reason
    elif exc.sent is not None:
        code, reason = exc.sent.code, exc.sent.reason
    else:
        code, reason = _ABNORMAL_CLOSURE, ""
    return ConnectionClosedError(f"the socket closed with code {code}", code=code, reason=reason)


def _map_io_error(exc: Exception) -> Exception:
    if isinstance(exc, ConnectionClosed):
        return _closed_error(exc)
    if isinstance(exc, OSError):
        return ConnectionClosedError(
            f"the socket failed: {type(exc).__name__}", code=_ABNORMAL_CLOSURE
        )
    if _is_trio_stream_error(exc):
        return ConnectionClosedError("the socket is closed", code=_ABNORMAL_CLOSURE)
    if isinstance(exc, WebSocketException):
        return ConnectionClosedError(
            f"the socket failed: {type(exc).__name__}", code=_ABNORMAL_CLOSURE
        )
    if isinstance(exc, RuntimeError | TypeError | ValueError):
        # websockets' ConcurrencyError is a RuntimeError; misuse is a bug, not a drop.
        return exc
    return TransportError(f"the socket failed: {type(exc).__name__}")


def _is_trio_stream_error(exc: BaseException) -> bool:
    """A trio stream error, recognised without importing trio on asyncio."""
    return type(exc).__module__.startswith("trio") and type(exc).__name__ in (
        "BrokenResourceError",
        "ClosedResourceError",
    )


def current_backend() -> Literal["asyncio", "trio"]:
    """The running async library: ``"asyncio"`` or ``"trio"``.

    Raises:
        RuntimeError: Not inside an event loop, or in another async library.
    """
    try:
        import sniffio
    except ImportError:  # pragma: no cover - trio depends on sniffio
        asyncio.get_running_loop()
        return "asyncio"
    try:
        library = sniffio.current_async_library()
    except sniffio.AsyncLibraryNotFoundError as exc:
        raise RuntimeError("the real-time connection needs a running event loop") from exc
    if library == "trio":
        return "trio"
    if library == "asyncio":
        return "asyncio"
    raise RuntimeError(f"unsupported async library: {library}")


class FrameLogFilter(logging.Filter):
    """Rewrite the frames in websockets' DEBUG lines before they are formatted.

    Data frames are shown by their length only (``sub`` frames hold tokens) unless
    ``show_data``; close frames are printed with the reason masked whole.
    """

    def __init__(self, *, show_data: bool = False) -> None:
        super().__init__()
        self._show_data = show_data

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and any(isinstance(arg, Frame) for arg in args):
            record.args = tuple(_hide_payload(arg, self._show_data) for arg in args)
        return True


def _hide_payload(arg: object, show_data: bool) -> object:
    if not isinstance(arg, Frame):
        return arg
    if arg.opcode in _DATA_OPCODES:
        if not show_data:
            return f"{arg.opcode.name} [{len(arg.data)} bytes, payload not logged]"
        if arg.opcode is not Opcode.TEXT:
            return f"{arg.opcode.name} [{len(arg.data)} bytes]"
        # Mask first, shorten after: websockets' own elision would cut a token in two
        # pieces that redaction no longer recognises.
        text = redact(bytes(arg.data).decode("utf-8", "replace"))
        if len(text) > _LOGGED_TEXT:
            text = text[:_LOGGED_TEXT] + "..."
        return f"TEXT {text!r} [{len(arg.data)} bytes]"
    if arg.opcode is Opcode.CLOSE:
        # websockets elides the middle of a long frame ("abc...xyz"), which would leave
        # the two ends of an echoed token where redaction cannot recognise them: mask the
        # reason whole, then print it.
        try:
            close = Close.parse(arg.data)
        except (WebSocketProtocolError, UnicodeDecodeError):
            return f"CLOSE [{len(arg.data)} bytes, malformed]"
        return f"CLOSE {Close(close.code, redact(close.reason))}"
    return arg


WEBSOCKETS_LOGGER.addFilter(FrameLogFilter())
WEBSOCKETS_LOGGER.addFilter(RedactingFilter())
