"""``socket_strategy="auto"``: the transport finds itself, and remembers what worked.

Against the real sockjs-node router (its raw endpoint served, refused with 404, answered
200 without upgrade, or closed right after open) and FakeGiosg's router (for ``as_is``
and for a ``socket_url`` where nothing answers), on both backends.
"""

from __future__ import annotations

import logging
from typing import Literal

import anyio
import anyio.lowlevel
import pytest

from giosg_visitor import Change, Secret, Visitor
from giosg_visitor.realtime import HandshakeRejectedError, RealtimeConnection, ReconnectPolicy
from giosg_visitor.realtime.connection import StrategyRefusal
from giosg_visitor.testing import FakeGiosg, MessageRouter
from tests._router_harness import RouterHarness

from .._helpers import ORG_ID, wait_until
from .._sockjs_router import SockJSRouter


ROOM_ID = "9926bdfa-56e0-11e5-b98c-6c4008c08dfe"
CHANNEL = "/api/v5/public/visitors/8a60b202474547dbb8ce19737e4c166f/chats"
FAST_RECONNECT = ReconnectPolicy(first_delay=0.05, max_delay=0.2)


async def token() -> Secret:
    await anyio.lowlevel.checkpoint()
    return Secret("visitor-token")


def choices(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == "giosg_visitor.realtime"
        and record.levelno == logging.INFO
        and "real-time transport for" in record.getMessage()
    ]


async def test_auto_takes_the_raw_endpoint_when_it_is_served(
    sockjs_router: SockJSRouter, caplog: pytest.LogCaptureFixture
) -> None:
    """The default strategy opens ``<socket_url>/websocket`` first, and logs it once."""
    caplog.set_level(logging.INFO, logger="giosg_visitor.realtime")
    async with FakeGiosg(socket_url=sockjs_router.socket_url) as giosg:
        await sockjs_router.attach(giosg)
        async with Visitor(ORG_ID, base_url=giosg.base_url) as visitor:
            await wait_until(lambda: visitor.realtime.strategy is not None)
            assert visitor.realtime.strategy == "raw"
            assert visitor.realtime.strategy_refusals == []
        stats = await sockjs_router.stats()
    assert stats["by_protocol"] == {"websocket-raw": 1}
    assert len(choices(caplog)) == 1


@pytest.mark.parametrize(
    ("raw_mode", "expected"),
    [
        pytest.param("404", StrategyRefusal(strategy="raw", kind="http_status", status=404)),
        pytest.param("200", StrategyRefusal(strategy="raw", kind="no_upgrade", status=200)),
        pytest.param("close", StrategyRefusal(strategy="raw", kind="closed_after_open", code=1000)),
    ],
)
async def test_auto_moves_on_to_sockjs_and_remembers_it(
    sockjs_router: SockJSRouter,
    caplog: pytest.LogCaptureFixture,
    raw_mode: Literal["404", "200", "close"],
    expected: StrategyRefusal,
) -> None:
    """Raw refused (three ways): SockJS framing works; the refusal is classified, the
    choice logged once, and reconnects go straight to SockJS (no probing again)."""
    caplog.set_level(logging.INFO, logger="giosg_visitor.realtime")
    await sockjs_router.serve_raw(raw_mode)
    async with FakeGiosg(socket_url=sockjs_router.socket_url) as giosg:
        await sockjs_router.attach(giosg)
        async with Visitor(ORG_ID, base_url=giosg.base_url, reconnect=FAST_RECONNECT) as visitor:
            connection = visitor.realtime
            await wait_until(lambda: connection.strategy is not None)
            assert connection.strategy == "sockjs"
            assert connection.strategy_refusals == [expected]
            for _ in range(2):
                await _drop_and_reopen(sockjs_router, connection)
            channel = f"/api/v5/public/orgs/{ORG_ID}/rooms/{ROOM_ID}"
            async with visitor.subscribe(channel) as subscription:
                with anyio.fail_after(5):
                    await subscription.wait_subscribed()
                await sockjs_router.publish(channel, "changed", {"id": ROOM_ID})
                with anyio.fail_after(5):
                    assert isinstance(await anext(subscription), Change)
        stats = await sockjs_router.stats()
    assert stats["raw_attempts"] == 1
    # A raw WebSocket that was opened and closed at once counts as opened, once.
    sockjs_opens = connection.stats.opens - (1 if raw_mode == "close" else 0)
    assert stats["by_protocol"] == {"websocket": sockjs_opens}
    assert sockjs_opens == 3
    assert len(choices(caplog)) == 1
    assert f"after refusals (raw: {expected.describe()})" in choices(caplog)[0]


async def _drop_and_reopen(router: SockJSRouter, connection: RealtimeConnection) -> None:
    opens = connection.stats.opens
    await router.drop()
    await wait_until(lambda: connection.stats.opens > opens)


@pytest.fixture
def plain_router() -> RouterHarness:
    return RouterHarness(MessageRouter())


async def test_auto_falls_back_to_the_socket_url_as_given(plain_router: RouterHarness) -> None:
    """A ``socket_url`` that already is the endpoint: raw and SockJS 404, as_is works."""
    with plain_router as harness:
        socket_url = f"{harness.router.socket_url}/websocket"
        async with RealtimeConnection(
            socket_url=socket_url, token_provider=token, strategy="auto"
        ) as connection:
            async with connection.subscribe(CHANNEL) as subscription:
                with anyio.fail_after(5):
                    await subscription.wait_subscribed()
            assert connection.strategy == "as_is"
            assert connection.strategy_refusals == [
                StrategyRefusal(strategy="raw", kind="http_status", status=404),
                StrategyRefusal(strategy="sockjs", kind="http_status", status=404),
            ]


async def test_auto_fails_typed_when_every_strategy_is_refused(
    plain_router: RouterHarness,
) -> None:
    """Nothing answers: one typed error that names each refusal, after three handshakes."""
    with plain_router as harness:
        socket_url = f"{harness.router.socket_url}/elsewhere"
        async with RealtimeConnection(
            socket_url=socket_url, token_provider=token, strategy="auto"
        ) as connection:
            with anyio.fail_after(5), pytest.raises(HandshakeRejectedError) as info:
                await connection.wait_connected()
    assert info.value.status_code == 404
    assert "raw: HTTP 404; sockjs: HTTP 404; as_is: HTTP 404" in str(info.value)
    assert connection.stats.drops == 1
