"""A custom chat front end's backend: one Giosg visitor per browser session, relayed live.

Routes:
    ``GET /``          the page; sets the opaque ``giosg_session`` cookie if it is missing.
    ``GET /static/*``  the page's script and style sheet.
    ``WebSocket /ws``  the relay. To the browser: ``ready`` (the public visitor id), the
                       chat's ``message`` frames (history, then live; with their cards
                       and buttons), ``choosable`` (the buttons that can still be
                       clicked), operator ``typing``, ``ended`` and ``error``. From the
                       browser: ``send``, ``choose`` (a button's key) and ``typing``.

The session cookie is a random value that means nothing to Giosg: the server hashes it
into the key of the visitor in a shared :class:`~giosg_visitor.SQLiteStore`. The visitor
secret and the access tokens never leave the server.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import secrets
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Final, final
from urllib.parse import urlsplit

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketDisconnected

from giosg_visitor import (
    Action,
    Chat,
    ChatEndedError,
    GiosgError,
    Message,
    MessageTooLongError,
    NotChoosableError,
    SQLiteStore,
    Visitor,
    VisitorPool,
    choosable_actions,
)


__all__ = ["COOKIE_NAME", "create_app"]

logger = logging.getLogger("web_chat")

#: The session cookie: an opaque random value (never a Giosg credential).
COOKIE_NAME: Final = "giosg_session"
_COOKIE_VALUE: Final = re.compile(r"[A-Za-z0-9_-]{43}")  # secrets.token_urlsafe(32)
_COOKIE_MAX_AGE: Final = 30 * 24 * 3600
#: The largest frame accepted from a browser, in characters.
_MAX_FRAME: Final = 16 * 1024
_STATIC: Final = Path(__file__).parent / "static"
_PAGE_HEADERS: Final = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' https:; base-uri 'none'; form-action 'none';"
        " frame-ancestors 'none'"
    ),
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}


def create_app(
    *,
    organization_id: str,
    room_id: str,
    base_url: str = "https://service.giosg.com",
    store_path: str | os.PathLike[str],
) -> Starlette:
    """The ASGI app: the page, its static files and the WebSocket relay.

    Args:
        organization_id: The Giosg organization of every visitor.
        room_id: The room chats are started in.
        base_url: The Giosg API origin (``FakeGiosg.base_url`` for the fake).
        store_path: The SQLite file holding every session's visitor (secret and tokens).
    """
    web_chat = WebChat(
        organization_id=organization_id,
        room_id=room_id,
        base_url=base_url,
        store_path=store_path,
    )
    return Starlette(
        routes=[
            Route("/", web_chat.page),
            WebSocketRoute("/ws", web_chat.socket),
            Mount("/static", StaticFiles(directory=_STATIC), name="static"),
        ],
        lifespan=web_chat.lifespan,
    )


@final
class WebChat:
    """The handlers, and what they share: the visitor pool and the sessions online now."""

    def __init__(
        self,
        *,
        organization_id: str,
        room_id: str,
        base_url: str,
        store_path: str | os.PathLike[str],
    ) -> None:
        self._organization_id = organization_id
        self._room_id = room_id
        self._base_url = base_url
        self._store_path = store_path
        self._page = (_STATIC / "index.html").read_text(encoding="utf-8")
        self._pool: VisitorPool | None = None
        self._sessions: dict[str, _Session] = {}

    @asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        """Open the store and the visitor pool for the app's lifetime."""
        async with (
            SQLiteStore(self._store_path) as store,
            VisitorPool(
                self._organization_id,
                store=store,
                base_url=self._base_url,
                # A browser whose visitor Giosg no longer knows simply gets a new one.
                on_invalid_secret="new_visitor",
            ) as pool,
        ):
            self._pool = pool
            try:
                yield
            finally:
                self._pool = None

    async def page(self, request: Request) -> Response:
        """``GET /``: the page, with a new session cookie if the browser has none."""
        response = HTMLResponse(self._page, headers=_PAGE_HEADERS)
        if _session_cookie(request.cookies) is None:
            response.set_cookie(
                COOKIE_NAME,
                secrets.token_urlsafe(32),
                max_age=_COOKIE_MAX_AGE,
                path="/",
                secure=request.url.scheme == "https",
                httponly=True,
                samesite="lax",
            )
        return response

    async def socket(self, websocket: WebSocket) -> None:
        """``WebSocket /ws``: relay this browser session's chat both ways until it leaves."""
        cookie = _session_cookie(websocket.cookies)
        if cookie is None or not _same_origin(websocket):
            await websocket.close(code=1008)  # policy violation: load the page first
            return
        await websocket.accept()
        key = _store_key(cookie)
        session = self._sessions.setdefault(key, _Session(key))
        session.sockets += 1
        try:
            await self._serve(_Browser(websocket), session)
        except* WebSocketDisconnect:
            pass  # the browser went away
        finally:
            session.sockets -= 1
            if session.sockets == 0 and self._sessions.get(key) is session:
                del self._sessions[key]

    async def _serve(self, browser: _Browser, session: _Session) -> None:
        if self._pool is None:
            raise RuntimeError("the app is not running (its lifespan has not started)")
        try:
            async with self._pool.visitor(session.store_key) as visitor:
                await session.resume(visitor, self._room_id)
                await browser.send({"type": "ready", "visitor_id": visitor.visitor_id})
                async with anyio.create_task_group() as tg:
                    tg.start_soon(self._follow_chats, browser, session)
                    await self._receive(browser, session, visitor)
                    tg.cancel_scope.cancel()
        except GiosgError as exc:  # the visitor could not start, or its chats not be read
            logger.warning("session unavailable: %s", exc)
            await browser.fail("The chat service is unavailable; retrying shortly.")

    # Browser to Giosg ----------------------------------------------------------------------

    async def _receive(self, browser: _Browser, session: _Session, visitor: Visitor) -> None:
        """Handle the browser's frames, in order, until it disconnects."""
        while True:
            message = await browser.websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            frame = _parse_frame(message.get("text"))
            if frame is None:
                await browser.error("Frames must be JSON objects (at most 16 KiB).")
            elif frame.get("type") == "send" and isinstance(frame.get("text"), str):
                await self._send_message(browser, session, visitor, frame["text"])
            elif frame.get("type") == "choose" and isinstance(frame.get("key"), str):
                await self._choose(browser, session, frame["key"])
            elif frame.get("type") == "typing" and isinstance(frame.get("typing"), bool):
                await self._send_typing(session, frame["typing"])
            else:
                await browser.error("Unknown frame: expected 'send', 'choose' or 'typing'.")

    async def _send_message(
        self, browser: _Browser, session: _Session, visitor: Visitor, text: str
    ) -> None:
        text = text.strip()
        if not text:
            await browser.error("Cannot send an empty message.")
            return
        try:
            chat = await session.chat_for_sending(visitor, self._room_id)
            # Not shown here: it comes back through the chat's message stream, to every tab.
            await chat.send(text)
        except MessageTooLongError as exc:
            await browser.error(
                f"Your message is {exc.length} characters long; the limit is {exc.limit}."
            )
        except ChatEndedError:
            await browser.error("The chat has ended. Send your message again to start a new one.")
        except GiosgError as exc:
            logger.warning("sending failed: %s", exc)
            await browser.error("Your message could not be sent; please try again.")

    async def _choose(self, browser: _Browser, session: _Session, key: str) -> None:
        """A click on a button: send it as the visitor's choice if it can still be chosen.

        The button is looked up in the chat's history on the server (the browser only
        names it), so a page cannot choose a button that is switched off or not there.
        """
        chat = session.chat
        if chat is None or chat.is_ended:
            await browser.error("The chat has ended; that button no longer works.")
            return
        try:
            choosable = {_action_key(a): a for a in choosable_actions(await chat.history())}
            action = choosable.get(key)
            if action is None:
                await browser.error("That button can no longer be chosen.")
                return
            # Not shown here: the choice comes back through the chat's message stream.
            await chat.choose(action)
        except NotChoosableError:  # pragma: no cover - choosable_actions left links out
            await browser.error("That button only opens a link.")
        except ChatEndedError:
            await browser.error("The chat has ended; that button no longer works.")
        except GiosgError as exc:
            logger.warning("choosing failed: %s", exc)
            await browser.error("Your choice could not be sent; please try again.")

    async def _send_typing(self, session: _Session, is_typing: bool) -> None:
        chat = session.chat
        if chat is None or chat.is_ended:
            return
        try:
            await chat.typing(is_typing)
        except GiosgError as exc:  # a lost typing notice is not worth bothering the user
            logger.info("typing notice failed: %s", exc)

    # Giosg to browser ----------------------------------------------------------------------

    async def _follow_chats(self, browser: _Browser, session: _Session) -> None:
        """Relay the session's chat, and each chat started after it."""
        async with anyio.create_task_group() as tg:
            chat: Chat | None = None
            while True:
                chat = await session.next_chat(chat)
                tg.start_soon(self._relay_chat, browser, chat)

    async def _relay_chat(self, browser: _Browser, chat: Chat) -> None:
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._relay_messages, browser, chat)
                tg.start_soon(self._relay_typing, browser, chat)
                await chat.wait_ended()
                # The streams stay open: a goodbye that arrives late is still shown.
                await browser.send({"type": "ended"})
        except* GiosgError as group:
            logger.warning("lost chat %s: %s", chat.id, group.exceptions[0])
            # The browser reconnects, and the new socket resumes where this one stopped.
            await browser.fail("Lost the connection to the chat; reconnecting.")

    async def _relay_messages(self, browser: _Browser, chat: Chat) -> None:
        seen: list[Message] = []
        enabled: list[str] | None = None
        async with chat.messages() as stream:  # history, then live: each message once
            async for message in stream:
                seen.append(message)
                if _shown(message):
                    await browser.send(_message_frame(message))
                # A choice or a typed message may switch buttons off: tell the page.
                now = [_action_key(a) for a in choosable_actions(seen)]
                if now != enabled:
                    enabled = now
                    await browser.send({"type": "choosable", "keys": now})

    async def _relay_typing(self, browser: _Browser, chat: Chat) -> None:
        typing: dict[str, bool] = {}
        async with chat.member_changes() as members:
            async for member in members:
                if not member.is_operator:
                    continue
                if typing.get(member.member_id, False) != member.is_typing:
                    typing[member.member_id] = member.is_typing
                    await browser.send(
                        {
                            "type": "typing",
                            "name": member.member_public_name or "Operator",
                            "typing": member.is_typing,
                        }
                    )


