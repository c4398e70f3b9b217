"""The visitor against a real SockJS server: our message router on sockjs-node.

The router (``tests/sockjs_router``) is started per test by the ``sockjs_router``
fixture; FakeGiosg hands out its ``socket_url``, checks each ``sub`` for it and relays
its notifications to it.
"""

from __future__ import annotations

from typing import Literal

import anyio
import anyio.lowlevel
import pytest

from giosg_visitor import (
    Change,
    ConnectionState,
    MemoryStore,
    Secret,
    SubscriptionError,
    Visitor,
    VisitorPool,
)
from giosg_visitor.realtime import RealtimeConnection
from giosg_visitor.testing import FakeGiosg

from .._helpers import ORG_ID, wait_until
from .._sockjs_router import SockJSRouter


ROOM_ID = "9926bdfa-56e0-11e5-b98c-6c4008c08dfe"
STRATEGIES = ("raw", "sockjs")
CHANNEL = "/api/v5/public/visitors/8a60b202474547dbb8ce19737e4c166f/chats"


@pytest.mark.parametrize("strategy", STRATEGIES)
async def test_subscribe_and_receive_through_sockjs_node(
    sockjs_router: SockJSRouter, strategy: Literal["raw", "sockjs"]
) -> None:
    """Each strategy subscribes through sockjs-node and receives a published change."""
    async with FakeGiosg(socket_url=sockjs_router.socket_url) as giosg:
        await sockjs_router.attach(giosg)
        async with Visitor(ORG_ID, base_url=giosg.base_url, socket_strategy=strategy) as visitor:
            assert visitor.realtime.state is ConnectionState.OPEN
            channel = f"/api/v5/public/orgs/{ORG_ID}/rooms/{ROOM_ID}"
            async with visitor.subscribe(channel) as subscription:
                with anyio.fail_after(5):
                    await subscription.wait_subscribed()
                delivered = await sockjs_router.publish(
                    channel, "changed", {"id": ROOM_ID, "is_online": True}
                )
                assert delivered == 1
                with anyio.fail_after(5):
                    event = await anext(subscription)
            assert isinstance(event, Change)
            assert (event.action, event.resource_id) == ("changed", ROOM_ID)
            stats = await sockjs_router.stats()
        expected = "websocket-raw" if strategy == "raw" else "websocket"
        assert stats["by_protocol"] == {expected: 1}


async def test_the_router_asks_the_fake_about_each_sub(sockjs_router: SockJSRouter) -> None:
    """A channel of another visitor is refused by the fake's check, through the router."""
    async with FakeGiosg(socket_url=sockjs_router.socket_url) as giosg:
        await sockjs_router.attach(giosg)
        async with Visitor(ORG_ID, base_url=giosg.base_url) as visitor:
            channel = "/api/v5/public/visitors/0123456789abcdef0123456789abcdef/chats"
            async with visitor.subscribe(channel) as subscription:
                with anyio.fail_after(5), pytest.raises(SubscriptionError):
                    await subscription.wait_subscribed()
        stats = await sockjs_router.stats()
    assert stats["subs_refused"] >= 1


QUIET_SPELL = 3.0
IDLE_TIMEOUT = 1.0


@pytest.mark.parametrize(
    ("strategy", "ping_interval"),
    [
        pytest.param("raw", 0.3, id="raw"),
        pytest.param("auto", 0.3, id="auto"),
        pytest.param("auto", None, id="auto-no-pings"),
        pytest.param("sockjs", 0.3, id="sockjs"),
        # Only sockjs-node's WebSocket pings (every 0.25 s) keep this one alive.
        pytest.param("sockjs", None, id="sockjs-server-pings-only"),
    ],
)
async def test_a_quiet_socket_outlives_the_idle_timeout(
    sockjs_router: SockJSRouter,
    strategy: Literal["auto", "raw", "sockjs"],
    ping_interval: float | None,
) -> None:
    """A quiet spell three times the idle timeout: zero reconnects, zero resubscribes."""
    async with FakeGiosg(socket_url=sockjs_router.socket_url) as giosg:
        await sockjs_router.attach(giosg)
        async with Visitor(
            ORG_ID,
            base_url=giosg.base_url,
            socket_strategy=strategy,
            ping_interval=ping_interval,
            ping_timeout=0.5,
            socket_idle_timeout=IDLE_TIMEOUT,
        ) as visitor:
            # The visitor's own subscriptions may still be on their way at start:
            # count from once the router has them all.
            wanted = len(visitor.realtime.channels)
            assert wanted >= 1
            with anyio.fail_after(5):
                while True:  # the router is in another process: poll its counters
                    subs_before = (await sockjs_router.stats())["subs"]
                    if subs_before >= wanted:
                        break
                    await anyio.sleep(0.02)
            await anyio.sleep(QUIET_SPELL)
            stats = visitor.realtime.stats
            assert (stats.opens, stats.drops) == (1, 0)
            assert visitor.realtime.state is ConnectionState.OPEN
            router = await sockjs_router.stats()
    assert router["connections_total"] == 1
    assert router["subs"] == subs_before


async def test_sockjs_node_pings_keep_a_framed_session_alive(sockjs_router: SockJSRouter) -> None:
    """sockjs-node heartbeats a framed WebSocket session with pings, never with ``h``.

    With our own keepalive off, those pings are the only inbound frames of a quiet
    session: they alone must keep the idle watchdog quiet.
    """

    async def token() -> Secret:
        await anyio.lowlevel.checkpoint()
        return Secret("visitor-token")

    async with (
        RealtimeConnection(
            socket_url=sockjs_router.socket_url,
            token_provider=token,
            strategy="sockjs",
            ping_interval=None,
            sockjs_idle_timeout=IDLE_TIMEOUT,
        ) as connection,
        connection.subscribe(CHANNEL) as subscription,
    ):
        with anyio.fail_after(5):
            await subscription.wait_subscribed()
        await anyio.sleep(QUIET_SPELL)
        assert (connection.stats.opens, connection.stats.drops) == (1, 0)
        assert subscription.is_subscribed


async def test_a_pool_passes_the_idle_timeout_to_its_visitors(sockjs_router: SockJSRouter) -> None:
    """VisitorPool(socket_idle_timeout=...) reaches each visitor's socket: a quiet SockJS
    session kept alive by sockjs-node's pings alone outlives it, and a frozen server is
    dropped within it (then the visitor reconnects)."""
    async with (
        FakeGiosg(socket_url=sockjs_router.socket_url) as giosg,
        VisitorPool(
            ORG_ID,
            store=MemoryStore(),
            base_url=giosg.base_url,
            socket_strategy="sockjs",
            ping_interval=None,
            socket_idle_timeout=IDLE_TIMEOUT,
        ) as pool,
    ):
        await sockjs_router.attach(giosg)
        async with pool.visitor("user-1") as visitor:
            stats = visitor.realtime.stats
            await anyio.sleep(QUIET_SPELL)
            assert (stats.opens, stats.drops) == (1, 0)
            # A silent server is noticed after the pool's idle timeout, not the 60 s default.
            sockjs_router.freeze()
            try:
                await wait_until(lambda: stats.drops >= 1, seconds=IDLE_TIMEOUT * 3)
            finally:
                sockjs_router.thaw()
            await wait_until(lambda: stats.opens >= 2)
