"""Chats end to end over real sockets against FakeGiosg (both backends)."""

from __future__ import annotations

import random

import anyio
import pytest

from giosg_visitor import (
    ChatEndedError,
    MessageTooLongError,
    NotFoundError,
    Visitor,
)
from giosg_visitor.chat import MessageStream
from giosg_visitor.models import Message
from giosg_visitor.realtime import ReconnectPolicy
from giosg_visitor.testing import FakeGiosg

from .._helpers import FAST_RETRY, ORG_ID


ROOM_ID = "9926bdfa-56e0-11e5-b98c-6c4008c08dfe"

#: Reconnect fast: the chaos tests drop the socket every second or two.
FAST_RECONNECT = ReconnectPolicy(first_delay=0.2, max_delay=1.0)


async def _operator_messages(chat_messages: MessageStream, count: int) -> list[Message]:
    received: list[Message] = []
    async for message in chat_messages:
        if message.sender_type == "user" and message.type == "msg":
            received.append(message)
            if len(received) == count:
                break
    return received


async def test_conversation_both_ways(giosg: FakeGiosg) -> None:
    """The visitor's message reaches the operator; the operator's reply reaches the app."""
    async with Visitor(ORG_ID, base_url=giosg.base_url) as visitor:
        operator = await giosg.operator_online(ROOM_ID, "Olivia")
        chat = await visitor.start_chat(ROOM_ID)
        sent = await chat.send("Hello!")
        assert sent.message == "Hello!"
        assert sent.is_from_visitor
        stored = await giosg.messages(chat.id)
        assert [m["message"] for m in stored] == ["Hello!"]
        await giosg.operator_says(chat.id, operator, "Hi, how can I help?")
        with anyio.fail_after(10):
            stream = chat.messages()
            seen = [await anext(stream) for _ in range(3)]
            await stream.aclose()
        assert [(m.type, m.sender_type, m.message) for m in seen] == [
            ("msg", "visitor", "Hello!"),
            ("join", "user", None),
            ("msg", "user", "Hi, how can I help?"),
        ]
        assert seen[2].sender_public_name == "Olivia"
        with anyio.fail_after(5):
            while chat.is_waiting:
                await chat.wait_changed()


@pytest.mark.parametrize(
    "drop_modes",
    [("reset", "close"), ("reset", "close", "blackhole")],
    ids=["reset-close", "with-blackhole"],
)
async def test_zero_loss_while_the_socket_keeps_dropping(
    giosg: FakeGiosg, drop_modes: tuple[str, ...]
) -> None:
    """The fake drops the socket every 0.5-2 s while an operator sends 500 messages:
    the app receives all 500 exactly once and in order."""
    count = 500
    rng = random.Random(1234)
    async with Visitor(
        ORG_ID,
        base_url=giosg.base_url,
        reconnect=FAST_RECONNECT,
        ping_interval=0.5,
        ping_timeout=0.5,
    ) as visitor:
        operator = await giosg.operator_online(ROOM_ID)
        chat = await visitor.start_chat(ROOM_ID)
        received: list[Message] = []
        drops = 0

        async def chaos() -> None:
            nonlocal drops
            while True:
                await anyio.sleep(rng.uniform(0.5, 2.0))
                drops += await giosg.drop_sockets(rng.choice(drop_modes))  # type: ignore[arg-type]

        async def operator_talks() -> None:
            for i in range(count):
                await giosg.operator_says(chat.id, operator, f"m{i:03d}")
                await anyio.sleep(0.005)

        with anyio.fail_after(90):
            async with anyio.create_task_group() as tg:
                tg.start_soon(chaos)
                tg.start_soon(operator_talks)
                received = await _operator_messages(chat.messages(), count)
                tg.cancel_scope.cancel()
        assert drops >= 2
        texts = [m.message for m in received]
        assert texts == [f"m{i:03d}" for i in range(count)]
        assert len({m.id for m in received}) == count


