"""The visitor against a real SockJS server: our message router on sockjs-node.

The router (``tests/sockjs_router``) is started per test by the ``sockjs_router``
fixture; FakeGiosg hands out its ``socket_url``, checks each ``sub`` for it and relays
its notifications to it.
"""

from __future__ import annotations

from typing import Literal

import anyio
import pytest

from giosg_visitor import Change, ConnectionState, SubscriptionError, Visitor
from giosg_visitor.testing import FakeGiosg

from ._helpers import ORG_ID
from ._sockjs_router import SockJSRouter


ROOM_ID = "9926bdfa-56e0-11e5-b98c-6c4008c08dfe"
STRATEGIES = ("raw", "sockjs")


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
