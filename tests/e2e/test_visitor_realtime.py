"""The visitor's socket against FakeGiosg's message router (both backends)."""

from __future__ import annotations

import logging

import anyio
import attrs
import pytest

from giosg_visitor import (
    Change,
    ConnectionState,
    GiosgError,
    InvalidSecretError,
    MemoryStore,
    Secret,
    SubscriptionError,
    UntrustedEndpointError,
    Visitor,
)
from giosg_visitor.realtime import RealtimeConnection
from giosg_visitor.testing import FakeGiosg

from .._helpers import ORG_ID, wait_until
from ..reliability._resources import task_count


ROOM_ID = "9926bdfa-56e0-11e5-b98c-6c4008c08dfe"


async def test_entering_opens_the_socket(giosg: FakeGiosg) -> None:
    """After `async with`, the socket is open and the visitor's chats channel confirmed."""
    async with Visitor(ORG_ID, base_url=giosg.base_url) as visitor:
        assert visitor.realtime.state is ConnectionState.OPEN
        chats = f"/api/v5/public/visitors/{visitor.visitor_id}/chats"
        await wait_until(lambda: len(giosg.router.subs) >= 1)
        assert [f.channel for f in giosg.router.subs] == [chats]


async def test_raw_subscription_receives_pushed_changes(giosg: FakeGiosg) -> None:
    """visitor.subscribe() streams typed Change events for a channel."""
    async with Visitor(ORG_ID, base_url=giosg.base_url) as visitor:
        channel = f"/api/v5/public/orgs/{ORG_ID}/rooms/{ROOM_ID}"
        async with visitor.subscribe(channel) as subscription:
            await subscription.wait_subscribed()
            await giosg.push(channel, "changed", {"id": ROOM_ID, "is_online": True})
            with anyio.fail_after(5):
                event = await anext(subscription)
        assert isinstance(event, Change)
        assert (event.channel, event.action, event.resource_id) == (channel, "changed", ROOM_ID)
        assert event.resource == {"id": ROOM_ID, "is_online": True}


async def test_foreign_channel_is_refused(giosg: FakeGiosg) -> None:
    """Subscribing to another visitor's channel fails with SubscriptionError naming it."""
    async with Visitor(ORG_ID, base_url=giosg.base_url) as visitor:
        channel = "/api/v5/public/visitors/0123456789abcdef0123456789abcdef/chats"
        async with visitor.subscribe(channel) as subscription:
            with anyio.fail_after(5), pytest.raises(SubscriptionError) as info:
                await subscription.wait_subscribed()
        assert info.value.channel == channel


async def test_renewal_while_connected_never_shows_an_expired_token() -> None:
    """With 3 s tokens and a strict router, 8 s connected: zero expired-token rejections."""
    channel = f"/api/v5/public/orgs/{ORG_ID}/rooms/{ROOM_ID}/online_users"
    received = 0
    async with (
        FakeGiosg(token_lifetime=3, strict_socket_expiry=True, rooms=[ROOM_ID]) as giosg,
        Visitor(ORG_ID, base_url=giosg.base_url) as visitor,
        visitor.subscribe(channel) as subscription,
    ):
        await subscription.wait_subscribed()
        with anyio.move_on_after(8):
            while True:
                await giosg.push(channel, "added", {"id": f"u{received}"})
                with anyio.fail_after(5):
                    event = await anext(subscription)
                if isinstance(event, Change):
                    received += 1
                await anyio.sleep(0.2)
        assert received >= 20
        assert giosg.router.expiry_closes == 0
        assert giosg.router.expired_token_subs == []
        assert len(giosg.auth_requests) >= 4  # renewed at least three times
        assert giosg.expired_token_requests == []


async def test_sockjs_framing_end_to_end() -> None:
    """With socket_strategy="sockjs" the same chat works over SockJS frames."""
    async with (
        FakeGiosg(heartbeat_interval=0.5, rooms=[ROOM_ID]) as giosg,
        Visitor(ORG_ID, base_url=giosg.base_url, socket_strategy="sockjs") as visitor,
    ):
        operator = await giosg.operator_online(ROOM_ID)
        chat = await visitor.start_chat(ROOM_ID)
        await giosg.operator_says(chat.id, operator, "over sockjs")
        with anyio.fail_after(5):
            async with chat.messages() as stream:
                async for message in stream:
                    if message.message == "over sockjs":
                        break
        await anyio.sleep(1.2)  # a couple of SockJS heartbeats pass without harm
        assert visitor.realtime.state is ConnectionState.OPEN
        assert [client.framing for client in giosg.router.clients] == ["sockjs"]


async def test_untrusted_socket_url_is_refused_before_connecting(giosg: FakeGiosg) -> None:
    """A socket_url off the allowlist fails the start; no socket is opened anywhere."""
    giosg.state.auth_response_hook = lambda p: {
        **p,
        "socket_url": "https://messagerouter.giosg.com.evil.example/003/2/router",
    }
    with pytest.raises(UntrustedEndpointError):
        async with Visitor(ORG_ID, base_url=giosg.base_url):
            pass
    assert giosg.router.handshakes == 0


