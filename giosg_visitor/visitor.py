"""The :class:`Visitor`: one Giosg visitor, its token, and (later) its socket and chats."""

from __future__ import annotations

import functools
import logging
import random
import ssl
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AsyncExitStack
from typing import Any, Final, Literal, Self, final

import anyio
import anyio.abc
import httpx

from ._api import VisitorAPI
from ._auth import InvalidSecretPolicy, SessionState, SocketTokens, VisitorAuth, VisitorSession
from ._clock import Clock, SystemClock
from ._facts import SocketStrategy
from ._host import spawn_root_task
from ._http import (
    DEFAULT_BASE_URL,
    USER_AGENT,
    ResponseLimits,
    Timeouts,
    check_credential_url,
)
from ._lifecycle import AsyncResource
from ._limiter import background
from ._renewal import RenewalPolicy, RetryPolicy
from ._renewer import ScheduledRenewal
from ._timers import loop_timers
from .chat import Chat
from .errors import (
    ClosedError,
    GiosgError,
    NotFoundError,
    SubscriptionError,
)
from .models import ChatInfo, IdentityChange, Room
from .realtime import (
    DEFAULT_ALLOWED_HOSTS,
    Change,
    Connected,
    ConnectionEvents,
    Disconnected,
    Gap,
    RealtimeConnection,
    ReconnectPolicy,
    Resubscribed,
    Subscription,
    SubscriptionEvent,
)
from .rooms import OnlineOperators
from .stores import OrganizationSession
from .stores.base import Store, check_key
from .stores.memory import MemoryStore


__all__ = ["Visitor"]

logger = logging.getLogger("giosg_visitor.visitor")

#: Chat changes held while the known chats are re-read; past this, another round of
#: reads covers them (like a subscription buffer's overflow Gap).
_MAX_HELD_CHAT_CHANGES: Final = 1000


@functools.cache
def _shared_ssl_context() -> ssl.SSLContext:
    """httpx's default certificate verification context, created once per process."""
    return httpx.create_ssl_context()


async def shared_ssl_context() -> ssl.SSLContext:
    """:func:`_shared_ssl_context`, made in a worker thread the first time: loading the CA
    bundle takes about 0.1 s of CPU, which would hold up every task of the event loop."""
    if _shared_ssl_context.cache_info().currsize:
        return _shared_ssl_context()
    return await anyio.to_thread.run_sync(_shared_ssl_context)


