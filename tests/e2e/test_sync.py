"""The blocking facade (giosg_visitor.sync) over a running FakeGiosg."""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar, TypeVarTuple

import anyio
import pytest

from giosg_visitor import (
    Change,
    ChatEndedError,
    MemoryStore,
    ReconnectPolicy,
    RenewalPolicy,
    SessionState,
    TransportError,
    sync,
)
from giosg_visitor.models import Message
from giosg_visitor.notebook import transcript_html
from giosg_visitor.testing import FakeGiosg

from .._helpers import FAST_RETRY, ORG_ID


ROOM_ID = "9926bdfa-56e0-11e5-b98c-6c4008c08dfe"

T = TypeVar("T")
Ts = TypeVarTuple("Ts")


@pytest.fixture
def server() -> Iterator[FakeGiosg]:
    """A FakeGiosg started and stopped with its blocking API (no event loop in the test)."""
    fake = FakeGiosg(organizations={ORG_ID}, rooms=[ROOM_ID])
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()


def control(func: Callable[[*Ts], Awaitable[T]], *args: *Ts) -> T:
    """Run one of FakeGiosg's async operator controls from a sync test."""
    return anyio.run(func, *args)


def operator_texts(stream: sync.MessageStream, count: int) -> list[Message]:
    """Read until ``count`` operator text messages have arrived."""
    received: list[Message] = []
    for message in stream:
        if message.sender_type == "user" and message.type == "msg":
            received.append(message)
            if len(received) == count:
                break
    return received


def secrets_of(fake: FakeGiosg) -> list[str]:
    """Every visitor secret and access token the fake has handed out."""
    found = [*fake.state.visitors, *fake.state.tokens]
    assert found
    return found


@pytest.mark.parametrize("backend", ["asyncio", "trio"], ids=["asyncio", "trio"])
def test_conversation_both_ways(server: FakeGiosg, backend: str) -> None:
    """A message goes out, the operator's reply comes in, on either portal backend."""
    with sync.Visitor(ORG_ID, base_url=server.base_url, backend=backend) as visitor:  # type: ignore[arg-type]
        operator = control(server.operator_online, ROOM_ID, "Olivia")
        chat = visitor.start_chat(ROOM_ID)
        sent = chat.send("Hello!")
        assert (sent.message, sent.is_from_visitor) == ("Hello!", True)
        stored = control(server.messages, chat.id)
        assert [m["message"] for m in stored] == ["Hello!"]
        control(server.operator_says, chat.id, operator, "Hi, how can I help?")
        with chat.messages(timeout=10) as stream:
            seen = [next(stream) for _ in range(3)]
        assert [(m.type, m.sender_type, m.message) for m in seen] == [
            ("msg", "visitor", "Hello!"),
            ("join", "user", None),
            ("msg", "user", "Hi, how can I help?"),
        ]
        assert seen[2].sender_public_name == "Olivia"
        while chat.is_waiting:
            chat.wait_changed(timeout=5)
        assert [m.message for m in chat.history()] == [m.message for m in seen]
        assert [c.id for c in visitor.chats()] == [chat.id]
        assert visitor.chat(chat.id).id == chat.id
        assert visitor.room(ROOM_ID).is_online


def test_message_timeout_keeps_the_stream_usable(server: FakeGiosg) -> None:
    """A per-item timeout raises TimeoutError; the next message still arrives, once."""
    with sync.Visitor(ORG_ID, base_url=server.base_url) as visitor:
        operator = control(server.operator_online, ROOM_ID)
        chat = visitor.start_chat(ROOM_ID)
        stream = chat.messages(include_history=False, timeout=0.2)
        with pytest.raises(TimeoutError):
            next(stream)
        control(server.operator_says, chat.id, operator, "late, but here")
        replies = operator_texts(stream, 1)
        assert [m.message for m in replies] == ["late, but here"]
        with pytest.raises(TimeoutError):
            next(stream)
        stream.close()
        stream.close()
        with pytest.raises(RuntimeError, match="closed"):
            next(stream)


