"""The real-time connection: one socket to the message router, kept alive and resubscribed.

:class:`RealtimeConnection` is the I/O shell around
:class:`~giosg_visitor.realtime.protocol.RealtimeProtocol`. It owns its background tasks in
a task group entered with ``async with`` (structured concurrency, nothing outlives it)::

    async with RealtimeConnection(
        socket_url=auth.socket_url, token_source=tokens
    ) as connection:
        async with connection.subscribe(channel) as subscription:
            await subscription.wait_subscribed()
            async for event in subscription:
                ...

What it does for you:

* **Pipelined subscriptions.** ``sub`` messages are written by one writer task as soon as
  they are queued; :meth:`~RealtimeConnection.subscribe_many` sends all of them before the
  first acknowledgement comes back (one round trip for N channels).
* **Keepalive.** A ping every ``ping_interval``; no pong and no frame at all within
  ``ping_timeout`` drops the socket. An idle watchdog also drops it when nothing at all
  arrives for ``idle_timeout``. Every inbound frame counts, control frames included: a
  server may heartbeat with SockJS ``h`` frames or with WebSocket pings (sockjs-node does
  the latter), and our own pings' pongs count too, so a quiet healthy socket is never
  dropped.
* **Reconnect** with full-jitter backoff (:class:`~giosg_visitor.realtime.ReconnectPolicy`),
  close codes and refused handshakes classified (:mod:`giosg_visitor._facts`). Each new
  socket gets the freshest token from its token source and resubscribes every channel in
  one batch. When a channel that was confirmed before is confirmed again, a
  :class:`~giosg_visitor.realtime.events.Resubscribed` marker goes into each of its
  subscriptions: notifications sent while the socket was down are missing there, and the
  consumer should backfill from the REST API.
* **Bounded delivery.** Each subscription buffers up to ``max_buffer`` notifications. The
  read loop never waits for a slow consumer: when a buffer is full, notifications for that
  subscription are dropped and one :class:`~giosg_visitor.realtime.events.Gap` marker is
  queued where they would have been (markers never take a notification's slot).
* **Fatal errors** (an untrusted ``socket_url``, HTTP 404 on the handshake, repeated auth
  rejections or protocol violations, a session that cannot give a token) stop the
  connection; they are raised from subscriptions and ``wait_*`` calls. The ``async with``
  body itself is never interrupted by them.
"""

from __future__ import annotations

import enum
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import Final, Literal, Self, final

import anyio
import anyio.abc
import anyio.lowlevel

from giosg_visitor._clock import Clock, SystemClock
from giosg_visitor._facts import (
    SOCKET_STRATEGIES,
    SocketStrategy,
)
from giosg_visitor._redact import redact
from giosg_visitor._secret import Secret
from giosg_visitor._timers import Timer, Timers, loop_timers
from giosg_visitor.errors import (
    ConnectionClosedError,
    GiosgError,
    SessionError,
    UntrustedEndpointError,
)

from ._backoff import (
    CloseAction,
    Drop,
    FailureKind,
    ReconnectPolicy,
    ReconnectTracker,
    Verdict,
    classify_close,
)
from ._channels import ChannelTable, ConnectionStats as ConnectionStats, Op
from ._keepalive import IdleWatchdog, TimedKeepalive, keepalive_task, send_failure_grace
from ._strategy import (
    StrategyChooser,
    StrategyRefusal as StrategyRefusal,
)
from ._tokens import CallbackTokens, TokenSource
from ._transport import (
    BinaryFrameError,
    SocketConnection,
    SocketTransport,
    WebSocketTransport,
)
from ._urls import DEFAULT_ALLOWED_HOSTS, socket_endpoint, socket_host
from .events import (
    Change,
    Closed,
    Connected,
    ConnectionEvent,
    Disconnected,
    Opened,
    ProtocolEvent,
    Reconnected,
    SubscribeAck,
    SubscribeFailed,
)
from .protocol import Framing, RealtimeProtocol
from .streams import ConnectionEvents as ConnectionEvents, Subscription as Subscription