@final
class Visitor(AsyncResource):
    """A program acting as one visitor in Giosg live chat.

    Use it as an async context manager: entering authenticates a new visitor or resumes
    the one stored under ``key`` (reusing a stored token while it has a safe margin left),
    and starts background renewal; leaving stops everything. ``await visitor.aclose()``
    does the same as leaving.

    Example:
        >>> async with Visitor(ORG_ID, store=FileStore("visitor.json")) as visitor:
        ...     print(visitor.visitor_id)

    Args:
        organization_id: The Giosg organization (UUID).
        base_url: The API origin. Must be https (plain http only to loopback).
        store: Where the secret and the latest session are kept. Defaults to a fresh
            :class:`~giosg_visitor.MemoryStore` (forgotten at exit).
        key: The caller's own id for this visitor inside a shared store (for a bridge:
            its end user's id).
        http_client: An ``httpx.AsyncClient`` to share (not closed by the visitor).
            Redirects are never followed on credentialed requests either way.
        timeouts: Transport limits (``request`` bounds one HTTP attempt as a whole).
        limits: How large a response body may be (auth 1 MiB, other calls 16 MiB) and how
            much of an auth response's unknown fields is stored.
        renewal: When to renew (see :class:`~giosg_visitor.RenewalPolicy`).
        retry: How to retry transient auth failures.
        on_invalid_secret: ``"raise"`` (default) raises
            :class:`~giosg_visitor.InvalidSecretError` when the stored secret is rejected;
            ``"new_visitor"`` starts a new visitor and reports it in
            :attr:`identity_change`.
        realtime: Open the real-time socket (default). Without it, chats still work
            over REST but nothing is live.
        socket_strategy: How ``socket_url`` becomes a WebSocket URL: ``"auto"``
            (default) tries ``"raw"`` (``<socket_url>/websocket``), then ``"sockjs"``
            (``<socket_url>/<server>/<session>/websocket``), then ``"as_is"``
            (``socket_url`` itself), and remembers per socket host what worked; or one
            of those three explicitly.
        socket_framing: ``"auto"`` (default: SockJS framing on the ``"sockjs"`` URL, one
            JSON message per frame otherwise), ``"raw"`` or ``"sockjs"``.
        socket_hosts: Host patterns ``socket_url`` may point to (giosg.com hosts by
            default; loopback is always allowed for tests).
        reconnect: Socket reconnect backoff.
        ping_interval: Seconds between socket keepalive pings (``None``: off).
        ping_timeout: Seconds a pong may take before the link counts as dead.
        socket_idle_timeout: Seconds without any inbound socket frame (data, SockJS
            heartbeat, WebSocket ping or pong) after which the socket is dropped and
            reopened (``None``: off). Every frame counts, so a quiet healthy socket is
            never dropped; on a raw endpoint the watchdog waits at least ``ping_interval +
            ping_timeout``.
        presence_expires_in: Room presence lifetime sent by :meth:`join_room`.
        clock: The time source (tests pass ``giosg_visitor.testing.FakeClock``).
        rng: Random draws in ``[0, 1)`` for jitter.
    """

    # Slots: over 30 attributes would overflow a shared-key instance dict (1.6 KiB each).
    __slots__ = (
        "__weakref__",
        "_api",
        "_base_url",
        "_chat_started",
        "_chats",
        "_client",
        "_clock",
        "_closed",
        "_connection",
        "_entered",
        "_held_chat_changes",
        "_host_done",
        "_host_error",
        "_host_stop",
        "_key",
        "_limits",
        "_on_invalid_secret",
        "_organization_id",
        "_ping_interval",
        "_ping_timeout",
        "_presence_expires_in",
        "_realtime_enabled",
        "_reconnect",
        "_refresh_chats_again",
        "_renewal",
        "_retry",
        "_rng",
        "_rooms_joined",
        "_session",
        "_shared_client",
        "_socket_framing",
        "_socket_hosts",
        "_socket_idle_timeout",
        "_socket_strategy",
        "_socket_tokens",
        "_stack",
        "_store",
        "_task_group",
        "_timeouts",
    )

    def __init__(
        self,
        organization_id: str,
        *,
        base_url: str = DEFAULT_BASE_URL,
        store: Store | None = None,
        key: str = "default",
        http_client: httpx.AsyncClient | None = None,
        timeouts: Timeouts | None = None,
        limits: ResponseLimits | None = None,
        renewal: RenewalPolicy | None = None,
        retry: RetryPolicy | None = None,
        on_invalid_secret: InvalidSecretPolicy = "raise",
        realtime: bool = True,
        socket_strategy: SocketStrategy = "auto",
        socket_framing: Literal["auto", "raw", "sockjs"] = "auto",
        socket_hosts: Sequence[str] = DEFAULT_ALLOWED_HOSTS,
        reconnect: ReconnectPolicy | None = None,
        ping_interval: float | None = 20.0,
        ping_timeout: float = 20.0,
        socket_idle_timeout: float | None = 60.0,
        presence_expires_in: int = 60,
        clock: Clock | None = None,
        rng: Callable[[], float] = random.random,
    ) -> None:
        if not isinstance(organization_id, str) or not organization_id:
            raise ValueError("organization_id must be a non-empty string")
        if on_invalid_secret not in ("raise", "new_visitor"):
            raise ValueError('on_invalid_secret must be "raise" or "new_visitor"')
        self._organization_id = organization_id
        self._base_url = check_credential_url(base_url, what="base_url")
        self._store: Store = store if store is not None else MemoryStore()
        self._key = check_key(key)
        self._timeouts = timeouts or Timeouts()
        self._limits = limits or ResponseLimits()
        self._renewal = renewal or RenewalPolicy()
        self._retry = retry or RetryPolicy()
        self._on_invalid_secret: InvalidSecretPolicy = on_invalid_secret
        self._clock = clock or SystemClock()
        self._rng = rng
        self._realtime_enabled = realtime
        self._socket_strategy: SocketStrategy = socket_strategy
        self._socket_framing: Literal["auto", "raw", "sockjs"] = socket_framing
        self._socket_hosts = tuple(socket_hosts)
        self._reconnect = reconnect
        self._ping_interval = ping_interval
        self._ping_timeout = ping_timeout
        self._socket_idle_timeout = socket_idle_timeout
        if presence_expires_in < 1:
            raise ValueError("presence_expires_in must be at least 1 second")
        self._presence_expires_in = presence_expires_in
        self._api: VisitorAPI | None = None
        self._connection: RealtimeConnection | None = None
        self._task_group: anyio.abc.TaskGroup | None = None
        # While a refresh of the known chats runs: the chats channel's changes, applied
        # after its reads (a change newer than a read's answer must not be overwritten).
        self._held_chat_changes: list[Change] | None = None
        self._refresh_chats_again = False
        self._chats: weakref.WeakValueDictionary[str, Chat] = weakref.WeakValueDictionary()
        self._rooms_joined: set[str] = set()
        self._socket_tokens: SocketTokens | None = None
        self._shared_client = http_client
        self._client: httpx.AsyncClient | None = None
        self._session: VisitorSession | None = None
        self._stack: AsyncExitStack | None = None
        self._entered = False
        self._closed = False
        # Set when started with start() (a root host task owns the `async with`).
        self._host_stop: anyio.Event | None = None
        self._host_done: anyio.Event | None = None
        # Set by a clustered VisitorPool: a started chat makes the key active.
        self._chat_started: Callable[[str], Awaitable[None]] | None = None
        self._host_error: BaseException | None = None

    # Properties ---------------------------------------------------------------------------

    @property
    def organization_id(self) -> str:
        """The organization this visitor belongs to."""
        return self._organization_id

    @property
    def key(self) -> str:
        """The store key (the caller's own id for this visitor)."""
        return self._key

    @property
    def store(self) -> Store:
        """The store holding this visitor's secret and session."""
        return self._store

    @property
    def visitor_id(self) -> str:
        """The public visitor id in this organization (32 hex characters).

        Raises:
            RuntimeError: The visitor has not been started.
        """
        return self._org_session().visitor_id

    @property
    def socket_url(self) -> str:
        """The real-time socket URL from the latest auth response."""
        return self._org_session().socket_url

    @property
    def state(self) -> SessionState:
        """The session state (``ANONYMOUS`` before start, ``CLOSED`` after)."""
        if self._closed:
            return SessionState.CLOSED
        if self._session is None:
            return SessionState.ANONYMOUS
        return self._session.state

    @property
    def identity_change(self) -> IdentityChange | None:
        """Set when the stored secret was rejected and a new visitor took its place."""
        return self._session.identity_change if self._session is not None else None

    @property
    def auth(self) -> httpx.Auth:
        """An ``httpx.Auth`` that signs requests as this visitor (Bearer, renewed)."""
        return VisitorAuth(self._require_session(), body_limit=self._limits.api)

    @property
    def http_client(self) -> httpx.AsyncClient:
        """The ``httpx.AsyncClient`` this visitor uses."""
        if self._client is None:
            raise RuntimeError("the visitor has not been started")
        return self._client

    @property
    def base_url(self) -> httpx.URL:
        """The API origin."""
        return self._base_url

    # Lifecycle ----------------------------------------------------------------------------

    async def _aopen(self) -> None:
        if self._entered:
            raise RuntimeError("a Visitor can be started only once; create a new one")
        self._entered = True
        stack = AsyncExitStack()
        await stack.__aenter__()
        try:
            if self._shared_client is not None:
                self._client = self._shared_client
            else:
                client = httpx.AsyncClient(
                    timeout=self._timeouts.httpx_timeout(),
                    follow_redirects=False,
                    headers={"User-Agent": USER_AGENT},
                    # One SSL context per process: each new one loads the CA bundle again
                    # (~0.8 MiB of OpenSSL memory per visitor).
                    verify=await shared_ssl_context(),
                )
                self._client = client
                stack.push_async_callback(self._close_client, client)
            session = VisitorSession(
                organization_id=self._organization_id,
                base_url=self._base_url,
                client=self._client,
                store=self._store,
                key=self._key,
                clock=self._clock,
                policy=self._renewal,
                retry=self._retry,
                rng=self._rng,
                on_invalid_secret=self._on_invalid_secret,
                limits=self._limits,
                request_timeout=self._timeouts.request,
            )
            await session.start()
            self._session = session
            self._socket_tokens = SocketTokens(session)
            # Runs after the background tasks have stopped, before the client closes.
            stack.push_async_callback(self._save_before_close, session)
            self._api = VisitorAPI(
                client=self._client,
                auth=VisitorAuth(session, body_limit=self._limits.api),
                base_url=self._base_url,
                organization_id=self._organization_id,
                visitor_id=lambda: self.visitor_id,
                clock=self._clock,
                retry=self._retry,
                rng=self._rng,
                limits=self._limits,
                request_timeout=self._timeouts.request,
            )
            # The loop's one timer task runs every visitor's keepalive and renewal.
            timers = loop_timers(self._clock)
            if self._realtime_enabled:
                # Entered before the task group, so background tasks stop before the socket.
                self._connection = await stack.enter_async_context(
                    RealtimeConnection(
                        socket_url=lambda: self.socket_url,
                        token_source=self._socket_tokens,
                        clock=self._clock,
                        reconnect=self._reconnect,
                        strategy=self._socket_strategy,
                        framing=self._socket_framing,
                        allowed_hosts=self._socket_hosts,
                        open_timeout=self._timeouts.socket_open,
                        ping_interval=self._ping_interval,
                        ping_timeout=self._ping_timeout,
                        idle_timeout=self._socket_idle_timeout,
                        close_timeout=self._timeouts.close,
                        _timers=timers,
                    )
                )
                # Listen before the connection's first attempt can report (no checkpoint
                # has passed since entering it, so its task has not run yet).
                first_events = self._connection.events()
            task_group = await stack.enter_async_context(anyio.create_task_group())
            stack.callback(task_group.cancel_scope.cancel)
            self._task_group = task_group
            renewal = ScheduledRenewal(
                session,
                timers=timers,
                group=task_group,
                clock=self._clock,
                policy=self._renewal,
                retry=self._retry,
                rng=self._rng,
                reauthorize=functools.partial(self._reauthorize_socket, session),
            )
            # Runs before the task group exits: no renewal may start into a closing group.
            stack.callback(renewal.cancel)
            if self._connection is not None:
                task_group.start_soon(self._refresh_stale_socket_url, session, first_events)
                await self._follow_chats(self._connection, stack)
        except BaseException:
            await stack.__aexit__(None, None, None)
            self._closed = True
            raise
        self._stack = stack
        logger.debug("visitor %s started", self.visitor_id)

    async def start(self) -> Self:
        """Start without an ``async with`` block, for notebooks and REPLs.

        A notebook runs each cell as its own task, and an ``async with`` entered in one
        cell cannot be left in another. ``start()`` hands the visitor's lifetime to a
        host task of the running loop instead; :meth:`aclose` ends it from any task.

        Example:
            >>> visitor = await Visitor(ORG_ID).start()   # one cell
            >>> await visitor.aclose()                    # a later cell

        Returns:
            The started visitor.

        Raises:
            GiosgError: Starting failed (as for ``async with``).
        """
        if self._entered or self._host_stop is not None:
            raise RuntimeError("a Visitor can be started only once; create a new one")
        ready, stop, done = anyio.Event(), anyio.Event(), anyio.Event()
        self._host_stop, self._host_done = stop, done

        async def host() -> None:
            try:
                await self._aopen()
                try:
                    ready.set()
                    await stop.wait()
                finally:
                    # Not aclose(): for a started visitor it waits for this very task.
                    await self._close_here()
            except BaseException as exc:  # reported to start() or aclose(); never lost
                self._host_error = exc
            finally:
                ready.set()
                done.set()

        spawn_root_task(host)
        await ready.wait()
        if self._host_error is not None:
            raise self._host_error
        return self

    async def aclose(self) -> None:
        """Stop background work and release resources. Safe to call twice.

        Works from any task for a visitor started with :meth:`start`.
        """
        if self._host_stop is not None and self._host_done is not None:
            self._host_stop.set()
            await self._host_done.wait()
            error, self._host_error = self._host_error, None
            if error is not None and not isinstance(error, anyio.get_cancelled_exc_class()):
                raise error
            return
        await self._close_here()

    async def _close_here(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._api is not None:
            self._api.closed = True
        if self._session is not None:
            self._session.close()
        stack, self._stack = self._stack, None
        if stack is not None:
            # Not shielded as a whole: the task group must exit in its own scope; the
            # pieces that must finish (closing the client) shield themselves.
            try:
                await stack.aclose()
            except BaseExceptionGroup as group:
                # Users never see an ExceptionGroup for a single failure.
                if len(group.exceptions) == 1:
                    raise group.exceptions[0] from group
                raise

    async def _save_before_close(self, session: VisitorSession) -> None:
        """One last try to save a renewed token the store could not take while running."""
        if not session.has_unsaved:
            return
        with anyio.move_on_after(self._timeouts.close, shield=True):
            if await session.save_unsaved():
                return
        logger.warning("closing with a renewed token the store never took; it is not saved")

    async def _close_client(self, client: httpx.AsyncClient) -> None:
        with anyio.move_on_after(self._timeouts.close, shield=True):
            await client.aclose()

    def for_organization(self, organization_id: str) -> Visitor:
        """The same visitor (same secret, store and key) in another organization.

        The returned visitor is not started: use it as an async context manager. It
        shares this visitor's HTTP client when this one is running.
        """
        return Visitor(
            organization_id,
            base_url=str(self._base_url),
            store=self._store,
            key=self._key,
            http_client=self._client if self._client is not None else self._shared_client,
            timeouts=self._timeouts,
            limits=self._limits,
            renewal=self._renewal,
            retry=self._retry,
            on_invalid_secret=self._on_invalid_secret,
            clock=self._clock,
            rng=self._rng,
        )

    async def renew(self) -> None:
        """Renew the access token now (single-flight with any renewal in progress)."""
        session = self._require_session()
        await session.renew(stale=session.current)

    # Chats and rooms ----------------------------------------------------------------------

    async def start_chat(self, room_id: str, *, join_room: bool = True) -> Chat:
        """Start a chat in a room.

        Args:
            room_id: The room.
            join_room: Register the visitor in the room first (and keep its presence
                fresh), as Giosg's own clients do.
        """
        api = self._require_api()
        if join_room:
            await self.join_room(room_id)
        chat = self._register(await api.create_chat(room_id))
        if self._chat_started is not None:
            await self._chat_started(self._key)
        return chat

    async def chats(self) -> AsyncIterator[Chat]:
        """The visitor's chats, oldest first, following every page."""
        async for info in self._require_api().list_chats():
            yield self._register(info)

    async def chat(self, chat_id: str) -> Chat:
        """One of the visitor's chats by id (``NotFoundError`` if it is not theirs)."""
        existing = self._chats.get(chat_id)
        if existing is not None:
            return existing
        return self._register(await self._require_api().get_chat(chat_id))

    async def room(self, room_id: str) -> Room:
        """A room's public details (``is_online`` among them)."""
        return await self._require_api().get_room(room_id)

    async def brand(self, room_id: str) -> Mapping[str, Any] | None:
        """A room's brand (colours, texts, ...), or ``None`` when it has none."""
        try:
            return await self._require_api().get_brand(room_id)
        except NotFoundError:
            return None

    def online_operators(self, room_id: str) -> OnlineOperators:
        """The operators online in a room, live: ``async with`` it, read ``.current``,
        iterate for changes."""
        return OnlineOperators(room_id, api=self._require_api(), realtime=self._require_realtime())

    async def join_room(self, room_id: str) -> None:
        """Register the visitor in a room and keep its presence fresh until close.

        Presence is refreshed at half of ``presence_expires_in``. Joining a room twice
        is harmless.
        """
        api = self._require_api()
        await api.join_room(room_id, self._presence_expires_in)
        if room_id not in self._rooms_joined and self._task_group is not None:
            self._rooms_joined.add(room_id)
            self._task_group.start_soon(self._keep_present, room_id, api)

    def subscribe(self, channel: str) -> Subscription:
        """Raw channel events (``Change``, and ``Resubscribed``/``Gap`` markers).

        Use as ``async with visitor.subscribe(channel) as sub: async for event in sub``.
        """
        return self._require_realtime().subscribe(channel)

    @property
    def realtime(self) -> RealtimeConnection:
        """The real-time connection (state, events, stats).

        Raises:
            RuntimeError: The visitor was created with ``realtime=False`` or not started.
        """
        return self._require_realtime()

    # Internals ----------------------------------------------------------------------------

    def _require_api(self) -> VisitorAPI:
        self._require_session()
        assert self._api is not None
        return self._api

    def _require_realtime(self) -> RealtimeConnection:
        self._require_session()
        if self._connection is None:
            raise RuntimeError("this visitor has no real-time socket (created with realtime=False)")
        return self._connection

    def _register(self, info: ChatInfo) -> Chat:
        chat = self._chats.get(info.id)
        if chat is None:
            chat = Chat(info, api=self._require_api(), realtime=self._require_realtime)
            self._chats[info.id] = chat
        else:
            chat._apply(info)
        return chat

    async def _reauthorize_socket(self, session: VisitorSession) -> None:
        current = session.current
        if self._connection is None or current is None:
            return
        tokens = self._socket_tokens
        if tokens is not None and tokens.handed_out == current.access_token:
            return
        try:
            await self._connection.reauthorize()
        except GiosgError as exc:
            # The connection reconnects with the fresh token on its own.
            logger.info("re-authorising the socket failed: %s", type(exc).__name__)

    async def _keep_present(self, room_id: str, api: VisitorAPI) -> None:
        while True:
            await self._clock.sleep(self._presence_expires_in / 2)
            try:
                await api.refresh_presence(room_id, self._presence_expires_in)
            except GiosgError as exc:
                logger.warning(
                    "presence refresh in room %s failed: %s", room_id, type(exc).__name__
                )

    async def _refresh_stale_socket_url(
        self, session: VisitorSession, events: ConnectionEvents
    ) -> None:
        """If the first socket attempt with a *stored* socket_url fails, re-authenticate.

        A token reused from the store comes with the socket_url of its day; the router may
        have moved since. Auth hands out the current one, and the connection reads the
        URL afresh before every attempt.
        """
        async with events:
            async for event in events:
                if isinstance(event, Connected):
                    return
                if isinstance(event, Disconnected):
                    token = session.current
                    if token is not None and token.restored:
                        logger.info(
                            "the stored socket_url failed; re-authenticating for a fresh one"
                        )
                        try:
                            await session.renew(stale=token)
                        except GiosgError as exc:
                            logger.warning("re-authentication failed: %s", type(exc).__name__)
                    return

    async def _follow_chats(self, connection: RealtimeConnection, stack: AsyncExitStack) -> None:
        """Keep every known Chat's live state (is_ended, is_waiting, counters) current.

        No task of its own: the chats channel's events are applied on the read loop, and
        only a refresh after a resubscription or a gap runs in a short-lived task.
        """
        api = self._require_api()
        session = self._require_session()
        subscription = connection.subscribe(api.chats_channel())
        try:
            # Entering the visitor returns once the socket is open and, for a token
            # reused from the store, accepted it (or after the open timeout: the
            # connection keeps retrying in the background).
            # A fatal socket error (untrusted socket_url, ...) fails the start.
            with anyio.move_on_after(self._timeouts.socket_open):
                current = session.current
                if current is not None and not current.restored:
                    # A token auth has just issued is good: return once the socket
                    # is open, so that the caller's first subscriptions share this
                    # channel's round trip (auth + socket + N subscriptions: 3).
                    await connection.wait_connected()
                else:
                    try:
                        await subscription.wait_subscribed()
                    except SubscriptionError:
                        token = session.current
                        renamed = api.chats_channel() != subscription.channel
                        if token is None or not (token.restored or renamed):
                            raise
                        # A token reused from the store that the server no longer accepts
                        # (revoked or unknown): renew (unless the connection already did
                        # and a new visitor started); a rejected secret fails the start
                        # typed.
                        await subscription.aclose()
                        if not renamed:
                            await session.renew(stale=token)
                        # The channel names the visitor: it changes with an identity change.
                        subscription = connection.subscribe(api.chats_channel())
                        await subscription.wait_subscribed()
        except BaseException:
            subscription._release()
            raise
        # Closed before the task group is cancelled (last in, first out): no event
        # arrives while the visitor's tasks are stopping. Synchronously: see _release.
        stack.callback(subscription._release)
        subscription._set_sink(self._on_chat_event, self._on_chats_end)

    def _on_chat_event(self, event: SubscriptionEvent) -> None:
        """Fold one chats-channel event into the known chats (on the read loop: never blocks).

        In the order the channel delivered them: a change that arrives while the chats
        are re-read after a marker is held and applied after the reads.
        """
        held = self._held_chat_changes
        if isinstance(event, Resubscribed | Gap):
            if held is not None:
                self._refresh_chats_again = True
            elif self._chats and self._task_group is not None:
                self._held_chat_changes = []
                try:
                    self._task_group.start_soon(self._refresh_chats)
                except BaseException:
                    self._held_chat_changes = None
                    raise
        elif isinstance(event, Change) and event.resource is not None:
            if held is None:
                self._apply_chat_change(event)
            elif len(held) < _MAX_HELD_CHAT_CHANGES:
                held.append(event)
            else:
                held.clear()
                self._refresh_chats_again = True

    def _on_chats_end(self, error: BaseException | None) -> None:
        if error is not None:
            # The connection failed for good (or refused the channel); its error surfaces
            # from the live APIs. Only the type: a message may quote the server.
            logger.warning("live chat state stopped: %s", type(error).__name__)

    def _apply_chat_change(self, change: Change) -> None:
        assert change.resource is not None
        chat_id = change.resource_id or change.resource.get("id")
        target = self._chats.get(chat_id) if isinstance(chat_id, str) else None
        if target is not None:
            target._apply(change.resource)

    async def _refresh_chats(self) -> None:
        """Re-read every known chat after a resubscription or a gap, then apply what the
        channel delivered meanwhile; again while more markers arrived."""
        try:
            while True:
                self._refresh_chats_again = False
                for chat in list(self._chats.values()):
                    try:
                        # After a router restart every visitor reconnects at once: these
                        # reads go through the pool's background limit.
                        with background(self._clock.monotonic() + self._timeouts.request):
                            await chat.refresh()
                    except GiosgError as exc:
                        logger.warning("could not refresh chat %s: %s", chat.id, exc)
                held, self._held_chat_changes = self._held_chat_changes or [], []
                for change in held:
                    self._apply_chat_change(change)
                if not self._refresh_chats_again:
                    return
        finally:
            self._held_chat_changes = None

    def _require_session(self) -> VisitorSession:
        if self._closed:
            raise ClosedError(
                "the visitor is closed: use it inside `async with Visitor(...)` "
                "(or between start() and aclose())"
            )
        if self._session is None:
            raise RuntimeError("the visitor has not been started (use `async with Visitor(...)`)")
        return self._session

    def _org_session(self) -> OrganizationSession:
        # Readable after close too: the visitor id is useful in logs and reports.
        token = self._session.current if self._session is not None else None
        if token is None:
            raise RuntimeError("the visitor has not been started (use `async with Visitor(...)`)")
        return token.session

    def __repr__(self) -> str:
        token = self._session.current if self._session is not None else None
        vid = token.session.visitor_id if token is not None else None
        return (
            f"<Visitor org={self._organization_id} key={self._key!r} "
            f"visitor_id={vid} state={self.state.value}>"
        )