async def test_realtime_can_be_disabled(giosg: FakeGiosg) -> None:
    """realtime=False opens no socket; live APIs say so clearly."""
    async with Visitor(ORG_ID, base_url=giosg.base_url, realtime=False) as visitor:
        with pytest.raises(RuntimeError, match="realtime=False"):
            visitor.subscribe("/x")
        chat = await visitor.start_chat(ROOM_ID)
        await chat.send("REST still works")
    assert giosg.router.handshakes == 0


async def test_a_socket_that_fails_for_good_does_not_break_the_visitor(giosg: FakeGiosg) -> None:
    """After a fatal socket failure, REST keeps working, live APIs raise, exit is clean."""
    async with Visitor(ORG_ID, base_url=giosg.base_url) as visitor:
        await giosg.refuse_handshakes(404)  # "no such endpoint": reconnecting cannot help
        await giosg.drop_sockets("reset")
        await wait_until(lambda: visitor.realtime.state is ConnectionState.CLOSED, seconds=10)
        chat = await visitor.start_chat(ROOM_ID)
        assert (await chat.send("REST still works")).message == "REST still works"
        with pytest.raises(GiosgError):
            async with visitor.subscribe("/api/v5/public/x") as subscription:
                await subscription.wait_subscribed()


async def test_a_socket_that_fails_for_good_is_logged_once(
    giosg: FakeGiosg, caplog: pytest.LogCaptureFixture
) -> None:
    """The chats channel ending for good says so once, with the error's type only."""
    with caplog.at_level(logging.WARNING, logger="giosg_visitor.visitor"):
        async with Visitor(ORG_ID, base_url=giosg.base_url) as visitor:
            await giosg.refuse_handshakes(404)
            await giosg.drop_sockets("reset")
            await wait_until(lambda: visitor.realtime.state is ConnectionState.CLOSED, seconds=10)
    stopped = [r for r in caplog.records if "live chat state stopped" in r.getMessage()]
    assert [r.getMessage() for r in stopped] == ["live chat state stopped: HandshakeRejectedError"]
    assert stopped[0].levelno == logging.WARNING


async def test_following_the_chats_takes_no_task_of_its_own(giosg: FakeGiosg) -> None:
    """A connected visitor runs what a bare socket runs, nothing more: its chats channel
    is folded into the chats on the read loop, and its renewal schedule rides the timer
    task that also runs the socket's keepalive (issue #14)."""

    async def settled_task_count() -> int:
        # Let tasks that end once connected (the stale socket_url check) finish.
        for _ in range(3):
            await anyio.wait_all_tasks_blocked()
            await anyio.sleep(0.05)
        return task_count()

    base = await settled_task_count()
    token = Secret("a-token-the-socket-is-never-asked-for")

    async def provider() -> Secret:
        return token

    # A bare connection with the visitor's socket settings: what one socket costs in tasks.
    async with RealtimeConnection(socket_url=giosg.socket_url, token_provider=provider) as bare:
        await bare.wait_connected()
        socket_tasks = await settled_task_count() - base
    assert await settled_task_count() == base
    async with Visitor(ORG_ID, base_url=giosg.base_url) as visitor:
        chat = await visitor.start_chat(ROOM_ID, join_room=False)
        visitor_tasks = await settled_task_count() - base
        # The chats channel still keeps the chat current.
        await giosg.end_chat(chat.id)
        with anyio.fail_after(5):
            await chat.wait_ended()
    assert socket_tasks >= 1
    assert visitor_tasks == socket_tasks


async def test_a_stale_stored_socket_url_is_refreshed_by_auth(giosg: FakeGiosg) -> None:
    """A stored token whose socket_url no longer answers leads to one re-auth, quickly."""
    store = MemoryStore()
    async with Visitor(ORG_ID, base_url=giosg.base_url, store=store):
        pass
    record = await store.load("default")
    assert record is not None
    stale = attrs.evolve(record.sessions[ORG_ID], socket_url="http://127.0.0.1:9/router")
    await store.save("default", record.with_session(stale))
    started = anyio.current_time()
    async with Visitor(ORG_ID, base_url=giosg.base_url, store=store) as visitor:
        assert visitor.realtime.state is ConnectionState.OPEN
        assert visitor.socket_url == giosg.socket_url
    assert anyio.current_time() - started < 5
    assert len(giosg.auth_requests) == 2


async def test_a_revoked_stored_token_fails_the_start_typed(giosg: FakeGiosg) -> None:
    """A stored token of a revoked visitor: the start raises InvalidSecretError, not a
    socket error; with the opt-in, a new visitor starts and the change is reported."""
    store = MemoryStore()
    async with Visitor(ORG_ID, base_url=giosg.base_url, store=store) as first:
        old_id = first.visitor_id
    await giosg.revoke_visitor(old_id)
    with pytest.raises(InvalidSecretError):
        async with Visitor(ORG_ID, base_url=giosg.base_url, store=store):
            pass
    async with Visitor(
        ORG_ID, base_url=giosg.base_url, store=store, on_invalid_secret="new_visitor"
    ) as fresh:
        assert fresh.visitor_id != old_id
        assert fresh.identity_change is not None
        assert fresh.realtime.state is ConnectionState.OPEN


async def test_join_room_then_close_at_once(giosg: FakeGiosg) -> None:
    """Closing right after join_room is clean (the presence task ends quietly)."""
    async with Visitor(ORG_ID, base_url=giosg.base_url, presence_expires_in=1) as visitor:
        await visitor.join_room(ROOM_ID)
    await anyio.sleep(0.6)
