"""Server-side token invalidation: a refused ``sub`` is handled like an HTTP 401.

The server may end tokens early (revocation, a clock ahead of ours). When the socket
then drops, every resubscription is refused; on a live socket, a new channel is. Either
way the connection renews the token once (single-flight), subscribes again with the
fresh one, and the live streams go on (with a ``Resubscribed`` marker and a backfill
after a reconnect). Only a refusal of a freshly issued token is a ``SubscriptionError``.

Run against FakeGiosg's own router and against the real sockjs-node router, on both
backends.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import anyio.lowlevel
import pytest

from giosg_visitor import RenewalPolicy, Secret, SubscriptionError, Visitor
from giosg_visitor.models import Message
from giosg_visitor.realtime import (
    Change,
    RealtimeConnection,
    ReconnectPolicy,
    Resubscribed,
)
from giosg_visitor.testing import FakeGiosg

from .._helpers import ORG_ID
from .._sockjs_router import SockJSRouter


ROOM_ID = "9926bdfa-56e0-11e5-b98c-6c4008c08dfe"
FAST_RECONNECT = ReconnectPolicy(first_delay=0.05, max_delay=0.2)
#: A token younger than the renewal spacing counts as freshly issued: renewing it cannot
#: help. The tests shorten the spacing and let the first token age past it.
SPACING = RenewalPolicy(min_spacing=0.3)
TOKEN_AGE = 0.4
CHANNELS = [
    f"/api/v5/public/visitors/8a60b202474547dbb8ce19737e4c166f/{name}"
    for name in ("chats", "chat_memberships", "chats/1/messages")
]


@asynccontextmanager
async def fake_giosg(router: str, sockjs_router: SockJSRouter | None) -> AsyncIterator[FakeGiosg]:
    """FakeGiosg with its own router (``"builtin"``) or the sockjs-node one."""
    if router == "builtin":
        async with FakeGiosg() as giosg:
            yield giosg
        return
    assert sockjs_router is not None
    async with FakeGiosg(socket_url=sockjs_router.socket_url) as giosg:
        await sockjs_router.attach(giosg)
        yield giosg


async def drop_sockets(giosg: FakeGiosg, sockjs_router: SockJSRouter | None) -> None:
    if sockjs_router is not None:
        await sockjs_router.drop()
    else:
        await giosg.drop_sockets("close", code=1011)


@pytest.fixture(params=["builtin", "sockjs-node"])
def router(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def maybe_sockjs_router(router: str, request: pytest.FixtureRequest) -> SockJSRouter | None:
    if router == "builtin":
        return None
    found: SockJSRouter = request.getfixturevalue("sockjs_router")
    return found


async def _next_operator_message(stream: AsyncIterator[Message], text: str) -> Message:
    async for message in stream:
        if message.sender_type == "user" and message.message == text:
            return message
    raise AssertionError("the message stream ended")


async def test_streams_survive_tokens_ended_early_and_a_drop(
    router: str, maybe_sockjs_router: SockJSRouter | None
) -> None:
    """Tokens ended server-side, then the socket drops: resubscription is refused, the
    visitor renews once and every live stream (messages, chats follower, Chat.info) goes on."""
    async with (
        fake_giosg(router, maybe_sockjs_router) as giosg,
        Visitor(
            ORG_ID, base_url=giosg.base_url, reconnect=FAST_RECONNECT, renewal=SPACING
        ) as visitor,
    ):
        operator = await giosg.operator_online(ROOM_ID, "Olivia")
        chat = await visitor.start_chat(ROOM_ID)
        stream = chat.messages()
        await giosg.operator_says(chat.id, operator, "before")
        with anyio.fail_after(10):
            await _next_operator_message(stream, "before")
        auths_before = len(giosg.auth_requests)

        await anyio.sleep(TOKEN_AGE)
        await giosg.expire_tokens()
        await drop_sockets(giosg, maybe_sockjs_router)
        # Sent while the socket is being recovered: it arrives (live or by backfill).
        await giosg.operator_says(chat.id, operator, "after")
        with anyio.fail_after(10):
            received = await _next_operator_message(stream, "after")
        assert received.message == "after"
        # The chats follower still applies changes to Chat.info.
        await giosg.end_chat(chat.id)
        with anyio.fail_after(10):
            await chat.wait_ended()
        assert chat.info.is_ended
        await stream.aclose()
        # One renewal for every refused channel (REST may have shared it).
        assert len(giosg.auth_requests) - auths_before == 1
        stats = visitor.realtime.stats
        assert stats.refusals >= 2
        assert stats.refusals_recovered == stats.refusals


async def test_a_new_channel_refused_on_a_live_socket_renews_and_subscribes(
    router: str, maybe_sockjs_router: SockJSRouter | None
) -> None:
    """The server ended the token; the socket stays up; a new channel is refused once,
    the visitor renews, and the subscription is confirmed with the fresh token."""
    async with (
        fake_giosg(router, maybe_sockjs_router) as giosg,
        Visitor(ORG_ID, base_url=giosg.base_url, renewal=SPACING) as visitor,
    ):
        # The visitor's own chats channel first: its sub must not be the one refused.
        async with visitor.subscribe(f"/api/v5/public/visitors/{visitor.visitor_id}/chats") as own:
            with anyio.fail_after(10):
                await own.wait_subscribed()
        await anyio.sleep(TOKEN_AGE)
        await giosg.expire_tokens()
        channel = f"/api/v5/public/orgs/{ORG_ID}/rooms/{ROOM_ID}"
        async with visitor.subscribe(channel) as subscription:
            with anyio.fail_after(10):
                await subscription.wait_subscribed()
            if maybe_sockjs_router is not None:
                delivered = await maybe_sockjs_router.publish(channel, "changed", {"id": ROOM_ID})
            else:
                delivered = await giosg.push(channel, "changed", {"id": ROOM_ID})
            assert delivered == 1
            with anyio.fail_after(5):
                event = await anext(subscription)
        assert isinstance(event, Change)
        assert visitor.realtime.stats.refusals_recovered == 1


class CountingTokens:
    """Mints a new token on every renewal; counts renewals."""

    def __init__(self) -> None:
        self.renewals = 0
        self._counter = itertools.count(1)
        self.current = Secret(f"visitor-token-{next(self._counter)}")

    async def token(self) -> Secret:
        await anyio.lowlevel.checkpoint()
        return self.current

    async def renew(self) -> None:
        self.renewals += 1
        await anyio.sleep(0.05)  # slow enough for the refusals to pile up
        self.current = Secret(f"visitor-token-{next(self._counter)}")


async def test_refused_channels_share_one_renewal_and_get_resubscribed_markers(
    sockjs_router: SockJSRouter,
) -> None:
    """Three channels refused after a reconnect: one renewal, three confirmations, and a
    Resubscribed marker in each subscription (the consumer backfills from REST)."""
    tokens = CountingTokens()
    async with RealtimeConnection(
        socket_url=sockjs_router.socket_url,
        token_provider=tokens.token,
        renew_token=tokens.renew,
        reconnect=FAST_RECONNECT,
    ) as connection:
        subscriptions = connection.subscribe_many(CHANNELS)
        with anyio.fail_after(5):
            for subscription in subscriptions:
                await subscription.wait_subscribed()
        await sockjs_router.refuse(tokens=[tokens.current.reveal()])
        await sockjs_router.drop()
        with anyio.fail_after(10):
            markers = [await anext(subscription) for subscription in subscriptions]
            for subscription in subscriptions:
                await subscription.wait_subscribed()
        assert markers == [Resubscribed(channel=channel) for channel in CHANNELS]
        assert tokens.renewals == 1
        assert (connection.stats.refusals, connection.stats.refusals_recovered) == (3, 3)


async def test_a_refusal_of_a_freshly_issued_token_is_a_subscription_error(
    sockjs_router: SockJSRouter,
) -> None:
    """A channel refused again right after the renewal is final: SubscriptionError,
    after exactly one renewal."""
    tokens = CountingTokens()
    async with RealtimeConnection(
        socket_url=sockjs_router.socket_url,
        token_provider=tokens.token,
        renew_token=tokens.renew,
        reconnect=FAST_RECONNECT,
    ) as connection:
        await connection.wait_connected()
        await sockjs_router.refuse(next=2)
        async with connection.subscribe(CHANNELS[0]) as subscription:
            with anyio.fail_after(10), pytest.raises(SubscriptionError) as info:
                await subscription.wait_subscribed()
        assert info.value.channel == CHANNELS[0]
        assert tokens.renewals == 1
        # And then a channel refused with that fresh token is final at once.
        await sockjs_router.refuse(next=1)
        async with connection.subscribe(CHANNELS[1]) as subscription:
            with anyio.fail_after(10), pytest.raises(SubscriptionError):
                await subscription.wait_subscribed()
        assert tokens.renewals == 1


async def test_a_channel_refused_with_a_just_issued_token_fails_at_once(
    router: str, maybe_sockjs_router: SockJSRouter | None
) -> None:
    """A channel the visitor may not read, refused with the token auth has just issued:
    SubscriptionError at once, without a renewal (it could not help)."""
    async with (
        fake_giosg(router, maybe_sockjs_router) as giosg,
        Visitor(ORG_ID, base_url=giosg.base_url) as visitor,
    ):
        auths = len(giosg.auth_requests)
        channel = "/api/v5/public/visitors/0123456789abcdef0123456789abcdef/chats"
        async with visitor.subscribe(channel) as subscription:
            with anyio.fail_after(2), pytest.raises(SubscriptionError):
                await subscription.wait_subscribed()
        assert len(giosg.auth_requests) == auths
        assert visitor.realtime.stats.refusals_recovered == 0
