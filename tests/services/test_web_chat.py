"""examples/web_chat: the custom chat front end's backend, from a real browser and a raw socket.

Most tests here are synchronous on purpose: FakeGiosg and uvicorn run on their own loops in
background threads, and Playwright's sync API or a blocking WebSocket client drives them.
One drives the app over ASGI in process, on asyncio and on trio.
"""

from __future__ import annotations

import contextlib
import functools
import json
import re
import secrets
import select
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import httpx
import pytest
from starlette.applications import Starlette
from websockets.exceptions import InvalidStatus
from websockets.sync.client import ClientConnection, connect

from giosg_visitor.testing import FakeGiosg

from .._browser import CHROMIUM_ARGS, BrowserUnavailable, find_chromium, unavailable
from .._helpers import serve_asgi


if TYPE_CHECKING:
    from playwright.sync_api import Page, WebSocket as PageWebSocket


ROOT = Path(__file__).parent.parent.parent
sys.path.insert(0, str(ROOT / "examples"))
from web_chat.app import COOKIE_NAME, create_app  # noqa: E402


ORG_ID = "e6a08f51-c250-4074-847b-58d444dbbeb1"
ROOM_ID = "9926bdfa-56e0-11e5-b98c-6c4008c08dfe"
HELLO = "Hello from the browser"
BOT_HELLO = "Hello! I'm the demo bot. Ask me anything."
#: Playwright waits (milliseconds) and socket waits (seconds).
WAIT_MS = 20_000
WAIT_S = 20.0


@pytest.fixture
def fake() -> Iterator[FakeGiosg]:
    """A threaded FakeGiosg with a bot in the room (started before any browser)."""
    giosg = FakeGiosg(rooms=[ROOM_ID])
    giosg.start()
    try:
        anyio.run(
            functools.partial(giosg.start_bot, ROOM_ID, organization_id=ORG_ID, typing_seconds=0.5)
        )
        yield giosg
    finally:
        giosg.stop()


@contextlib.contextmanager
def serve(app: Starlette) -> Iterator[str]:
    """Serve ``app`` with uvicorn on a free port of 127.0.0.1 in a thread; yield its URL."""
    config = {"ws": "websockets-sansio", "lifespan": "on", "timeout_graceful_shutdown": 2}
    with serve_asgi(app, **config) as port:
        yield f"http://127.0.0.1:{port}"


@contextlib.contextmanager
def chromium_page(app: Starlette) -> Iterator[tuple[Page, str]]:
    """A page of headless Chromium and the URL of ``app``, served for it; closed on exit.

    Skips (fails in CI) when Chromium or Playwright cannot be had, or Chromium cannot start.
    """
    try:
        executable = find_chromium()
        from playwright.sync_api import Error as PlaywrightError, sync_playwright
    except BrowserUnavailable as exc:
        unavailable(str(exc))
    except ImportError as exc:
        unavailable(f"Playwright for Python is missing ({exc}); install the tests' dependencies")
    with serve(app) as url, sync_playwright() as playwright:
        try:
            browser = playwright.chromium.launch(
                executable_path=executable,
                args=list(CHROMIUM_ARGS),
                chromium_sandbox=False,
                headless=True,
                timeout=60_000,
            )
        except PlaywrightError as exc:
            unavailable(f"{executable} did not start: {exc.message.splitlines()[0]}")
        try:
            yield browser.new_page(), url
        finally:
            browser.close()


def web_chat_app(giosg: FakeGiosg, tmp_path: Path) -> Starlette:
    """The example app against the fake, with its SQLite store in ``tmp_path``."""
    return create_app(
        organization_id=ORG_ID,
        room_id=ROOM_ID,
        base_url=giosg.base_url,
        store_path=tmp_path / "web_chat.db",
    )


def credentials(giosg: FakeGiosg) -> list[str]:
    """Every secret the fake handed out: visitor secrets, access tokens, chat tokens."""
    state = giosg.state
    chat_tokens = [str(chat.resource["token"]) for chat in list(state.chats.chats.values())]
    found = [*list(state.visitors), *list(state.tokens), *chat_tokens]
    assert found, "the fake handed out no credentials: the check would prove nothing"
    return found