@final
class _Session:
    """What the open tabs of one browser session share: its visitor's key and chat."""

    def __init__(self, store_key: str) -> None:
        self.store_key = store_key
        self.sockets = 0
        self.chat: Chat | None = None
        self._lock = anyio.Lock()
        self._changed = anyio.Event()
        self._resumed = False

    async def resume(self, visitor: Visitor, room_id: str) -> None:
        """Pick up the visitor's latest open chat in the room (once per session)."""
        async with self._lock:
            if self._resumed:
                return
            latest: Chat | None = None
            async for chat in visitor.chats():  # oldest first
                if chat.room_id == room_id and not chat.is_ended:
                    latest = chat
            if latest is not None:
                self._set_chat(latest)
            self._resumed = True

    async def chat_for_sending(self, visitor: Visitor, room_id: str) -> Chat:
        """The open chat; a new one on the first message, and after one has ended."""
        async with self._lock:
            chat = self.chat
            if chat is None or chat.is_ended:
                chat = await visitor.start_chat(room_id)
                self._set_chat(chat)
            return chat

    async def next_chat(self, current: Chat | None) -> Chat:
        """Wait for a chat other than ``current`` (the first one, or a newer one)."""
        while self.chat is None or self.chat is current:
            await self._changed.wait()
        return self.chat

    def _set_chat(self, chat: Chat) -> None:
        self.chat = chat
        changed, self._changed = self._changed, anyio.Event()
        changed.set()