def test_timeout_during_backfill_loses_nothing(server: FakeGiosg) -> None:
    """A timeout during the post-reconnect backfill loses nothing: outage messages arrive."""
    reconnect = ReconnectPolicy(first_delay=0.5, max_delay=0.5)
    with sync.Visitor(ORG_ID, base_url=server.base_url, reconnect=reconnect) as visitor:
        operator = control(server.operator_online, ROOM_ID)
        chat = visitor.start_chat(ROOM_ID)
        stream = chat.messages(include_history=False, timeout=0.3)
        with pytest.raises(TimeoutError):
            next(stream)  # subscribed, nothing yet
        assert control(server.drop_sockets, "close") == 1
        control(server.operator_says, chat.id, operator, "during the outage")
        server.inject(endpoint="api", latency=1.5, path_contains="/messages")
        with pytest.raises(TimeoutError):
            next(stream)  # the backfill is slow: this wait gives up, the backfill goes on
        control(server.operator_says, chat.id, operator, "after the outage")
        received: list[str | None] = []
        for _ in range(20):
            try:
                message = next(stream)
            except TimeoutError:
                continue
            if message.type == "msg":
                received.append(message.message)
            if len(received) == 2:
                break
        assert received == ["during the outage", "after the outage"]


def test_online_operators_current_and_changes(server: FakeGiosg) -> None:
    """online_operators() gives the current list, then blocks for each change."""
    with (
        sync.Visitor(ORG_ID, base_url=server.base_url) as visitor,
        visitor.online_operators(ROOM_ID, timeout=5) as operators,
    ):
        assert operators.current == []
        assert not operators.is_online
        operator = control(server.operator_online, ROOM_ID, "Olivia")
        assert [u.public_name for u in next(operators)] == ["Olivia"]
        assert operators.is_online
        assert "online=1" in repr(operators)
        control(server.operator_offline, ROOM_ID, operator)
        assert next(operators) == []
    operators.close()
    with pytest.raises(RuntimeError, match="closed"):
        next(operators)


def test_typing_and_member_changes(server: FakeGiosg) -> None:
    """typing() reaches the server; member_changes() starts with the current members."""
    with sync.Visitor(ORG_ID, base_url=server.base_url) as visitor:
        operator = control(server.operator_online, ROOM_ID, "Olivia")
        chat = visitor.start_chat(ROOM_ID)
        control(server.operator_joins, chat.id, operator)
        chat.typing(True)
        members = {m.member_id: m for m in chat.members()}
        assert members[visitor.visitor_id].composing_status == "typing"
        with chat.member_changes(timeout=5) as changes:
            initial = [next(changes) for _ in range(2)]
            assert {m.member_type for m in initial} == {"visitor", "user"}
            control(server.operator_typing, chat.id, operator, True)
            typing = next(changes)
            while not (typing.is_operator and typing.is_typing):
                typing = next(changes)
        assert typing.member_public_name == "Olivia"


def test_raw_subscription(server: FakeGiosg) -> None:
    """subscribe() yields the channel's raw Change notifications."""
    with sync.Visitor(ORG_ID, base_url=server.base_url) as visitor:
        channel = f"/api/v5/public/visitors/{visitor.visitor_id}/custom"
        with visitor.subscribe(channel, timeout=5) as subscription:
            subscription.wait_subscribed(timeout=5)
            control(server.push, channel, "added", {"id": "x1", "value": 1})
            event = next(subscription)
        assert isinstance(event, Change)
        assert (event.action, event.resource_id) == ("added", "x1")
        assert channel in repr(subscription)