# A real browser -----------------------------------------------------------------------------


def test_browser_chats_with_the_bot_and_resumes_after_reload(
    fake: FakeGiosg, tmp_path: Path
) -> None:
    """Headless Chromium: send, see the bot type and answer, reload, same visitor and history."""
    frames: list[str] = []

    def watch(ws: PageWebSocket) -> None:
        ws.on("framereceived", lambda payload: frames.append(_text(payload)))

    with chromium_page(web_chat_app(fake, tmp_path)) as (page, url):
        from playwright.sync_api import expect

        page.on("websocket", watch)
        page.goto(url)
        body, messages = page.locator("body"), page.locator("#messages li")
        expect(body).to_have_attribute(
            "data-visitor-id", re.compile(r"^[0-9a-f]{32}$"), timeout=WAIT_MS
        )
        visitor_id = body.get_attribute("data-visitor-id")

        page.locator("#input").fill(HELLO)
        page.locator("#input").press("Enter")
        expect(page.locator("#messages li.me .text")).to_have_text([HELLO], timeout=WAIT_MS)
        expect(page.locator("#messages li.operator .text")).to_have_text(
            [BOT_HELLO], timeout=WAIT_MS
        )
        expect(page.locator("#messages li.operator .name")).to_have_text(["Demo Bot"])
        expect(page.locator("#typing")).to_have_text("")
        assert {"type": "typing", "name": "Demo Bot", "typing": True} in map(json.loads, frames), (
            "the bot's typing never reached the page"
        )
        assert page.locator("#input").input_value() == ""

        page.reload()
        expect(body).to_have_attribute("data-visitor-id", visitor_id or "", timeout=WAIT_MS)
        expect(messages.locator(".text")).to_have_text([HELLO, BOT_HELLO], timeout=WAIT_MS)
        expect(messages).to_have_class(["me", "operator"])

        # One session, one visitor, one chat: the reload resumed them both.
        assert len(fake.state.visitors) == 1
        assert len(fake.state.chats.chats) == 1
        # The session cookie is opaque and out of the page's reach.
        (cookie,) = (c for c in page.context.cookies() if c.get("name") == COOKIE_NAME)
        assert cookie.get("httpOnly") is True
        assert cookie.get("sameSite") == "Lax"
        assert page.evaluate("document.cookie") == ""
        # No credential of any kind reached the browser.
        html = page.content()
        assert frames
        for secret in [*credentials(fake), cookie.get("value", "")]:
            assert secret not in html
            assert not [frame for frame in frames if secret in frame]