@final
class _Browser:
    """One browser socket; sends from several tasks go out one at a time."""

    def __init__(self, websocket: WebSocket) -> None:
        self.websocket = websocket
        self._lock = anyio.Lock()

    async def send(self, frame: Mapping[str, Any]) -> None:
        """Send a JSON frame (``WebSocketDisconnect`` if the browser has gone)."""
        async with self._lock:
            try:
                await self.websocket.send_json(frame)
            except WebSocketDisconnected as exc:
                raise WebSocketDisconnect(1006) from exc

    async def error(self, message: str) -> None:
        """Tell the user something went wrong; the socket stays open."""
        await self.send({"type": "error", "message": message})

    async def fail(self, message: str) -> None:
        """Tell the user, then close the socket (the page reconnects on its own)."""
        await self.error(message)
        async with self._lock:
            try:
                await self.websocket.close(code=1011)
            except WebSocketDisconnected as exc:
                raise WebSocketDisconnect(1006) from exc


def _session_cookie(cookies: Mapping[str, str]) -> str | None:
    value = cookies.get(COOKIE_NAME)
    return value if value is not None and _COOKIE_VALUE.fullmatch(value) else None


def _store_key(cookie: str) -> str:
    """The visitor's key in the store: a hash, so the live cookie is not kept or logged."""
    return "web:" + hashlib.sha256(cookie.encode()).hexdigest()