class TestEndedChats:
    """An ended chat refuses messages with ChatEndedError."""

    def test_operator_ends(self, server: FakeGiosg) -> None:
        """wait_ended() follows the operator ending the chat; send() is refused."""
        with sync.Visitor(ORG_ID, base_url=server.base_url) as visitor:
            chat = visitor.start_chat(ROOM_ID)
            with pytest.raises(TimeoutError):
                chat.wait_ended(timeout=0.1)
            control(server.end_chat, chat.id)
            chat.wait_ended(timeout=5)
            assert chat.is_ended
            with pytest.raises(ChatEndedError):
                chat.send("anyone?")
            assert control(server.messages, chat.id) == []

    def test_visitor_ends(self, server: FakeGiosg) -> None:
        """chat.end() ends the chat on the server."""
        with sync.Visitor(ORG_ID, base_url=server.base_url) as visitor:
            chat = visitor.start_chat(ROOM_ID)
            assert chat.end().is_ended
            assert visitor.chat(chat.id).refresh().is_ended
            assert "ended" in repr(chat)
            with pytest.raises(ChatEndedError):
                chat.send("anyone?")


def test_reprs_are_readable_and_secret_free(server: FakeGiosg) -> None:
    """Every object's repr (and the transcript) names what it is and never a secret."""
    with sync.Visitor(ORG_ID, base_url=server.base_url) as visitor:
        operator = control(server.operator_online, ROOM_ID, "Olivia")
        chat = visitor.start_chat(ROOM_ID)
        chat.send("Hello!")
        control(server.operator_says, chat.id, operator, "Hi!")
        stream = chat.messages(timeout=5)
        operators = visitor.online_operators(ROOM_ID)
        subscription = visitor.subscribe(f"/api/v5/public/visitors/{visitor.visitor_id}/x")
        transcript = chat.transcript(title="Support")
        shown = [
            repr(visitor),
            repr(chat),
            repr(stream),
            repr(operators),
            repr(subscription),
            repr(transcript),
            str(transcript),
            transcript_html(transcript.messages),
            repr(chat.info),
            repr(chat.history()),
        ]
        assert repr(visitor) == (
            f"<sync.Visitor org={ORG_ID} key='default' "
            f"visitor_id={visitor.visitor_id} state=authenticated>"
        )
        assert repr(chat) in (f"<sync.Chat {chat.id} open>", f"<sync.Chat {chat.id} waiting>")
        assert "Olivia: Hi!" in str(transcript)
    shown.append(repr(visitor))
    assert repr(visitor).endswith("state=closed>")
    for secret in secrets_of(server):
        for text in shown:
            assert secret not in text


def test_properties_mirror_the_async_visitor(server: FakeGiosg) -> None:
    """visitor_id, organization_id, state, socket_url and identity_change are readable."""
    store = MemoryStore()
    # The first renewal after start waits out min_spacing (no renew loops): keep it short.
    quick = RenewalPolicy(min_spacing=0.05)
    visitor = sync.Visitor(
        ORG_ID, base_url=server.base_url, store=store, key="user-1", renewal=quick
    )
    assert repr(visitor).endswith("visitor_id=None state=anonymous>")
    with pytest.raises(RuntimeError, match="not been started"):
        visitor.start_chat(ROOM_ID)
    assert visitor.start() is visitor
    try:
        assert visitor.organization_id == ORG_ID
        assert visitor.key == "user-1"
        assert len(visitor.visitor_id) == 32
        assert visitor.state is SessionState.AUTHENTICATED
        assert visitor.socket_url.startswith("http://127.0.0.1:")
        assert visitor.identity_change is None
        token_requests = len(server.auth_requests)
        visitor.renew()
        assert len(server.auth_requests) == token_requests + 1
        assert visitor.call(visitor.async_visitor.room, ROOM_ID).id == ROOM_ID
        first_id = visitor.visitor_id
    finally:
        visitor.close()
    with sync.Visitor(ORG_ID, base_url=server.base_url, store=store, key="user-1") as again:
        assert again.visitor_id == first_id  # resumed from the store