def test_browser_clicks_a_button_sees_the_bot_react_and_keeps_the_choice(
    fake: FakeGiosg, tmp_path: Path
) -> None:
    """Headless Chromium: a card of buttons, a click sent as a choice, the bot's reaction,
    spent buttons greyed out; after a reload the history shows the choice."""
    with chromium_page(web_chat_app(fake, tmp_path)) as (page, url):
        from playwright.sync_api import expect

        page.goto(url)
        body = page.locator("body")
        expect(body).to_have_attribute(
            "data-visitor-id", re.compile(r"^[0-9a-f]{32}$"), timeout=WAIT_MS
        )
        page.locator("#input").fill("Show me the menu")
        page.locator("#input").press("Enter")

        card = page.locator(".card").first
        expect(card.locator(".card-title")).to_have_text("How can I help?", timeout=WAIT_MS)
        expect(card.locator(".card-text")).to_have_text("Choose one of these.")
        buttons = card.locator("button.choice-button")
        expect(buttons).to_have_text(["Opening hours", "Talk to a person"])
        expect(buttons.first).to_be_enabled(timeout=WAIT_MS)
        expect(buttons.last).to_be_enabled()
        link = card.locator("a.link-button")
        expect(link).to_have_text("Read the FAQ")
        expect(link).to_have_attribute("href", "https://example.com/faq")

        buttons.first.click()
        expect(page.locator("#messages li.me.choice .text")).to_have_text(
            ["Opening hours"], timeout=WAIT_MS
        )
        expect(page.locator("#messages li.operator .text").last).to_contain_text(
            "We are open on weekdays", timeout=WAIT_MS
        )
        # is_disabled_on_selection: both buttons of the card are spent now.
        expect(buttons.first).to_be_disabled()
        expect(buttons.last).to_be_disabled()
        assert [bot.choices for bot in fake.bots] == [["hours"]]

        # A second card from a person: its buttons are live while the first stays spent.
        bot_user = fake.bots[0].user_id
        (chat_id,) = list(fake.state.chats.chats)
        # Playwright's sync API runs a loop in this thread: drive the fake from another.
        _in_thread(
            functools.partial(
                fake.operator_says,
                chat_id,
                bot_user,
                "Anything else?",
                attachments=[
                    {
                        "title": "Rate us",
                        "image_url": "https://example.com/stars.png",
                        "actions": [
                            {"text": "Good", "type": "button", "value": "good"},
                            {"text": "Bad", "type": "button", "value": "bad"},
                        ],
                    }
                ],
            )
        )
        second = page.locator(".card").nth(1)
        expect(second.locator(".card-image")).to_have_attribute(
            "src", "https://example.com/stars.png", timeout=WAIT_MS
        )
        expect(second.locator("button.choice-button").first).to_be_enabled(timeout=WAIT_MS)

        page.reload()
        expect(body).to_have_attribute("data-visitor-id", re.compile("."), timeout=WAIT_MS)
        expect(page.locator("#messages li.me.choice .text")).to_have_text(
            ["Opening hours"], timeout=WAIT_MS
        )
        cards = page.locator(".card")
        expect(cards).to_have_count(2, timeout=WAIT_MS)
        # Greyed by what the history says, not by the page's memory of the click.
        expect(cards.nth(1).locator("button.choice-button").first).to_be_enabled(timeout=WAIT_MS)
        expect(cards.first.locator("button.choice-button").first).to_be_disabled()
        expect(cards.first.locator("button.choice-button").last).to_be_disabled()
        stored = [m for m in fake.state.chats.chats[chat_id].messages if m["type"] == "action"]
        assert [m["response_value"] for m in stored] == ["hours"]


def _in_thread(fn: Callable[[], Awaitable[Any]]) -> Any:
    """``anyio.run(fn)`` in a thread of its own."""
    with ThreadPoolExecutor(1) as executor:
        return executor.submit(anyio.run, fn).result(timeout=WAIT_S)


def _text(payload: str | bytes) -> str:
    return payload if isinstance(payload, str) else payload.decode("utf-8", "replace")


# The relay over a raw WebSocket -----------------------------------------------------------


def _ws_url(url: str) -> str:
    return url.replace("http://", "ws://", 1) + "/ws"


def _session_cookie(url: str) -> str:
    response = httpx.get(url + "/")
    assert response.status_code == 200
    header = response.headers["set-cookie"]
    assert "HttpOnly" in header
    assert "samesite=lax" in header.lower()
    return str(response.cookies[COOKIE_NAME])


def _open(url: str, cookie: str, **headers: str) -> ClientConnection:
    return connect(
        _ws_url(url),
        additional_headers={"Cookie": f"{COOKIE_NAME}={cookie}", **headers},
        open_timeout=WAIT_S,
    )


def _frames_until(
    ws: ClientConnection, match: Callable[[dict[str, Any]], bool], timeout: float = WAIT_S
) -> list[dict[str, Any]]:
    """The frames up to and including the first one ``match`` accepts (within ``timeout`` s)."""
    frames: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while not frames or not match(frames[-1]):
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"the expected frame never came; got {frames}"
        frames.append(json.loads(ws.recv(timeout=remaining)))
    return frames


def _until(
    ws: ClientConnection, match: Callable[[dict[str, Any]], bool], timeout: float = WAIT_S
) -> dict[str, Any]:
    """The next frame that ``match`` accepts (failing after ``timeout`` seconds)."""
    return _frames_until(ws, match, timeout)[-1]


