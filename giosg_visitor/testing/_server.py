"""``FakeGiosg``: the fake Giosg served over real sockets on 127.0.0.1.

The HTTP app (uvicorn) and the message router run on their own asyncio loop in a
background thread, so asyncio tests and trio tests alike talk to it over real sockets.
Operator controls are async methods that hop to that loop and back.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import os
import socket
import threading
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar, final

import anyio
import httpx
import uvicorn
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .._clock import Clock
from .._facts import API_PREFIX
from .._lifecycle import AsyncResource
from ._bot import ScriptedBot
from ._fake import FakeState, RecordedRequest, build_app
from ._faults import Fault, FaultPlan
from ._kinds import DropMode, RotationMode
from ._loop_thread import LoopThread
from ._router import MessageRouter


__all__ = ["FakeGiosg"]

T = TypeVar("T")

#: Where an external message router asks the fake whether a ``sub`` is allowed.
_AUTHORIZE_PATH = "/_fake/router/authorize"


@final
class FakeGiosg(AsyncResource):
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
        rooms: Room ids that exist (for any organization until one of its visitors or
            operators uses the room). Unknown rooms get 404, as from Giosg; more can be
            registered later with :meth:`add_room`, and ``start_bot``,
            ``operator_online`` and ``set_brand`` make their room exist too.
        accept_any_room: Every room id exists (the fake's behaviour before rooms were
            checked); a test then cannot catch a wrong room id.
        host: Interface to bind (loopback only).
        port: Port to bind (0: a free one).
        data_file: If given, visitors and chats are loaded from it at start and saved at
            stop (0600), so a second run of a demo meets the same visitors.
        strict_socket_expiry: The message router closes a socket (code 4401) when a token
            its subscriptions used expires.
        heartbeat_interval: SockJS ``h`` frame interval, seconds.
        page_size: Items per page of every list endpoint.
        socket_url: Hand out this ``socket_url`` from auth instead of the built-in
            router's: for an external message router (a real SockJS server). Such a
            router can check each ``sub`` with ``POST /_fake/router/authorize``
            (``{"token", "channel"}`` -> ``{"ok": bool, "reason": str}``) and receive
            notifications through :meth:`add_publisher`.
        next_links: ``"absolute"`` (the documented form) or ``"relative"``: ``next`` and
            ``previous`` are only ``?cursor=...``, relative to the page's own URL.
        rotate_secrets: ``None`` (auth echoes the secret it was given), ``"grace"`` (every
            auth with a secret answers with a new one, and the previous one still
            authenticates the same visitor for ``rotation_grace`` seconds) or
            ``"strict"`` (only the newest secret is accepted).
        rotation_grace: Seconds a superseded secret stays valid in ``"grace"`` mode.
    """

    def __init__(
        self,
        *,
        token_lifetime: float = 1800.0,
        clock: Clock | None = None,
        unknown_secret: Literal["reject", "mint"] = "reject",
        organizations: set[str] | None = None,
        rooms: Iterable[str] = (),
        accept_any_room: bool = False,
        host: str = "127.0.0.1",
        port: int = 0,
        data_file: str | os.PathLike[str] | None = None,
        strict_socket_expiry: bool = False,
        heartbeat_interval: float = 25.0,
        page_size: int = 50,
        socket_url: str | None = None,
        next_links: Literal["absolute", "relative"] = "absolute",
        rotate_secrets: RotationMode | None = None,
        rotation_grace: float = 60.0,
    ) -> None:
        self.state = FakeState(
            clock=clock,
            token_lifetime=token_lifetime,
            unknown_secret=unknown_secret,
            organizations=organizations,
            rotate_secrets=rotate_secrets,
            rotation_grace=rotation_grace,
        )
        if isinstance(rooms, str):
            raise TypeError("rooms must be a collection of room ids, not one string")
        self.state.chats.registered_room_ids.update(rooms)
        self.state.chats.accept_any_room = accept_any_room
        self.app = build_app(self.state)
        self._host = host
        self._port = port
        self._data_file = Path(data_file) if data_file is not None else None
        self.state.chats.page_size = page_size
        self.state.chats.relative_links = next_links == "relative"
        self.router = MessageRouter(
            authorize=self._authorize_channel,
            now=lambda: self.state.clock.monotonic(),
            token_expiry=self._token_expiry,
            strict_expiry=strict_socket_expiry,
            heartbeat_interval=heartbeat_interval,
        )
        self.app.add_route(_AUTHORIZE_PATH, self._authorize_endpoint, methods=["POST"])
        self._socket_url_override = socket_url
        self.bots: list[ScriptedBot] = []
        self._thread: LoopThread | None = None
        self._serving: concurrent.futures.Future[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
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
        self.state.socket_url = self._socket_url_override or f"{base_url}/router"

    def add_publisher(
        self, publish: Callable[[str, str, Mapping[str, Any] | None, str | None], object]
    ) -> None:
        """Also send every notification to ``publish(channel, action, resource, resource_id)``.

        It is called on the fake's own loop (or inline in-process), for an external
        message router; it should return quickly.
        """
        self.state.publishers.append(publish)

    async def _authorize_endpoint(self, request: Request) -> Response:
        """``POST {"token", "channel"}``: the built-in router's permission check, for others."""
        try:
            body = await request.json()
            token, channel = body["token"], body["channel"]
        except (ValueError, KeyError, TypeError):
            return JSONResponse({"detail": "token and channel are required"}, status_code=400)
        if not isinstance(token, str) or not isinstance(channel, str):
            return JSONResponse({"detail": "token and channel must be strings"}, status_code=400)
        verdict = self._authorize_channel(token, channel)
        if verdict is True:
            return JSONResponse({"ok": True})
        return JSONResponse({"ok": False, "reason": verdict or "not permitted"})

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

    # Message router -------------------------------------------------------------------------

    def _authorize_channel(self, token: str, channel: str) -> bool | str:
        """The router's permission check: a valid token, and a channel of its visitor/org."""
        status, info = self.state.token_status(token)
        if info is None or status != "valid":
            return f"token {status}"
        allowed = (
            f"{API_PREFIX}/visitors/{info.visitor_id}/",
            f"{API_PREFIX}/orgs/{info.organization_id}/rooms/",
            f"{API_PREFIX}/rooms/",
        )
        if channel == f"{API_PREFIX}/visitors/{info.visitor_id}" or channel.startswith(allowed):
            return True
        return "channel not permitted"

    def _token_expiry(self, token: str) -> float | None:
        info = self.state.tokens.get(token)
        return info.expires_at if info is not None else None

    async def push(
        self,
        channel: str,
        action: str,
        resource: dict[str, Any] | None,
        resource_id: str | None = None,
    ) -> int:
        """Push a ``changed`` notification to every subscriber of ``channel``."""
        return await self.call(lambda: self.router.push(channel, action, resource, resource_id))

    async def drop_sockets(self, mode: DropMode = "reset", *, code: int = 1011) -> int:
        """Drop every socket: ``"reset"`` (TCP), ``"close"`` (close frame), ``"blackhole"``."""
        return await self.call(lambda: self.router.drop_all(mode, code=code))

    async def refuse_handshakes(
        self, status: int | None, *, retry_after: float | None = None, count: int | None = None
    ) -> None:
        """Answer the next socket handshakes with ``status`` (``None``: accept again)."""
        await self.call(
            lambda: self.router.refuse_handshakes(status, retry_after=retry_after, count=count)
        )

    # Operators ------------------------------------------------------------------------------

    async def add_room(self, room_id: str, *, organization_id: str | None = None) -> None:
        """Make a room exist (visitors get 404 for rooms the fake does not know).

        Without ``organization_id`` the room belongs to the first organization that uses
        it; with it, visitors of other organizations get 404.
        """

        def apply() -> None:
            world = self.state.chats
            if organization_id is None:
                world.registered_room_ids.add(room_id)
                return
            world.room(organization_id, room_id)

        await self.call(apply)

    async def operator_online(
        self, room_id: str, name: str = "Olivia", *, organization_id: str | None = None
    ) -> str:
        """An operator comes online in a room; returns the operator's user id."""
        org = organization_id or self._only_org()
        return await self.call(lambda: self.state.chats.operator_online(org, room_id, name))

    async def set_brand(
        self, room_id: str, brand: dict[str, Any] | None, *, organization_id: str | None = None
    ) -> None:
        """Give a room a brand (``None``: no brand, the endpoint answers 404)."""
        org = organization_id or self._only_org()

        def apply() -> None:
            self.state.chats.room(org, room_id).brand = brand

        await self.call(apply)

    async def operator_offline(self, room_id: str, user_id: str) -> None:
        """An operator goes offline."""
        await self.call(lambda: self.state.chats.operator_offline(room_id, user_id))

    async def operator_joins(self, chat_id: str, user_id: str) -> None:
        """An operator joins a chat."""
        await self.call(lambda: self.state.chats.operator_joins(chat_id, user_id))

    async def operator_typing(self, chat_id: str, user_id: str, typing: bool = True) -> None:
        """An operator starts (or stops) typing."""
        await self.call(lambda: self.state.chats.operator_typing(chat_id, user_id, typing))

    async def operator_says(
        self,
        chat_id: str,
        user_id: str,
        text: str | None,
        *,
        attachments: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """An operator sends a message; returns the message resource.

        Args:
            chat_id: The chat.
            user_id: The operator (from :meth:`operator_online`).
            text: The text (may be ``None`` for a message that is only attachments).
            attachments: Rich cards, as the wire has them (``title``, ``text``,
                ``image_url``, ``actions`` of ``{"text", "type", "value", ...}``); the
                fake gives every attachment and action an ``id``.
        """
        return await self.call(
            lambda: self.state.chats.operator_says(chat_id, user_id, text, attachments=attachments)
        )

    async def operator_sends_buttons(
        self,
        chat_id: str,
        user_id: str,
        text: str | None,
        buttons: list[str] | list[dict[str, Any]],
        *,
        title: str | None = None,
        is_disabled_on_selection: bool = True,
        is_disabled_on_visitor_message: bool = False,
    ) -> dict[str, Any]:
        """An operator sends one card of buttons; returns the message resource.

        ``buttons`` are labels (each a ``button`` whose value is its label) or action
        objects as the wire has them (``{"text": ..., "type": "link_button",
        "link_url": ...}``).
        """
        actions: list[dict[str, Any]] = [
            {"text": b, "type": "button", "value": b} if isinstance(b, str) else dict(b)
            for b in buttons
        ]
        for action in actions:
            action.setdefault("is_disabled_on_selection", is_disabled_on_selection)
            action.setdefault("is_disabled_on_visitor_message", is_disabled_on_visitor_message)
        return await self.operator_says(
            chat_id, user_id, text, attachments=[{"title": title, "actions": actions}]
        )

    async def end_chat(self, chat_id: str) -> None:
        """The operator ends a chat."""
        await self.call(lambda: self.state.chats.end_chat(chat_id))

    async def chat_ids(self, visitor_id: str) -> list[str]:
        """The ids of a visitor's chats."""
        return await self.call(
            lambda: [
                c.resource["id"]
                for c in self.state.chats.chats.values()
                if c.visitor_id == visitor_id
            ]
        )

    async def messages(self, chat_id: str) -> list[dict[str, Any]]:
        """A chat's messages as stored by the fake (copies)."""
        return await self.call(lambda: [dict(m) for m in self.state.chats.chats[chat_id].messages])

    async def start_bot(
        self,
        room_id: str,
        *,
        name: str = "Demo Bot",
        typing_seconds: float = 0.4,
        organization_id: str | None = None,
    ) -> ScriptedBot:
        """A scripted operator in a room: it comes online, joins new chats, types and answers."""
        org = organization_id or self._only_org()

        def create() -> ScriptedBot:
            bot = ScriptedBot(self.state, org, room_id, name=name, typing_seconds=typing_seconds)
            self.bots.append(bot)
            return bot

        return await self.call(create)

    def _only_org(self) -> str:
        orgs = {info.organization_id for info in self.state.tokens.values()}
        if self.state.organizations:
            orgs |= self.state.organizations
        if len(orgs) != 1:
            raise ValueError(
                "pass organization_id: the fake knows several organizations (or none yet)"
            )
        return orgs.pop()

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

    async def _aopen(self) -> None:
        await anyio.to_thread.run_sync(self.start)

    async def aclose(self) -> None:
        """:meth:`stop` from async code (asyncio or trio), without blocking its loop."""
        # Shielded: a cancelled test or Ctrl-C must still stop the server thread and save
        # the data file, or the next run meets a store the fake has forgotten.
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(self.stop)

    def start(self) -> None:
        """Start serving in a background thread (blocking until ready)."""
        if self._thread is not None:
            raise RuntimeError("FakeGiosg is already running")
        if self._data_file is not None and self._data_file.exists():
            self.state.restore(json.loads(self._data_file.read_text()))
        self._ready.clear()
        thread = LoopThread("FakeGiosg", timeout=30).__enter__()
        serving = thread.submit(self._serve())
        # Serving that ends before it is ready (a port in use, say) must wake start() too.
        serving.add_done_callback(lambda _: self._ready.set())
        self._thread, self._serving = thread, serving
        self._ready.wait(timeout=30)
        if serving.done():
            error = serving.exception()
            self._thread = self._serving = None
            thread.__exit__(None, None, None)
            raise RuntimeError("FakeGiosg failed to start") from error
        if not self._ready.is_set():
            raise RuntimeError("FakeGiosg did not start within 30 s")

    def stop(self) -> None:
        """Stop serving (blocking until the thread has ended)."""
        thread, serving, stop = self._thread, self._serving, self._stop
        if thread is not None:
            if stop is not None and serving is not None and not serving.done():
                with contextlib.suppress(RuntimeError):
                    thread.call(stop.set)
            if serving is not None:
                # Waited for, not raised: a server that failed after it started has
                # already failed the requests of the test that used it.
                concurrent.futures.wait([serving], timeout=30)
            thread.__exit__(None, None, None)
        self._thread = self._serving = None
        if self._data_file is not None:
            self._save_data(self._data_file)

    def _save_data(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(self.state.dump(), handle)
        os.replace(tmp, path)

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY on accepted connections only
        # when the socket says it is TCP. Without it every request after the first on
        # a keep-alive connection waits ~40 ms (Nagle + delayed ACK).
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self._host, self._port))
        except OSError:
            sock.close()  # a port in use: start() reports it, nothing must stay open
            raise
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
            await self.router.start(host=self._host)
            self.state.socket_url = self._socket_url_override or self.router.socket_url
            self.state.publishers.append(self.router.push)
            self._ready.set()
            await self._stop.wait()
        finally:
            for bot in self.bots:
                bot.stop()
            with contextlib.suppress(Exception):
                await self.router.stop()
            server.should_exit = True
            with contextlib.suppress(Exception):
                await asyncio.wait_for(serving, timeout=5)
            self._loop = None
            # The loop closes after this: finish what is left on it (a bot's cancelled
            # answer, a connection handler), as ``asyncio.run`` does for its main task.
            await _cancel_other_tasks()

    def __repr__(self) -> str:
        running = "running" if self._thread is not None else "stopped"
        return f"<FakeGiosg {self.base_url} {running}>"


async def _cancel_other_tasks() -> None:
    """Cancel every other task of the running loop and wait until they have ended."""
    others = asyncio.all_tasks() - {asyncio.current_task()}
    for task in others:
        task.cancel()
    await asyncio.gather(*others, return_exceptions=True)
    await asyncio.get_running_loop().shutdown_asyncgens()