async def test_typing_and_operator_status_streams(giosg: FakeGiosg) -> None:
    """Operators coming online/offline and typing are seen live."""
    async with (
        Visitor(ORG_ID, base_url=giosg.base_url) as visitor,
        visitor.online_operators(ROOM_ID) as operators,
    ):
        assert operators.current == []
        operator = await giosg.operator_online(ROOM_ID, "Olivia")
        with anyio.fail_after(5):
            current = await anext(operators)
        assert [u.public_name for u in current] == ["Olivia"]
        assert (await visitor.room(ROOM_ID)).is_online
        chat = await visitor.start_chat(ROOM_ID)
        await giosg.operator_joins(chat.id, operator)
        changes = chat.member_changes()
        with anyio.fail_after(5):
            initial = [await anext(changes) for _ in range(2)]
            assert {m.member_type for m in initial} == {"visitor", "user"}
            await giosg.operator_typing(chat.id, operator, True)
            typing = await anext(changes)
            while not (typing.is_operator and typing.is_typing):
                typing = await anext(changes)
            await giosg.operator_typing(chat.id, operator, False)
            stopped = await anext(changes)
            while stopped.is_typing:
                stopped = await anext(changes)
        await changes.aclose()
        assert typing.member_public_name == "Olivia"
        await giosg.operator_offline(ROOM_ID, operator)
        with anyio.fail_after(5):
            assert await anext(operators) == []


async def test_online_operators_close_like_every_other_stream(giosg: FakeGiosg) -> None:
    """``aclose()`` stops following the room as leaving ``async with`` does; twice is fine."""
    async with Visitor(ORG_ID, base_url=giosg.base_url) as visitor:
        operators = visitor.online_operators(ROOM_ID)
        async with operators:
            await operators.aclose()
            await operators.aclose()
            await giosg.operator_online(ROOM_ID, "Olivia")
            with anyio.fail_after(5):
                assert [current async for current in operators] == []
        assert operators.current == []


async def test_visitor_typing_reaches_the_server(giosg: FakeGiosg) -> None:
    """chat.typing() updates the visitor's composing status."""
    async with Visitor(ORG_ID, base_url=giosg.base_url) as visitor:
        chat = await visitor.start_chat(ROOM_ID)
        await chat.typing(True)
        members = {m.member_id: m for m in await chat.members()}
        assert members[visitor.visitor_id].composing_status == "typing"
        await chat.typing(False)
        members = {m.member_id: m for m in await chat.members()}
        assert members[visitor.visitor_id].composing_status == "idle"


class TestEndedChats:
    """An ended chat rejects sends with ChatEndedError."""

    async def test_operator_ends_live(self, giosg: FakeGiosg) -> None:
        """The live state follows the operator ending the chat; send is refused."""
        async with Visitor(ORG_ID, base_url=giosg.base_url) as visitor:
            chat = await visitor.start_chat(ROOM_ID)
            await giosg.end_chat(chat.id)
            with anyio.fail_after(5):
                await chat.wait_ended()
            with pytest.raises(ChatEndedError):
                await chat.send("anyone?")
            assert len(await giosg.messages(chat.id)) == 0

    async def test_server_refusal_is_typed_without_live_state(self, giosg: FakeGiosg) -> None:
        """Without a socket, the server's refusal is recognised and typed."""
        async with Visitor(ORG_ID, base_url=giosg.base_url, realtime=False) as visitor:
            chat = await visitor.start_chat(ROOM_ID)
            await giosg.end_chat(chat.id)
            assert not chat.is_ended
            with pytest.raises(ChatEndedError) as info:
                await chat.send("anyone?")
            assert info.value.status_code == 403
            assert chat.is_ended

    async def test_visitor_ends(self, giosg: FakeGiosg) -> None:
        """chat.end() ends the chat on the server."""
        async with Visitor(ORG_ID, base_url=giosg.base_url) as visitor:
            chat = await visitor.start_chat(ROOM_ID)
            info = await chat.end()
            assert info.is_ended
            assert info.ended_at is not None
            again = await visitor.chat(chat.id)
            assert again.is_ended


async def test_message_length_is_checked_before_sending(giosg: FakeGiosg) -> None:
    """A message over 2000 characters raises MessageTooLongError; nothing is sent."""
    async with Visitor(ORG_ID, base_url=giosg.base_url) as visitor:
        chat = await visitor.start_chat(ROOM_ID)
        before = len(giosg.requests)
        with pytest.raises(MessageTooLongError) as info:
            await chat.send("x" * 2001)
        assert (info.value.length, info.value.limit) == (2001, 2000)
        assert len(giosg.requests) == before
        assert (await chat.send("x" * 2000)).message == "x" * 2000


async def test_pagination_across_many_pages() -> None:
    """History and chat lists follow next links across many pages, in order."""
    async with (
        FakeGiosg(page_size=4, rooms=[ROOM_ID]) as giosg,
        Visitor(ORG_ID, base_url=giosg.base_url) as visitor,
    ):
        operator = await giosg.operator_online(ROOM_ID)
        chats = [await visitor.start_chat(ROOM_ID) for _ in range(9)]
        for i in range(23):
            await giosg.operator_says(chats[0].id, operator, f"p{i}")
        history = await chats[0].history()
        texts = [m.message for m in history if m.type == "msg"]
        assert texts == [f"p{i}" for i in range(23)]
        listed = [chat.id async for chat in visitor.chats()]
        assert listed == [chat.id for chat in chats]
    pages = [r for r in giosg.requests if r.path.endswith("/messages") and r.method == "GET"]
    assert len(pages) == 6  # 24 messages (23 + join) in pages of 4