def _message(text: str) -> Callable[[dict[str, Any]], bool]:
    return lambda frame: frame["type"] == "message" and frame["text"] == text


def _ready(frame: dict[str, Any]) -> bool:
    return bool(frame["type"] == "ready")


def _error(frame: dict[str, Any]) -> bool:
    return bool(frame["type"] == "error")


def test_socket_relay_errors_tabs_and_chat_end(fake: FakeGiosg, tmp_path: Path) -> None:
    """Raw WebSocket: refusals, error frames, two tabs in sync, a new chat after the end."""
    with serve(web_chat_app(fake, tmp_path)) as url:
        cookie = _session_cookie(url)
        # Without a session, or from another site's page, the socket is refused.
        with pytest.raises(InvalidStatus):
            connect(_ws_url(url), open_timeout=WAIT_S)
        with pytest.raises(InvalidStatus):
            _open(url, "not-a-session-cookie")
        with pytest.raises(InvalidStatus):
            _open(url, cookie, Origin="http://evil.example")

        with _open(url, cookie) as tab, _open(url, cookie) as other_tab:
            ready = _until(tab, _ready)
            assert _until(other_tab, _ready) == ready
            assert fake.state.chats.chats == {}  # no chat until the first message

            tab.send("not json")
            assert "JSON" in _until(tab, _error)["message"]
            tab.send(json.dumps({"type": "dance"}))
            assert "Unknown frame" in _until(tab, _error)["message"]
            tab.send(json.dumps({"type": "send", "text": "   "}))
            assert "empty" in _until(tab, _error)["message"]
            tab.send(json.dumps({"type": "send", "text": "x" * 2001}))
            assert "2001 characters" in _until(tab, _error)["message"]

            tab.send(json.dumps({"type": "typing", "typing": True}))
            tab.send(json.dumps({"type": "send", "text": "hi there"}))
            # Messages and typing travel on separate channels: only their own order is sure.
            frames = _frames_until(tab, _message(BOT_HELLO))
            mine, reply = (frame for frame in frames if frame["type"] == "message")
            assert mine.keys() == {"type", "id", "sender", "name", "text", "choice", "cards"}
            assert (mine["sender"], mine["name"], mine["text"]) == ("me", "You", "hi there")
            assert (mine["choice"], mine["cards"]) == (False, [])
            # A page can only choose a button the chat's history says is choosable.
            tab.send(json.dumps({"type": "choose", "key": f"{mine['id']}/nope/nope"}))
            assert "no longer be chosen" in _until(tab, _error)["message"]
            assert (reply["sender"], reply["name"]) == ("operator", "Demo Bot")
            typing = [frame for frame in frames if frame["type"] == "typing"]
            assert typing[0] == {"type": "typing", "name": "Demo Bot", "typing": True}
            assert _until(other_tab, _message("hi there")) == mine  # every tab sees it

            (first_chat,) = fake.state.chats.chats
            anyio.run(fake.end_chat, first_chat)
            _until(tab, lambda frame: frame["type"] == "ended")
            tab.send(json.dumps({"type": "send", "text": "bye now"}))
            _until(tab, _message("Goodbye, and thanks for chatting!"))
            _until(other_tab, _message("Goodbye, and thanks for chatting!"))
            assert len(fake.state.chats.chats) == 2  # the next message started a new chat

        # A new socket of the same session: same visitor, the current chat's history.
        with _open(url, cookie) as tab:
            assert _until(tab, _ready) == ready
            history = [_until(tab, lambda frame: frame["type"] == "message")["text"]]
            history.append(_until(tab, lambda frame: frame["type"] == "message")["text"])
            assert history == ["bye now", "Goodbye, and thanks for chatting!"]
        assert len(fake.state.visitors) == 1


# In process, on both backends -------------------------------------------------------------