__all__ = [
    "ConnectionState",
    "ConnectionStats",
    "RealtimeConnection",
    "StrategyRefusal",
    "Subscription",
]

logger = logging.getLogger("giosg_visitor.realtime")

_ABNORMAL_CLOSURE: Final = 1006
_EVENTS_BUFFER: Final = 256
#: Jitter and SockJS session ids (a Random() is 2.5 KiB: not one per connection).
_SHARED_RNG: Final = random.Random()
#: The read loop yields at least once per this many frames (at most max_buffer / 2).
_READER_PACE: Final = 64


class ConnectionState(enum.Enum):
    """Where the connection is in its life."""

    #: Opening the first socket.
    CONNECTING = "connecting"
    #: A socket is open (in SockJS mode: the session is open).
    OPEN = "open"
    #: The socket dropped; waiting or trying to open a new one.
    RECONNECTING = "reconnecting"
    #: Closed by the owner or failed for good.
    CLOSED = "closed"


@final
class RealtimeConnection(anyio.AsyncContextManagerMixin):
    """A self-healing connection to the Giosg message router.

    Args:
        socket_url: The auth response's ``socket_url``, or a callable returning the
            current one (read before every connection attempt).
        token_source: Where tokens come from (a
            :class:`~giosg_visitor.realtime.TokenSource`): asked for the freshest token
            once per batch of ``sub`` messages (each new socket, each
            :meth:`reauthorize`), told when the server rejected our credential (auth
            close code, handshake 401/403) and handed a refused ``sub``'s token. Give
            either this or ``token_provider``.
        token_provider: Instead of ``token_source``: returns the freshest usable access
            token, renewing first if needed.
        renew_token: With ``token_provider``: called when the server rejected our
            credential (auth close code, handshake 401/403, a refused ``sub``) to force a
            renewal before reconnecting or subscribing again. Optional.
        token_refused: With ``token_provider``: called with the token of a refused
            ``sub`` instead of ``renew_token``: renew it (single-flight) and return
            ``True``, or return ``False`` when renewing cannot help (the token was issued
            a moment ago), which makes the refusal a
            :class:`~giosg_visitor.errors.SubscriptionError`. Optional.
        clock: Time source for backoff and keepalive (``SystemClock`` by default).
        reconnect: Backoff and escalation numbers.
        strategy: Where to connect: ``"raw"`` (``<socket_url>/websocket``, default),
            ``"sockjs"`` (``<socket_url>/<server>/<session>/websocket``), ``"as_is"``
            (``socket_url`` itself), or ``"auto"``: try those in that order, moving on
            when an endpoint refuses (an HTTP status on the handshake, a 200 without
            upgrade, a redirect, a close right after open, no SockJS open frame), and
            remember what worked per socket host for the process (reconnects do not probe
            again; the choice is logged once at INFO).
        framing: ``"raw"`` (one JSON message per frame), ``"sockjs"`` (SockJS frames), or
            ``"auto"`` (default): SockJS framing for the ``"sockjs"`` URL, raw otherwise.
        allowed_hosts: Host patterns ``socket_url`` may point to (loopback always allowed).
        rng: Randomness for jitter and SockJS session ids.
        open_timeout: Seconds for TCP + TLS + WebSocket handshake.
        ping_interval: Seconds between keepalive pings (``None`` disables keepalive).
        ping_timeout: Seconds to wait for the pong.
        close_timeout: Seconds for a closing handshake before the socket is dropped.
        idle_timeout: Seconds without any inbound frame (data, heartbeat, ping or pong)
            after which the socket is considered dead (``None``: off). In SockJS framing
            the server heartbeats (every 25 s by default); otherwise only our own pings
            guarantee traffic, so the watchdog then waits at least ``ping_interval +
            ping_timeout`` and is off when ``ping_interval`` is ``None``. Whenever the
            keepalive would drop a silent link as soon, it alone does the watching.
        sockjs_idle_timeout: The former name of ``idle_timeout`` (used when given).
        max_size: Largest incoming message, bytes (larger: the socket closes with 1009).
        max_buffer: Notifications buffered per subscription before dropping (see
            :class:`Subscription`).
        transport: Opens sockets; :class:`~giosg_visitor.realtime._transport.WebSocketTransport`
            by default.

    The keepalive, the idle watchdog and the SockJS open deadline run as calls on the
    event loop's one timer task (shared by every connection and visitor on the same
    clock), not as tasks of their own.
    """

    # Slots: 38 attributes would overflow a shared-key instance dict (1.6 KiB each).
    __slots__ = (
        "_allowed_hosts",
        "_channels",
        "_clock",
        "_close_timeout",
        "_drop",
        "_entered",
        "_exited",
        "_fatal",
        "_framing",
        "_has_opened",
        "_idle_timeout",
        "_is_open",
        "_listeners",
        "_max_buffer",
        "_max_size",
        "_next_query",
        "_open_timeout",
        "_ping_interval",
        "_ping_timeout",
        "_rng",
        "_rx_count",
        "_rx_pulse",
        "_socket_group",
        "_socket_scope",
        "_socket_url",
        "_state",
        "_state_pulse",
        "_stats",
        "_strategies",
        "_timers",
        "_tokens",
        "_tracker",
        "_transport",
        "_watches_frames",
        "_writer_args",
        "_writing",
    )

    def __init__(
        self,
        *,
        socket_url: str | Callable[[], str],
        token_source: TokenSource | None = None,
        token_provider: Callable[[], Awaitable[Secret]] | None = None,
        renew_token: Callable[[], Awaitable[object]] | None = None,
        token_refused: Callable[[Secret], Awaitable[bool]] | None = None,
        clock: Clock | None = None,
        reconnect: ReconnectPolicy | None = None,
        strategy: SocketStrategy = "raw",
        framing: Literal["auto", "raw", "sockjs"] = "auto",
        allowed_hosts: Sequence[str] = DEFAULT_ALLOWED_HOSTS,
        rng: random.Random | None = None,
        open_timeout: float = 10.0,
        ping_interval: float | None = 20.0,
        ping_timeout: float = 20.0,
        close_timeout: float = 5.0,
        idle_timeout: float | None = 60.0,
        sockjs_idle_timeout: float | None = None,
        max_size: int = 2**20,
        max_buffer: int = 1000,
        transport: SocketTransport | None = None,
        _timers: Timers | None = None,
    ) -> None:
        if strategy not in SOCKET_STRATEGIES:
            raise ValueError(
                f"strategy must be one of {', '.join(SOCKET_STRATEGIES)}, not {strategy!r}"
            )
        if framing not in ("auto", "raw", "sockjs"):
            raise ValueError(f"framing must be 'auto', 'raw' or 'sockjs', not {framing!r}")
        if max_buffer < 1:
            raise ValueError("max_buffer must be at least 1")
        if isinstance(allowed_hosts, str):
            raise TypeError("allowed_hosts must be a sequence of host patterns, not a str")
        self._socket_url = socket_url
        self._clock: Clock = clock if clock is not None else SystemClock()
        if (token_source is None) == (token_provider is None):
            raise TypeError("give either token_source or token_provider")
        if token_source is None:
            assert token_provider is not None
            token_source = CallbackTokens(
                token_provider, renew=renew_token, refused=token_refused, clock=self._clock
            )
        elif renew_token is not None or token_refused is not None:
            raise TypeError("renew_token and token_refused go with token_provider")
        self._tokens: TokenSource = token_source
        self._tracker = ReconnectTracker(policy=reconnect or ReconnectPolicy())
        self._strategies = StrategyChooser(strategy=strategy, framing=framing)
        self._framing: Framing = self._strategies.framing_for(
            "raw" if strategy == "auto" else strategy
        )
        self._allowed_hosts = tuple(allowed_hosts)
        self._rng = rng if rng is not None else _SHARED_RNG
        self._open_timeout = open_timeout
        self._ping_interval = ping_interval
        self._ping_timeout = ping_timeout
        self._close_timeout = close_timeout
        if sockjs_idle_timeout is not None:
            idle_timeout = sockjs_idle_timeout
        if idle_timeout is not None and idle_timeout <= 0:
            raise ValueError("idle_timeout must be positive (or None)")
        self._idle_timeout = idle_timeout
        self._max_size = max_size
        self._max_buffer = max_buffer
        self._transport: SocketTransport = (
            transport if transport is not None else WebSocketTransport(wall_time=self._clock.time)
        )

        self._state = ConnectionState.CONNECTING
        self._entered = False
        self._exited = False
        self._fatal: BaseException | None = None
        self._has_opened = False
        self._listeners: list[ConnectionEvents] = []
        self._next_query = 1
        self._stats = ConnectionStats()
        self._channels = ChannelTable(stats=self._stats)
        # Per-socket state, valid while a socket is being served.
        self._is_open = False
        self._drop: Drop | None = None
        self._socket_scope: anyio.CancelScope | None = None
        #: Inbound frames on the current socket (a counter: cheaper than a clock read).
        self._rx_count = 0
        # Created when first awaited (an anyio.Event costs ~0.9 KiB on asyncio).
        self._state_pulse: anyio.Event | None = None
        self._rx_pulse: anyio.Event | None = None
        # The writer task runs only while there is something to send.
        self._socket_group: anyio.abc.TaskGroup | None = None
        self._writer_args: tuple[SocketConnection, RealtimeProtocol] | None = None
        self._writing = False
        self._watches_frames = False
        # The loop's shared timers (set when entered), unless given.
        self._timers = _timers

    def __repr__(self) -> str:
        return (
            f"<RealtimeConnection state={self._state.name} channels={len(self._channels)}"
            f" strategy={self._strategies.setting}>"
        )

    # Public API.

    @property
    def state(self) -> ConnectionState:
        """The current :class:`ConnectionState`."""
        return self._state

    @property
    def strategy(self) -> str | None:
        """The URL derivation that worked (``"raw"``, ``"sockjs"``, ``"as_is"``), once known."""
        return self._strategies.in_use

    @property
    def strategy_refusals(self) -> list[StrategyRefusal]:
        """What ``"auto"`` tried and was refused, in order (empty once it is used up)."""
        return self._strategies.refusals

    @property
    def stats(self) -> ConnectionStats:
        """Cumulative counters (live object)."""
        return self._stats

    @property
    def channels(self) -> list[str]:
        """The channels currently wanted, in subscription order."""
        return self._channels.names()

    def subscribe(self, channel: str) -> Subscription:
        """Subscribe to ``channel`` (non-blocking: the ``sub`` is sent by the writer task).

        Args:
            channel: The channel, e.g. ``/api/v5/public/visitors/<id>/chats``.

        Returns:
            The subscription; ``await subscription.wait_subscribed()`` for the server's ack.

        Raises:
            RuntimeError: The connection is not entered or already closed.
            GiosgError: The connection failed for good (its error).
        """
        return self.subscribe_many([channel])[0]

    def subscribe_many(self, channels: Iterable[str]) -> list[Subscription]:
        """Subscribe to several channels at once: all ``sub`` messages leave together.

        Args:
            channels: The channels.

        Returns:
            One subscription per channel, in order.

        Raises:
            RuntimeError: The connection is not entered or already closed.
            GiosgError: The connection failed for good (its error).
        """
        if isinstance(channels, str):
            raise TypeError("channels must be an iterable of channel names, not a str")
        names = list(channels)
        for name in names:
            if not isinstance(name, str) or not name:
                raise ValueError("a channel must be a non-empty str")
        self._check_usable()
        subscriptions = []
        for name in names:
            subscription = Subscription(self, name, max_buffer=self._max_buffer)
            self._channels.add(name, subscription)
            subscriptions.append(subscription)
        self._wake_writer()
        return subscriptions

    async def reauthorize(self) -> None:
        """Send ``sub`` again for every channel, with the freshest token, on this socket.

        Call it after each token renewal, before the old token expires: the server then
        holds the new token for every subscription (re-subscribing is idempotent). Returns
        when the server answered every ``sub``, or at once if no socket is open (the next
        socket uses the freshest token anyway).

        Raises:
            RuntimeError: The connection is not entered or already closed.
            GiosgError: The connection failed for good (its error).
        """
        self._check_usable()
        done = anyio.Event()
        if self._channels.reauthorize(done.set) is None:
            await anyio.lowlevel.checkpoint()
            return
        self._wake_writer()
        await done.wait()
        if self._fatal is not None:
            raise self._fatal

    async def wait_connected(self) -> None:
        """Wait until a socket is open.

        Raises:
            ConnectionClosedError: The connection was closed by its owner.
            GiosgError: The connection failed for good (its error).
        """
        if not self._entered:
            raise RuntimeError("the connection is not open; use 'async with'")
        while True:
            if self._fatal is not None:
                raise self._fatal
            if self._state is ConnectionState.OPEN:
                return
            if self._state is ConnectionState.CLOSED or self._exited:
                raise ConnectionClosedError("the real-time connection is closed")
            if self._state_pulse is None:
                self._state_pulse = anyio.Event()
            await self._state_pulse.wait()

    def events(self) -> ConnectionEvents:
        """Return a stream of the connection events emitted from now on.

        Raises:
            RuntimeError: The connection is not entered or already closed.
        """
        if not self._entered or self._exited:
            raise RuntimeError("the connection is not open; use 'async with'")
        listener = ConnectionEvents(self, max_buffer=_EVENTS_BUFFER)
        if self._state is ConnectionState.CLOSED:
            listener._end()
        else:
            self._listeners.append(listener)
        return listener

    @asynccontextmanager
    async def __asynccontextmanager__(self) -> AsyncIterator[Self]:
        if self._entered:
            raise RuntimeError("a RealtimeConnection can be entered only once")
        self._entered = True
        body_error: BaseException | None = None
        try:
            async with anyio.create_task_group() as task_group:
                if self._timers is None:
                    self._timers = loop_timers(self._clock)
                task_group.start_soon(self._run, name="giosg_visitor realtime connection")
                try:
                    yield self
                except BaseException as exc:
                    # Re-raised below, outside the task group: the owner gets its own
                    # exception back, never wrapped in an ExceptionGroup.
                    body_error = exc
                finally:
                    task_group.cancel_scope.cancel()
        finally:
            self._shutdown()
        if body_error is not None:
            raise body_error

    # Connection loop.

    async def _run(self) -> None:
        try:
            await self._run_forever()
        except Exception as exc:
            # A bug (ours or a provider's): report it through the API, do not crash the
            # owner's task group.
            logger.warning("the real-time connection crashed: %s", type(exc).__name__)
            self._fail(exc, code=None, reason=type(exc).__name__)

    async def _run_forever(self) -> None:
        while True:
            socket_url = self._current_socket_url()
            host = socket_host(socket_url)
            derivation = self._strategies.pick(host)
            self._framing = self._strategies.framing_for(derivation)
            try:
                url = socket_endpoint(
                    socket_url,
                    strategy=derivation,
                    allowed_hosts=self._allowed_hosts,
                    rng=self._rng,
                )
            except UntrustedEndpointError as exc:
                self._fail(exc, code=None, reason="untrusted socket_url")
                return
            self._strategies.begin(derivation, host)
            outcome = self._strategies.dropped(
                await self._connect_and_serve(url), self._clock.monotonic()
            )
            if outcome is None:
                continue  # "auto": not a failure of the link, try the next strategy now
            drop = outcome
            self._stats.drops += 1
            decision = self._tracker.failed(
                self._clock.monotonic(), drop.verdict, self._rng.random()
            )
            if decision.action is CloseAction.FAIL:
                error = drop.error
                if error is None:
                    error = ConnectionClosedError(
                        f"the socket closed with code {drop.code}",
                        code=drop.code,
                        reason=drop.reason,
                    )
                self._fail(error, code=drop.code, reason=drop.reason)
                return
            self._set_state(
                ConnectionState.RECONNECTING if self._has_opened else ConnectionState.CONNECTING
            )
            self._emit(Disconnected(code=drop.code, reason=drop.reason, retry_in=decision.delay))
            logger.info(
                "real-time socket lost (code %s, %s); retrying in %.2f s%s",
                drop.code,
                drop.reason,
                decision.delay,
                " (suspended)" if decision.suspended else "",
            )
            if decision.action is CloseAction.RENEW_THEN_RECONNECT:
                try:
                    await self._tokens.renew()
                except SessionError as exc:
                    self._fail(exc, code=drop.code, reason="token renewal failed")
                    return
                except GiosgError as exc:
                    logger.info("token renewal failed (%s); retrying later", type(exc).__name__)
            await self._clock.sleep(decision.delay)

    async def _connect_and_serve(self, url: str) -> Drop:
        try:
            async with self._transport.connect(
                url,
                open_timeout=self._open_timeout,
                # Keepalive is ours (see _keepalive.py): faster teardown, SockJS-aware.
                ping_interval=None,
                ping_timeout=None,
                close_timeout=self._close_timeout,
                max_size=self._max_size,
            ) as socket:
                return await self._serve(socket)
        except (GiosgError, OSError) as exc:
            return Drop.from_error(exc)

    async def _serve(self, socket: SocketConnection) -> Drop:
        self._strategies.opened(self._clock.monotonic())
        protocol = RealtimeProtocol(
            framing=self._framing,
            first_query=self._next_query,
            stats=self._stats.protocol,
        )
        self._drop = None
        self._rx_count = 0
        watch_frames = getattr(socket, "watch_frames", None)
        self._watches_frames = watch_frames is not None
        if watch_frames is not None:
            watch_frames(self._on_frame)
        timers = self._timers
        assert timers is not None  # set while entered
        # Timed checks of this socket, stopped when it ends.
        watches: list[TimedKeepalive | IdleWatchdog | Timer] = []
        try:
            async with anyio.create_task_group() as task_group:
                self._socket_scope = task_group.cancel_scope
                self._socket_group = task_group
                self._writer_args = (socket, protocol)
                try:
                    if self._framing == "raw":
                        self._on_open()
                    interval = self._ping_interval
                    if interval is not None:
                        send_ping = getattr(socket, "send_ping", None)
                        if send_ping is not None:
                            watches.append(
                                TimedKeepalive(
                                    self,
                                    socket,
                                    send_ping,
                                    interval=interval,
                                    timeout=self._ping_timeout,
                                    timers=timers,
                                    group=task_group,
                                )
                            )
                        else:
                            task_group.start_soon(
                                keepalive_task, self, socket, interval, self._ping_timeout
                            )
                    if self._framing == "sockjs":
                        # The WebSocket is up; a SockJS session starts with its "o" frame.
                        watches.append(timers.call_later(self._open_timeout, self._check_opened))
                    idle_timeout = self._watchdog_timeout()
                    if idle_timeout is not None:
                        watches.append(IdleWatchdog(self, idle_timeout, timers))
                    # The read loop runs in this task (one task less per connection, ~3 KiB);
                    # it ends through _lost(), which cancels the others.
                    await self._reader(socket, protocol)
                finally:
                    # Once the body is left the group takes no new task (trio raises and
                    # the writer's coroutine would never run): no writer may start now,
                    # and no timed check may start a task or report a loss.
                    self._socket_group = None
                    for watch in watches:
                        watch.cancel()
        finally:
            if watch_frames is not None:
                watch_frames(None)
            self._next_query = max(self._next_query, protocol.next_query)
            self._on_socket_end()
        drop = self._drop
        if drop is None:  # pragma: no cover - every task ends through _lost()
            drop = Drop(
                code=_ABNORMAL_CLOSURE,
                reason="socket ended",
                verdict=classify_close(_ABNORMAL_CLOSURE),
            )
        if drop.abort:
            await socket.abort()
        else:
            await socket.close()
        return drop

    async def _reader(self, socket: SocketConnection, protocol: RealtimeProtocol) -> None:
        pace = max(1, min(_READER_PACE, self._max_buffer // 2))
        burst = 0
        recv = socket.recv
        receive = protocol.receive_notification
        route = self._channels.route
        checkpoint = anyio.lowlevel.checkpoint
        try:
            while True:
                try:
                    text = await recv()
                except BinaryFrameError:
                    self._stats.binary_frames += 1
                    self._touch()
                    logger.debug("skipped a binary frame")
                    continue
                self._touch()
                change = receive(text)
                if change is not None:
                    # The hot path: one notification, routed to its subscribers.
                    gap = route(change)
                    if gap is not None:
                        self._emit(gap)
                else:
                    for event in protocol.events_received():
                        self._dispatch(event)
                # websockets returns queued frames without suspending: a burst of
                # hundreds would fill the subscriptions' buffers before their consumers
                # ran once (everything past max_buffer dropped as a Gap). Let them drain
                # every few frames (cheap: one loop iteration).
                burst += 1
                if burst >= pace:
                    burst = 0
                    await checkpoint()
        except (GiosgError, OSError) as exc:
            self._lost(Drop.from_error(exc))

    async def _writer(self, socket: SocketConnection, protocol: RealtimeProtocol) -> None:
        # Started by _wake_writer; ends when the outbox is empty (no await between the
        # last check and clearing _writing, so nothing queued meanwhile is stranded).
        try:
            while self._is_open and self._channels.has_work:
                ops = self._channels.take()
                await self._apply(ops, protocol)
                for frame in protocol.data_to_send():
                    await socket.send(frame)
        except Exception as exc:
            await self._lost_after_grace(exc)
        finally:
            self._writing = False

    async def _lost_after_grace(self, exc: Exception) -> None:
        """Report a send failure, letting the reader report a better reason first.

        When the reader reports, it cancels this socket's scope, and so this sleep.
        """
        grace = send_failure_grace(exc)
        if grace:
            await anyio.sleep(grace)
        self._lost(Drop.from_error(exc))

    async def _apply(self, ops: list[Op], protocol: RealtimeProtocol) -> None:
        token: Secret | None = None
        if ChannelTable.needs_token(ops):
            token = await self._tokens.fresh()
            if token in ChannelTable.refused_tokens(ops) and await self._tokens.refused(token):
                # The server refused this very token (revoked, or its clock is ahead of
                # ours): like an HTTP 401, renew. One renewal serves every refused
                # channel: the writer is single, and later retries see the new token.
                token = await self._tokens.fresh()
        self._channels.write(ops, token, protocol)

    def _check_opened(self) -> None:
        if not self._is_open:
            self._lost(
                Drop(
                    code=_ABNORMAL_CLOSURE,
                    reason="no SockJS open frame",
                    verdict=Verdict(kind=FailureKind.PROTOCOL),
                    abort=True,
                )
            )

    def _watchdog_timeout(self) -> float | None:
        """The idle timeout for this socket's watchdog; ``None``: no watchdog.

        ``None`` when nothing guarantees traffic, and when our own keepalive already
        drops a silent link at least as soon: it pings every ``ping_interval`` and drops
        the socket when no frame at all arrives within ``ping_timeout``, so a link quiet
        for ``ping_interval + ping_timeout`` is gone before an idle timeout at least that
        long could fire.
        """
        idle = self._idle_timeout
        if idle is None:
            return None
        interval = self._ping_interval
        if self._framing != "sockjs":
            if interval is None:
                return None  # a raw endpoint need not send anything on a quiet channel
            idle = max(idle, interval + self._ping_timeout)
        # (A SockJS server heartbeats every session, so any idle timeout applies there.)
        if interval is not None and idle >= interval + self._ping_timeout:
            return None
        return idle

    # Event handling (runs on the read loop: never awaits).

    def _dispatch(self, event: ProtocolEvent) -> None:
        if isinstance(event, Change):
            gap = self._channels.route(event)
            if gap is not None:
                self._emit(gap)
        elif isinstance(event, SubscribeAck):
            self._strategies.proved()
            if self._channels.acked(event):
                self._tracker.authorized()
        elif isinstance(event, SubscribeFailed):
            self._strategies.proved()
            if self._channels.refused(event, self._tokens.is_fresh):
                self._wake_writer()
        elif isinstance(event, Opened):
            self._strategies.proved()
            if not self._is_open:
                self._on_open()
        elif isinstance(event, Closed):
            self._lost(
                Drop(
                    code=event.code,
                    reason=redact(event.reason),
                    verdict=classify_close(event.code),
                )
            )
        # Heartbeat and UnsubscribeAck need nothing beyond _touch().

    # State changes.

    def _on_open(self) -> None:
        self._is_open = True
        self._stats.opens += 1
        self._tracker.connected(self._clock.monotonic())
        self._set_state(ConnectionState.OPEN)
        self._emit(Reconnected() if self._has_opened else Connected())
        if self._has_opened:
            logger.info("real-time socket reopened; resubscribing %d channels", len(self._channels))
        self._has_opened = True
        # A new socket has no subscriptions: (re)subscribe everything in one batch.
        self._channels.opened()
        self._wake_writer()

    def _on_socket_end(self) -> None:
        self._is_open = False
        self._socket_scope = None
        self._socket_group = None
        self._writer_args = None
        self._channels.socket_ended()

    def _lost(self, drop: Drop) -> None:
        if self._drop is None:
            self._drop = drop
        if self._socket_scope is not None:
            self._socket_scope.cancel()

    def _touch(self) -> None:
        self._rx_count += 1
        pulse = self._rx_pulse
        if pulse is not None:
            self._rx_pulse = None
            pulse.set()

    def _on_frame(self, kind: str) -> None:
        """A control frame arrived (called from the socket's frame processing)."""
        self._touch()

    def _fail(self, error: BaseException, *, code: int | None, reason: str) -> None:
        if self._fatal is not None or self._exited:
            return
        self._fatal = error
        logger.warning(
            "the real-time connection failed for good: %s: %s",
            type(error).__name__,
            redact(str(error)),
        )
        self._emit(Disconnected(code=code, reason=reason, retry_in=None))
        self._set_state(ConnectionState.CLOSED)
        self._channels.close(error)
        for listener in self._listeners:
            listener._end()
        self._listeners.clear()

    def _shutdown(self) -> None:
        self._exited = True
        self._is_open = False
        self._set_state(ConnectionState.CLOSED)
        self._channels.close(None, consumers_gone=True)
        for listener in self._listeners:
            listener._end()
        self._listeners.clear()

    def _set_state(self, state: ConnectionState) -> None:
        if state is self._state:
            return
        self._state = state
        pulse, self._state_pulse = self._state_pulse, None
        if pulse is not None:
            pulse.set()

    def _emit(self, event: ConnectionEvent) -> None:
        for listener in self._listeners:
            listener._put(event)

    # Helpers.

    def _check_usable(self) -> None:
        if self._fatal is not None:
            raise self._fatal
        if not self._entered or self._exited:
            raise RuntimeError("the connection is not open; use 'async with'")

    def _current_socket_url(self) -> str:
        source = self._socket_url
        return source if isinstance(source, str) else source()

    def _wake_writer(self) -> None:
        if self._writing or not self._is_open or not self._channels.has_work:
            return
        group, args = self._socket_group, self._writer_args
        if group is None or args is None:
            return
        self._writing = True
        writer = self._writer(*args)
        try:
            group.start_soon(lambda: writer)
        except RuntimeError:
            # The socket's task group is closing (trio refuses new tasks then): close the
            # coroutine so it is not reported as "never awaited" at exit.
            writer.close()
            self._writing = False
            raise

    def _unsubscribe(self, subscription: Subscription) -> None:
        self._channels.remove(subscription.channel, subscription)
        self._wake_writer()

    def _remove_listener(self, listener: ConnectionEvents) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)