class TestLifecycle:
    """Starting, closing and misuse."""

    def test_close_twice_and_use_after_close(self, server: FakeGiosg) -> None:
        """Closing twice is fine; any use after close raises RuntimeError."""
        visitor = sync.Visitor(ORG_ID, base_url=server.base_url).start()
        chat = visitor.start_chat(ROOM_ID)
        stream = chat.messages(timeout=5)
        visitor.close()
        visitor.close()
        assert visitor.state is SessionState.CLOSED
        assert stream.is_closed
        for use in (
            lambda: visitor.start_chat(ROOM_ID),
            visitor.chats,
            visitor.renew,
            lambda: chat.send("hello?"),
            chat.history,
            lambda: next(stream),
            visitor.start,
        ):
            with pytest.raises(RuntimeError, match="closed"):
                use()
        stream.close()  # closing a stream of a closed visitor is a no-op

    def test_start_only_once(self, server: FakeGiosg) -> None:
        """A sync Visitor starts once, and not at all after close()."""
        with (
            sync.Visitor(ORG_ID, base_url=server.base_url) as visitor,
            pytest.raises(RuntimeError, match="only once"),
        ):
            visitor.start()
        unstarted = sync.Visitor(ORG_ID, base_url=server.base_url)
        unstarted.close()
        assert unstarted.state is SessionState.CLOSED
        with pytest.raises(RuntimeError, match="closed"):
            unstarted.start()

    def test_bad_arguments_fail_at_once(self) -> None:
        """Invalid arguments raise ValueError from the constructor, before any thread."""
        with pytest.raises(ValueError, match="organization_id"):
            sync.Visitor("")
        with pytest.raises(ValueError, match="backend"):
            sync.Visitor(ORG_ID, backend="curio")  # type: ignore[arg-type]

    def test_failed_start_stops_the_thread(self) -> None:
        """A start that cannot reach the server raises a typed error and leaks no thread."""
        before = threading.active_count()
        visitor = sync.Visitor(ORG_ID, base_url="http://127.0.0.1:9", retry=FAST_RETRY)
        with pytest.raises(TransportError):
            visitor.start()
        assert threading.active_count() == before
        assert visitor.state is SessionState.CLOSED

    def test_close_wakes_a_reader_in_another_thread(self, server: FakeGiosg) -> None:
        """close() ends a blocked iteration in another thread instead of hanging."""
        visitor = sync.Visitor(ORG_ID, base_url=server.base_url).start()
        chat = visitor.start_chat(ROOM_ID)
        stream = chat.messages(include_history=False)
        outcome: list[object] = []
        waiting = threading.Event()

        def read() -> None:
            waiting.set()
            outcome.extend(stream)
            outcome.append("ended")

        reader = threading.Thread(target=read)
        reader.start()
        waiting.wait(5)
        visitor.close()
        reader.join(5)
        assert not reader.is_alive()
        assert outcome == ["ended"]


def _scenario(base_url: str) -> str:
    """Start a visitor, chat, and read the history back: all blocking."""
    with sync.Visitor(ORG_ID, base_url=base_url) as visitor:
        chat = visitor.start_chat(ROOM_ID)
        chat.send("from inside a running loop")
        history = chat.history()
        chat.end()
    return str(history[-1].message)


async def test_usable_while_an_event_loop_runs(server: FakeGiosg) -> None:
    """The facade works while a loop runs (as in Jupyter): from a worker thread or inline."""
    in_worker = await anyio.to_thread.run_sync(_scenario, server.base_url)
    assert in_worker == "from inside a running loop"
    # Blocking the running loop on purpose: the facade's own loop is in another thread.
    assert _scenario(server.base_url) == "from inside a running loop"


@pytest.mark.parametrize("backend", ["asyncio", "trio"], ids=["asyncio", "trio"])
def test_choose_a_button(server: FakeGiosg, backend: str) -> None:
    """The blocking Chat.choose sends the visitor's choice of a button."""
    with sync.Visitor(ORG_ID, base_url=server.base_url, backend=backend) as visitor:  # type: ignore[arg-type]
        operator = control(server.operator_online, ROOM_ID, "Olivia")
        chat = visitor.start_chat(ROOM_ID)
        control(server.operator_sends_buttons, chat.id, operator, "Pick", ["A", "B"])
        (card,) = [m for m in chat.history() if m.attachments]
        choice = chat.choose(card.actions[1])
        assert choice.response_to is not None
        assert choice.response_to.key == card.actions[1].key
        assert choice.response_to.value == "B"
        stored = control(server.messages, chat.id)
        assert [m["response_value"] for m in stored if m["type"] == "action"] == ["B"]