def _same_origin(websocket: WebSocket) -> bool:
    """Browsers always send ``Origin`` on a WebSocket: refuse other sites' pages."""
    origin = websocket.headers.get("origin")
    return origin is None or urlsplit(origin).netloc == websocket.headers.get("host")


def _parse_frame(text: str | None) -> dict[str, Any] | None:
    if text is None or len(text) > _MAX_FRAME:
        return None
    try:
        frame = json.loads(text)
    except ValueError:
        return None
    return frame if isinstance(frame, dict) else None


def _shown(message: Message) -> bool:
    """Texts, cards and the visitor's choices; not joins, leaves or other events."""
    if message.is_choice:
        return message.is_from_visitor
    return message.type == "msg" and bool(message.message or message.attachments)


def _action_key(action: Action) -> str:
    """How the page names a button: its message, attachment and action ids."""
    return "/".join(part or "" for part in action.key)


def _web_url(url: str | None) -> str | None:
    """Only http(s) links and images reach the page (never ``javascript:`` or ``data:``)."""
    if url is None or urlsplit(url).scheme not in ("http", "https"):
        return None
    return url


def _message_frame(message: Message) -> dict[str, Any]:
    """Only what the page shows: never the raw resource (it carries more than that)."""
    mine = message.is_from_visitor
    return {
        "type": "message",
        "id": message.id,
        "sender": "me" if mine else "operator",
        "name": "You" if mine else (message.sender_public_name or "Operator"),
        "text": message.text if message.is_choice else message.message,
        "choice": message.is_choice,
        "cards": [
            {
                "title": card.title,
                "text": card.text,
                "image": _web_url(card.image_url),
                "buttons": [
                    {
                        "key": _action_key(action),
                        "kind": "link" if action.is_link else "button",
                        "text": action.text or action.value or "",
                        "link": _web_url(action.link_url) if action.is_link else None,
                    }
                    for action in card.actions
                    if action.type in ("button", "link_button")
                ],
            }
            for card in message.attachments
        ],
    }