async def test_relative_next_links_over_real_sockets() -> None:
    """A server whose next links are ``?cursor=...`` (relative to the page) is followed."""
    async with (
        FakeGiosg(page_size=3, next_links="relative") as giosg,
        Visitor(ORG_ID, base_url=giosg.base_url) as visitor,
    ):
        operator = await giosg.operator_online(ROOM_ID)
        chat = await visitor.start_chat(ROOM_ID)
        for i in range(10):
            await giosg.operator_says(chat.id, operator, f"p{i}")
        history = await chat.history()
        assert [m.message for m in history if m.type == "msg"] == [f"p{i}" for i in range(10)]
    pages = [r for r in giosg.requests if r.path.endswith("/messages") and r.method == "GET"]
    assert len(pages) == 4  # 11 messages (10 + join) in pages of 3, none sent to "/"
    assert not [r for r in giosg.requests if r.path == "/"]


async def test_lost_send_response_is_reconciled_not_resent(giosg: FakeGiosg) -> None:
    """A send processed by the server but whose response is lost is found by read-back."""
    async with Visitor(ORG_ID, base_url=giosg.base_url, retry=FAST_RETRY) as visitor:
        chat = await visitor.start_chat(ROOM_ID)
        giosg.inject(endpoint="api", reset=True, after_processing=True, path_contains="/messages")
        message = await chat.send("only once")
        assert message.message == "only once"
        stored = await giosg.messages(chat.id)
        assert [m["message"] for m in stored] == ["only once"]
        posts = [r for r in giosg.requests if r.method == "POST" and r.path.endswith("/messages")]
        assert len(posts) == 1


async def test_join_room_keeps_presence_fresh(giosg: FakeGiosg) -> None:
    """join_room registers presence and refreshes it at half its lifetime."""
    async with Visitor(ORG_ID, base_url=giosg.base_url, presence_expires_in=2) as visitor:
        await visitor.join_room(ROOM_ID)
        await anyio.sleep(2.3)
    presence = [r for r in giosg.requests if "/visitors" in r.path and "/rooms/" in r.path]
    assert [r.method for r in presence][:3] == ["POST", "PATCH", "PATCH"]
    assert all(r.status in (200, 201) for r in presence)


async def test_unknown_chat_is_not_found(giosg: FakeGiosg) -> None:
    """A chat that is not the visitor's gives NotFoundError."""
    async with Visitor(ORG_ID, base_url=giosg.base_url) as visitor:
        with pytest.raises(NotFoundError):
            await visitor.chat("58f5055c-56e0-11e5-9354-6c4008c08dfe")


async def test_a_timeout_during_backfill_loses_nothing(giosg: FakeGiosg) -> None:
    """A caller's timeout that cuts a post-reconnect backfill short does not lose messages."""
    async with Visitor(ORG_ID, base_url=giosg.base_url, reconnect=FAST_RECONNECT) as visitor:
        operator = await giosg.operator_online(ROOM_ID)
        chat = await visitor.start_chat(ROOM_ID)
        async with chat.messages() as stream:
            giosg.inject(endpoint="api", latency=1.5, path_contains="/messages")
            await giosg.drop_sockets("reset")
            await giosg.operator_says(chat.id, operator, "said while disconnected")
            with anyio.move_on_after(0.8):
                await anext(stream)  # stuck in the slow backfill, then cancelled
            texts = []
            with anyio.fail_after(10):
                while "said while disconnected" not in texts:
                    texts.append((await anext(stream)).message)
            await giosg.operator_says(chat.id, operator, "said later")
            with anyio.fail_after(10):
                assert (await anext(stream)).message == "said later"
        assert texts.count("said while disconnected") == 1


async def test_room_brand(giosg: FakeGiosg) -> None:
    """A room without a brand gives None; with one, its attributes."""
    async with Visitor(ORG_ID, base_url=giosg.base_url) as visitor:
        assert await visitor.brand(ROOM_ID) is None
        await giosg.set_brand(ROOM_ID, {"name": "Acme", "primary_color": "#123456"})
        assert await visitor.brand(ROOM_ID) == {"name": "Acme", "primary_color": "#123456"}