async def test_the_relay_runs_on_asyncio_and_trio(giosg: FakeGiosg, tmp_path: Path) -> None:
    """The app driven over ASGI in process: a session's socket relays a chat on either backend."""
    await giosg.start_bot(ROOM_ID, organization_id=ORG_ID, typing_seconds=0.1)
    app = web_chat_app(giosg, tmp_path)
    cookie = f"{COOKIE_NAME}={secrets.token_urlsafe(32)}"
    scope: dict[str, Any] = {
        "type": "websocket",
        "asgi": {"version": "3.0"},
        "scheme": "ws",
        "path": "/ws",
        "raw_path": b"/ws",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"testserver"), (b"cookie", cookie.encode())],
        "server": ("testserver", 80),
        "client": ("127.0.0.1", 50000),
        "subprotocols": [],
    }
    to_app, app_inbox = anyio.create_memory_object_stream[dict[str, Any]](10)
    app_outbox, from_app = anyio.create_memory_object_stream[dict[str, Any]](100)

    async def receive() -> dict[str, Any]:
        return await app_inbox.receive()

    async def send(event: MutableMapping[str, Any]) -> None:
        await app_outbox.send(dict(event))

    async def frames_until(match: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
        frames: list[dict[str, Any]] = []
        with anyio.fail_after(WAIT_S):
            while not frames or not match(frames[-1]):
                event = await from_app.receive()
                assert event["type"] == "websocket.send", event
                frames.append(json.loads(event["text"]))
        return frames

    with anyio.fail_after(60):  # a hung relay fails the test instead of hanging the run
        async with (
            to_app,
            app_inbox,
            app_outbox,
            from_app,
            app.router.lifespan_context(app),
            anyio.create_task_group() as tg,
        ):
            tg.start_soon(app, scope, receive, send)
            await to_app.send({"type": "websocket.connect"})
            assert (await from_app.receive())["type"] == "websocket.accept"
            (ready,) = await frames_until(_ready)
            await to_app.send(
                {"type": "websocket.receive", "text": json.dumps({"type": "send", "text": "hi"})}
            )
            frames = await frames_until(_message(BOT_HELLO))
            assert [f["text"] for f in frames if f["type"] == "message"] == ["hi", BOT_HELLO]
            await to_app.send({"type": "websocket.disconnect", "code": 1000})
    assert ready["visitor_id"] in [
        visitor_id for v in giosg.state.visitors.values() for visitor_id in v.visitor_ids.values()
    ]


# The example script --------------------------------------------------------------------------


def _run_example_once(workdir: Path, cookie: str | None) -> tuple[str, str]:
    """Start run.py, open the page and the socket, stop it with ^C: (cookie, visitor id)."""
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "examples" / "web_chat" / "run.py"), "--port", "0"],
        cwd=workdir,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None
    try:
        ready, _, _ = select.select([process.stdout], [], [], 60)
        line = process.stdout.readline().decode() if ready else ""
        match = re.fullmatch(r"Web chat on (http://127\.0\.0\.1:\d+)/ \(Ctrl\+C to stop\)\n", line)
        assert match is not None, line
        url = match.group(1)
        cookies = {COOKIE_NAME: cookie} if cookie is not None else None
        response = httpx.get(url + "/", cookies=cookies, timeout=WAIT_S)
        assert response.status_code == 200
        assert 'id="messages"' in response.text
        cookie = cookie or str(response.cookies[COOKIE_NAME])
        with _open(url, cookie) as ws:
            # Generous: on a restart the SDK first tries the stored socket_url, which points
            # at the previous run's fake (gone), for up to its 10 s socket-open timeout.
            visitor_id = str(_until(ws, _ready, timeout=60)["visitor_id"])
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=30)
        assert process.returncode == 0, err.decode()
    finally:
        process.kill()
        process.wait()
    return cookie, visitor_id


def test_run_script_serves_the_page_and_resumes_after_a_restart(tmp_path: Path) -> None:
    """`examples/web_chat/run.py` prints its URL, serves, stops on ^C; a restart resumes."""
    cookie, visitor_id = _run_example_once(tmp_path, None)
    assert re.fullmatch(r"[0-9a-f]{32}", visitor_id)
    # The store holds the visitor, and the fake saved what it knows on the way out.
    assert (tmp_path / "web_chat.db").exists()
    assert (tmp_path / "fake-giosg.json").exists()
    assert _run_example_once(tmp_path, cookie) == (cookie, visitor_id)
