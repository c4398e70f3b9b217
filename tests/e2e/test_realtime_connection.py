"""RealtimeConnection end to end, over real sockets, against the fake MessageRouter.

The router runs on its own asyncio loop in a background thread (``_router_harness``), so
every test here runs on asyncio and on trio against the same server. Real timeouts are
used only as hang guards; keepalive and backoff intervals are shortened for speed.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import random
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.lowlevel
import httpx
import pytest

from giosg_visitor import Secret
from giosg_visitor.errors import (
    ConnectionClosedError,
    SubscriptionError,
    TransportError,
    UntrustedEndpointError,
)
from giosg_visitor.realtime import (
    Change,
    Connected,
    ConnectionEvent,
    ConnectionEvents,
    ConnectionState,
    Disconnected,
    Gap,
    HandshakeRejectedError,
    RealtimeConnection,
    Reconnected,
    ReconnectPolicy,
    Resubscribed,
    Subscription,
    SubscriptionEvent,
)
from giosg_visitor.realtime._transport import SocketConnection, WebSocketTransport
from giosg_visitor.realtime._urls import socket_endpoint
from giosg_visitor.testing import DropMode, FakeClock, MessageRouter
from tests._router_harness import RouterHarness


CHANNEL = "/api/v5/public/visitors/8a60b202474547dbb8ce19737e4c166f/chats"
MakeRouter = Callable[..., RouterHarness]
PING = 0.5  # shortened keepalive interval and timeout
FAST = ReconnectPolicy(first_delay=0.05, max_delay=0.2)


class Tokens:
    """A token provider that mints a new, distinct token on every call."""

    def __init__(self, lifetime: float | None = None) -> None:
        self.lifetime = lifetime
        self.issued: list[str] = []
        self.expiry: dict[str, float] = {}
        self.renewals = 0
        self._counter = itertools.count(1)

    async def __call__(self) -> Secret:
        value = f"visitor-token-{next(self._counter)}-{random.getrandbits(64):016x}"
        self.issued.append(value)
        if self.lifetime is not None:
            self.expiry[value] = time.time() + self.lifetime
        await anyio.lowlevel.checkpoint()
        return Secret(value)

    async def renew(self) -> None:
        """What ``renew_token`` does: count forced renewals."""
        self.renewals += 1
        await anyio.lowlevel.checkpoint()

    def expiry_of(self, token: str) -> float | None:
        return self.expiry.get(token)


@pytest.fixture
def tokens() -> Tokens:
    return Tokens()


@pytest.fixture
def make_router() -> Iterator[Callable[..., RouterHarness]]:
    harnesses: list[RouterHarness] = []

    def make(**kwargs: Any) -> RouterHarness:
        harness = RouterHarness(MessageRouter(**kwargs))
        harness.__enter__()
        harnesses.append(harness)
        return harness

    yield make
    for harness in harnesses:
        harness.__exit__(None, None, None)


def connection(harness: RouterHarness, tokens: Tokens, **kwargs: Any) -> RealtimeConnection:
    options: dict[str, Any] = {
        "socket_url": harness.socket_url,
        "token_provider": tokens,
        "renew_token": tokens.renew,
        "ping_interval": PING,
        "ping_timeout": PING,
        "close_timeout": 1.0,
        "reconnect": FAST,
        "rng": random.Random(7),
    }
    options.update(kwargs)
    return RealtimeConnection(**options)


async def next_item(subscription: Subscription, within: float = 5.0) -> SubscriptionEvent:
    with anyio.fail_after(within):
        return await subscription.__anext__()


async def next_event(
    events: ConnectionEvents,
    kind: type[ConnectionEvent] | tuple[type[Any], ...],
    within: float = 5.0,
) -> Any:
    with anyio.fail_after(within):
        async for event in events:
            if isinstance(event, kind):
                return event
    raise AssertionError("the event stream ended")


async def until(check: Callable[[], bool], within: float = 5.0) -> None:
    """Poll ``check`` (it reads state owned by the router's thread) until it holds."""
    with anyio.fail_after(within):
        while True:
            if check():
                return
            await anyio.sleep(0.01)


async def push(harness: RouterHarness, channel: str, seq: int) -> int:
    return harness.call(harness.router.push, channel, "added", {"id": f"m{seq}", "seq": seq})


async def subscribed(conn: RealtimeConnection, channel: str = CHANNEL) -> Subscription:
    """``conn.subscribe(channel)``, once the server has confirmed it (within 5 s)."""
    subscription = conn.subscribe(channel)
    with anyio.fail_after(5):
        await subscription.wait_subscribed()
    return subscription


class TestSubscribe:
    async def test_subscribe_ack_and_notification(
        self, make_router: MakeRouter, tokens: Tokens
    ) -> None:
        """A subscription is confirmed by the server and then streams notifications."""
        harness = make_router()
        async with connection(harness, tokens) as conn:
            subscription = await subscribed(conn)
            assert subscription.is_subscribed
            assert conn.state is ConnectionState.OPEN
            assert await push(harness, CHANNEL, 1) == 1
            item = await next_item(subscription)
            assert isinstance(item, Change)
            assert (item.channel, item.action, item.resource_id) == (CHANNEL, "added", "m1")
        [sub] = harness.router.subs
        assert sub.token == tokens.issued[0]

    async def test_refused_subscription_raises(
        self, make_router: MakeRouter, tokens: Tokens
    ) -> None:
        """A refused ``sub`` is retried once with a fresh token, then SubscriptionError."""
        harness = make_router(authorize=lambda token, channel: channel == "/ok" or "forbidden")
        async with connection(harness, tokens) as conn:
            good, bad = conn.subscribe_many(["/ok", "/nope"])
            with anyio.fail_after(5):
                await good.wait_subscribed()
                with pytest.raises(SubscriptionError, match="forbidden") as info:
                    await bad.wait_subscribed()
            assert info.value.channel == "/nope"
            with pytest.raises(SubscriptionError):
                await next_item(bad)
            assert [s.channel for s in harness.router.subs].count("/nope") == 2
            assert good.is_subscribed
            assert conn.state is ConnectionState.OPEN

    async def test_hundred_channels_in_one_round_trip(
        self, make_router: MakeRouter, tokens: Tokens
    ) -> None:
        """100 ``sub`` messages all reach the server before any acknowledgement is sent."""
        harness = make_router()
        router = harness.router
        async with connection(harness, tokens) as conn:
            await conn.wait_connected()
            harness.call(router.hold_acks)
            channels = [f"{CHANNEL}/{n}" for n in range(100)]
            subscriptions = conn.subscribe_many(channels)
            await until(lambda: len(router.subs) == 100)
            assert not any(s.is_subscribed for s in subscriptions)
            harness.call(router.release_acks)
            with anyio.fail_after(5):
                for subscription in subscriptions:
                    await subscription.wait_subscribed()
        assert [s.channel for s in router.subs] == channels
        assert len(tokens.issued) == 1

    async def test_unsubscribe(self, make_router: MakeRouter, tokens: Tokens) -> None:
        """Closing a subscription sends ``unsub`` and ends its iteration."""
        harness = make_router()
        router = harness.router
        async with connection(harness, tokens) as conn:
            subscription = await subscribed(conn)
            await subscription.aclose()
            await until(lambda: harness.call(router.subscriber_count, CHANNEL) == 0)
            assert [f.method for f in router.frames_received] == ["sub", "unsub"]
            assert [item async for item in subscription] == []
            assert conn.channels == []

    async def test_shared_channel_keeps_server_subscription(
        self, make_router: MakeRouter, tokens: Tokens
    ) -> None:
        """Two subscriptions to one channel share one ``sub``; both get each notification."""
        harness = make_router()
        async with connection(harness, tokens) as conn:
            first = await subscribed(conn)
            second = conn.subscribe(CHANNEL)
            assert second.is_subscribed
            await push(harness, CHANNEL, 1)
            assert isinstance(await next_item(first), Change)
            assert isinstance(await next_item(second), Change)
            await first.aclose()
            await push(harness, CHANNEL, 2)
            assert isinstance(await next_item(second), Change)
        assert [f.method for f in harness.router.frames_received] == ["sub"]

    async def test_body_errors_are_not_wrapped(
        self, make_router: MakeRouter, tokens: Tokens
    ) -> None:
        """An exception in the ``async with`` body comes out as is, not as an ExceptionGroup."""
        harness = make_router()
        conn = connection(harness, tokens)

        async def body() -> None:
            async with conn:
                await conn.wait_connected()
                raise KeyError("boom")

        with pytest.raises(KeyError, match="boom"):
            await body()
        assert conn.state is ConnectionState.CLOSED

    async def test_closing_connection_ends_subscriptions(
        self, make_router: MakeRouter, tokens: Tokens
    ) -> None:
        """Leaving ``async with`` ends every subscription's iteration and closes the state."""
        harness = make_router()
        async with connection(harness, tokens) as conn:
            subscription = await subscribed(conn)
        assert conn.state is ConnectionState.CLOSED
        assert [item async for item in subscription] == []
        with pytest.raises(RuntimeError):
            conn.subscribe(CHANNEL)

    async def test_overflow_drops_and_marks_a_gap(
        self, make_router: MakeRouter, tokens: Tokens
    ) -> None:
        """A full buffer drops notifications and puts one Gap where they would have been."""
        harness = make_router()
        async with connection(harness, tokens, max_buffer=3) as conn:
            events = conn.events()
            subscription = await subscribed(conn)
            for seq in range(1, 9):
                await push(harness, CHANNEL, seq)
            await until(lambda: subscription.dropped == 5)
            items = [await next_item(subscription) for _ in range(4)]
            await push(harness, CHANNEL, 9)
            items.append(await next_item(subscription))
            assert isinstance(await next_event(events, Gap), Gap)
            await events.aclose()
        seqs = [i.resource["seq"] if isinstance(i, Change) and i.resource else i for i in items]
        assert seqs == [1, 2, 3, Gap(channel=CHANNEL, reason="overflow"), 9]
        assert conn.stats.dropped_notifications == 5

    async def test_reauthorize_sends_fresh_token(
        self, make_router: MakeRouter, tokens: Tokens
    ) -> None:
        """``reauthorize`` re-sends every ``sub`` with a fresh token and waits for the acks."""
        harness = make_router()
        router = harness.router
        async with connection(harness, tokens) as conn:
            subscriptions = conn.subscribe_many(["/a", "/b"])
            with anyio.fail_after(5):
                for subscription in subscriptions:
                    await subscription.wait_subscribed()
                await conn.reauthorize()
            held = harness.call(lambda: dict(router.clients[0].subscriptions))
        assert held == {"/a": tokens.issued[1], "/b": tokens.issued[1]}
        assert conn.stats.opens == 1

    async def test_no_token_in_logs(
        self, make_router: MakeRouter, tokens: Tokens, caplog: pytest.LogCaptureFixture
    ) -> None:
        """At DEBUG, SDK and websockets logs never show a token, even across a reconnect."""
        harness = make_router()
        with caplog.at_level(logging.DEBUG):
            async with connection(harness, tokens) as conn:
                events = conn.events()
                subscription = await subscribed(conn)
                harness.call(harness.router.drop_all, "close", code=1011)
                await next_event(events, Reconnected)
                with anyio.fail_after(5):
                    await subscription.wait_subscribed()
                await events.aclose()
        records = [r for r in caplog.records if not r.name.startswith("giosg_visitor.testing")]
        assert any(r.name == "giosg_visitor.websockets" for r in records)
        text = "\n".join(r.getMessage() for r in records)
        for token in tokens.issued:
            assert token not in text
            assert token[-12:] not in text


class TestReconnect:
    @pytest.mark.parametrize(
        ("mode", "code"),
        [
            pytest.param("reset", 1006, id="tcp-reset"),
            pytest.param("close", 1011, id="close-1011"),
            pytest.param("close", 1001, id="close-1001"),
            pytest.param("blackhole", 1011, id="blackhole"),
        ],
    )
    async def test_reconnect_after_drop(
        self, make_router: MakeRouter, tokens: Tokens, mode: DropMode, code: int
    ) -> None:
        """After a drop the connection reopens, resubscribes with a fresh token, marks the gap."""
        harness = make_router()
        router = harness.router
        async with connection(harness, tokens) as conn:
            events = conn.events()
            subscription = await subscribed(conn)
            await push(harness, CHANNEL, 1)
            assert isinstance(await next_item(subscription), Change)

            started = anyio.current_time()
            harness.call(router.drop_all, mode, code=code)
            lost = await next_event(events, Disconnected, within=PING * 2 + 3)
            detected_after = anyio.current_time() - started
            assert lost.code == code
            assert lost.retry_in is not None
            if mode == "blackhole":
                # A silent peer is found by keepalive: one ping interval to send the
                # ping, one ping timeout for the pong that never comes, 1 s of slack.
                assert detected_after <= PING + PING + 1.0
            await next_event(events, Reconnected)
            assert isinstance(await next_item(subscription), Resubscribed)
            assert subscription.is_subscribed
            await push(harness, CHANNEL, 2)
            item = await next_item(subscription)
            assert isinstance(item, Change)
            assert item.resource_id == "m2"
            await events.aclose()
        subs = router.subs
        assert len(subs) == 2
        assert subs[0].token != subs[1].token
        assert subs[1].token == tokens.issued[-1]
        assert subs[0].connection_id != subs[1].connection_id

    async def test_state_and_events_sequence(self, make_router: MakeRouter, tokens: Tokens) -> None:
        """Connection events are Connected, then Disconnected + Reconnected per drop."""
        harness = make_router()
        async with connection(harness, tokens) as conn:
            events = conn.events()
            assert conn.state is ConnectionState.CONNECTING
            assert isinstance(await next_event(events, (Connected, Disconnected)), Connected)
            harness.call(harness.router.drop_all, "reset")
            lost = await next_event(events, (Disconnected, Reconnected))
            assert isinstance(lost, Disconnected)
            assert conn.state in (ConnectionState.RECONNECTING, ConnectionState.OPEN)
            await next_event(events, Reconnected)
            assert conn.state is ConnectionState.OPEN
            await events.aclose()

    async def test_answering_server_is_not_torn_down(
        self, make_router: MakeRouter, tokens: Tokens
    ) -> None:
        """A server that answers pings but sends nothing keeps the connection (pongs are life)."""
        harness = make_router()
        async with connection(harness, tokens) as conn:
            _subscription = await subscribed(conn)  # held open while pings go back and forth
            await anyio.sleep(PING * 3)
            assert conn.stats.drops == 0
            assert conn.state is ConnectionState.OPEN


class TestSendPing:
    """The default transport's ``send_ping``: the pong is checked later, not waited for."""

    @asynccontextmanager
    async def open_socket(self, harness: RouterHarness) -> AsyncIterator[Any]:
        url = socket_endpoint(harness.socket_url, strategy="raw")
        async with WebSocketTransport(proxy=None).connect(
            url, open_timeout=5.0, ping_interval=None, ping_timeout=None, close_timeout=1.0
        ) as socket:
            yield socket

    async def test_the_check_turns_true_when_the_pong_arrives(
        self, make_router: MakeRouter
    ) -> None:
        harness = make_router()
        async with self.open_socket(harness) as socket:
            answered = await socket.send_ping()
            assert answered is not None
            with anyio.fail_after(5):
                while not answered():  # noqa: ASYNC110 - a check, not an event, by design
                    await anyio.sleep(0.01)
            assert answered()

    async def test_a_black_holed_peer_never_answers(self, make_router: MakeRouter) -> None:
        harness = make_router()
        async with self.open_socket(harness) as socket:
            await harness.acall(harness.router.drop_all, "blackhole")
            answered = await socket.send_ping()
            assert answered is not None
            await anyio.sleep(PING)
            assert not answered()

    async def test_a_closed_socket_sends_no_ping(self, make_router: MakeRouter) -> None:
        """Once the server closed the socket: ``None`` (the connection learns why from recv)."""
        harness = make_router()
        async with self.open_socket(harness) as socket:
            await harness.acall(harness.router.drop_all, "close")
            with anyio.fail_after(5), pytest.raises(ConnectionClosedError):
                await socket.recv()
            assert await socket.send_ping() is None


class TestHandshake:
    async def test_not_found_is_fatal(self, make_router: MakeRouter, tokens: Tokens) -> None:
        """HTTP 404 on the handshake fails the connection; subscriptions raise it."""
        harness = make_router()
        harness.call(harness.router.refuse_handshakes, 404)
        async with connection(harness, tokens) as conn:
            subscription = conn.subscribe(CHANNEL)
            with anyio.fail_after(5), pytest.raises(HandshakeRejectedError) as info:
                await conn.wait_connected()
            assert info.value.status_code == 404
            with pytest.raises(HandshakeRejectedError):
                await subscription.wait_subscribed()
            with pytest.raises(HandshakeRejectedError):
                await next_item(subscription)
            assert conn.state is ConnectionState.CLOSED
        assert harness.router.refused_handshakes == 1

    async def test_retry_after_is_honoured(self, make_router: MakeRouter, tokens: Tokens) -> None:
        """503 with Retry-After waits that long before the next attempt."""
        harness = make_router()
        harness.call(harness.router.refuse_handshakes, 503, retry_after=0.3, count=1)
        async with connection(harness, tokens) as conn:
            events = conn.events()
            lost = await next_event(events, Disconnected)
            assert lost.retry_in == pytest.approx(0.3)
            await next_event(events, Connected)
            await events.aclose()

    async def test_unauthorized_renews_then_reconnects(
        self, make_router: MakeRouter, tokens: Tokens
    ) -> None:
        """A 401 handshake forces one token renewal, then the next attempt succeeds."""
        harness = make_router()
        harness.call(harness.router.refuse_handshakes, 401, count=1)
        async with connection(harness, tokens) as conn:
            with anyio.fail_after(5):
                await conn.wait_connected()
        assert tokens.renewals == 1

    async def test_repeated_unauthorized_fails(
        self, make_router: MakeRouter, tokens: Tokens
    ) -> None:
        """A second auth rejection in a row fails the connection."""
        harness = make_router()
        harness.call(harness.router.refuse_handshakes, 403)
        async with connection(harness, tokens) as conn:
            with anyio.fail_after(5), pytest.raises(HandshakeRejectedError) as info:
                await conn.wait_connected()
        assert info.value.status_code == 403
        assert tokens.renewals == 1

    async def test_redirect_is_not_followed(self, make_router: MakeRouter, tokens: Tokens) -> None:
        """A redirect on the handshake is refused: the socket would carry a token."""
        harness = make_router()
        harness.call(harness.router.refuse_handshakes, 302)
        async with connection(harness, tokens) as conn:
            with anyio.fail_after(5), pytest.raises(UntrustedEndpointError):
                await conn.wait_connected()

    async def test_untrusted_socket_url_never_connects(self, tokens: Tokens) -> None:
        """An untrusted ``socket_url`` fails before any I/O."""
        url = "https://messagerouter.giosg.com.evil.net/router"
        async with RealtimeConnection(socket_url=url, token_provider=tokens) as conn:
            with anyio.fail_after(5), pytest.raises(UntrustedEndpointError):
                await conn.wait_connected()
            with pytest.raises(UntrustedEndpointError):
                conn.subscribe(CHANNEL)
        assert tokens.issued == []

    async def test_connection_refused_keeps_retrying(self, tokens: Tokens) -> None:
        """Nothing listening is a transient failure: the connection keeps retrying."""
        url = f"http://127.0.0.1:{_free_port()}/router"
        async with RealtimeConnection(
            socket_url=url, token_provider=tokens, reconnect=FAST
        ) as conn:
            events = conn.events()
            for _ in range(3):
                lost = await next_event(events, Disconnected)
                assert lost.retry_in is not None
            assert conn.state is ConnectionState.CONNECTING
            await events.aclose()


def _free_port() -> int:
    """A port with nothing listening on it (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


class _RefusingTransport:
    """A SocketTransport whose every connection attempt fails (records attempt times)."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.attempts: list[float] = []

    @asynccontextmanager
    async def connect(self, url: str, **options: Any) -> AsyncIterator[SocketConnection]:
        self.attempts.append(self.clock.monotonic())
        await anyio.lowlevel.checkpoint()
        raise TransportError("connection refused")
        yield  # pragma: no cover - makes this an async generator


class TestBackoffInTheLoop:
    async def test_reconnect_schedule_on_virtual_time(self, tokens: Tokens) -> None:
        """Attempts follow ReconnectPolicy on a FakeClock: jittered growth, then 30 s +-20 %."""
        clock = FakeClock()
        transport = _RefusingTransport(clock)
        urls: list[str] = []

        def socket_url() -> str:
            urls.append("read")
            return "https://messagerouter.giosg.com/router"

        async with RealtimeConnection(
            socket_url=socket_url,
            token_provider=tokens,
            clock=clock,
            transport=transport,
            rng=random.Random(3),
        ) as conn:
            announced: list[float | None] = []

            async def collect() -> None:
                async with conn.events() as events:
                    async for event in events:
                        if isinstance(event, Disconnected):
                            announced.append(event.retry_in)

            async with anyio.create_task_group() as task_group:
                task_group.start_soon(collect)
                await clock.advance(400.0)
                task_group.cancel_scope.cancel()
            assert conn.state is ConnectionState.CONNECTING
        attempts = transport.attempts
        gaps = [b - a for a, b in itertools.pairwise(attempts)]
        assert gaps == pytest.approx(announced[: len(gaps)])
        first = attempts[0]
        for n, (start, gap) in enumerate(zip(attempts, gaps, strict=False)):
            if start - first >= 120.0:
                assert 24.0 <= gap <= 36.0
            else:
                assert 0.0 <= gap <= min(30.0, 2.0**n)
        assert attempts[-1] - first > 300.0
        assert len(urls) == len(attempts)
        assert tokens.issued == []


class TestHostileFrames:
    async def test_garbage_does_not_kill_the_read_loop(
        self, make_router: MakeRouter, tokens: Tokens
    ) -> None:
        """Invalid JSON, binary, unknown kinds and wrong shapes are skipped in place."""
        harness = make_router()
        router = harness.router
        async with connection(harness, tokens) as conn:
            subscription = await subscribed(conn)
            garbage: list[str | bytes] = [
                "{not json",
                "[" * 5000,
                '{"an": "object"}',
                "[1, 2, 3]",
                '["hello", []]',
                '["changed", "not-a-list"]',
                f'["changed", ["{CHANNEL}", {{"action": "exploded"}}]]',
                f'["changed", ["{CHANNEL}", {{"action": "added", "resource": 5}}]]',
                '["changed", ["/never/subscribed", {"action": "added"}]]',
                '["__qr__", [[]], {"query": 424242}]',
                b"\x00\x01 binary frame",
            ]
            for frame in garbage:
                harness.call(router.hostile, frame)
            await push(harness, CHANNEL, 1)
            item = await next_item(subscription)
            assert isinstance(item, Change)
            assert item.resource_id == "m1"
            stats = conn.stats
            assert stats.opens == 1
            assert stats.binary_frames == 1
            assert stats.unrouted == 1
            assert stats.protocol.skipped == 9

    @pytest.mark.parametrize(
        ("frame", "text", "code"),
        [
            pytest.param("x" * 5000, None, 1009, id="oversize"),
            pytest.param(b"\xff\xfe\xfd", True, 1007, id="invalid-utf8"),
        ],
    )
    async def test_protocol_violation_reconnects(
        self,
        make_router: MakeRouter,
        tokens: Tokens,
        frame: str | bytes,
        text: bool | None,
        code: int,
    ) -> None:
        """Oversize and invalid UTF-8 frames close the socket; the connection comes back."""
        harness = make_router()
        async with connection(harness, tokens, max_size=4096) as conn:
            events = conn.events()
            subscription = await subscribed(conn)
            harness.call(harness.router.hostile, frame, text=text)
            lost = await next_event(events, Disconnected)
            assert lost.code == code
            assert isinstance(await next_item(subscription), Resubscribed)
            await push(harness, CHANNEL, 1)
            assert isinstance(await next_item(subscription), Change)
            await events.aclose()

    async def test_persistent_violations_fail(
        self, make_router: MakeRouter, tokens: Tokens
    ) -> None:
        """Three protocol violations in a row fail the connection with the close code."""
        harness = make_router()
        async with connection(harness, tokens, max_size=1024) as conn:
            events = conn.events()
            subscription = conn.subscribe(CHANNEL)
            for _ in range(3):
                with anyio.fail_after(5):
                    await subscription.wait_subscribed()
                harness.call(harness.router.hostile, "y" * 2048)
                await next_event(events, Disconnected)
            with anyio.fail_after(5), pytest.raises(ConnectionClosedError) as info:
                await conn.wait_connected()
            assert info.value.code == 1009
            await events.aclose()


class TestSockJS:
    async def test_info_endpoint(self, make_router: MakeRouter) -> None:
        """The router answers ``GET <socket_url>/info`` with SockJS info JSON."""
        harness = make_router()
        async with httpx.AsyncClient() as client:
            response = await client.get(f"{harness.socket_url}/info")
        assert response.status_code == 200
        assert response.json()["websocket"] is True

    async def test_end_to_end(self, make_router: MakeRouter, tokens: Tokens) -> None:
        """SockJS framing: open frame, heartbeats, batched messages and ``c`` close frames."""
        harness = make_router(heartbeat_interval=0.05)
        router = harness.router
        async with connection(harness, tokens, strategy="sockjs") as conn:
            events = conn.events()
            subscriptions = conn.subscribe_many(["/a", "/b"])
            with anyio.fail_after(5):
                for subscription in subscriptions:
                    await subscription.wait_subscribed()
            await push(harness, "/a", 1)
            await push(harness, "/b", 2)
            assert isinstance(await next_item(subscriptions[0]), Change)
            assert isinstance(await next_item(subscriptions[1]), Change)
            await until(lambda: conn.stats.protocol.heartbeats >= 2)

            harness.call(router.drop_all, "close", code=3000, reason="Go away!")
            lost = await next_event(events, Disconnected)
            assert (lost.code, lost.reason) == (3000, "Go away!")
            await next_event(events, Reconnected)
            assert isinstance(await next_item(subscriptions[0]), Resubscribed)
            await push(harness, "/a", 3)
            assert isinstance(await next_item(subscriptions[0]), Change)
            await events.aclose()
        assert {f.connection_id for f in router.subs} == {1, 2}

    async def test_silent_server_detected(self, make_router: MakeRouter, tokens: Tokens) -> None:
        """In SockJS mode a black-holed socket is found by keepalive as well."""
        harness = make_router(heartbeat_interval=0.1)
        async with connection(harness, tokens, strategy="sockjs") as conn:
            events = conn.events()
            subscription = await subscribed(conn)
            harness.call(harness.router.drop_all, "blackhole")
            await next_event(events, Disconnected, within=PING * 2 + 1)
            assert isinstance(await next_item(subscription), Resubscribed)
            await events.aclose()


class TestTokenExpiry:
    async def test_reauthorize_prevents_expiry_closes(self, make_router: MakeRouter) -> None:
        """Re-authorising before expiry: no expired token ever seen, no 4401 close."""
        tokens = Tokens(lifetime=1.0)
        harness = make_router(strict_expiry=True, token_expiry=tokens.expiry_of)
        router = harness.router
        async with connection(harness, tokens) as conn:
            subscription = await subscribed(conn)
            seq = 0
            with anyio.fail_after(10):
                # 6 x 0.25 s: well past the 1 s lifetime of the first token.
                for _ in range(6):
                    await conn.reauthorize()
                    seq += 1
                    await push(harness, CHANNEL, seq)
                    assert isinstance(await next_item(subscription), Change)
                    await anyio.sleep(0.25)
            assert conn.stats.drops == 0
        assert router.expiry_closes == 0
        assert router.expired_token_subs == []
        assert len(router.subs) == 7

    async def test_expiry_close_renews_and_resubscribes(self, make_router: MakeRouter) -> None:
        """Without re-authorisation the server closes with 4401; the SDK renews and recovers."""
        tokens = Tokens(lifetime=0.5)
        harness = make_router(strict_expiry=True, token_expiry=tokens.expiry_of)
        router = harness.router
        async with connection(harness, tokens) as conn:
            events = conn.events()
            subscription = await subscribed(conn)
            lost = await next_event(events, Disconnected)
            assert lost.code == 4401
            assert isinstance(await next_item(subscription), Resubscribed)
            await push(harness, CHANNEL, 1)
            assert isinstance(await next_item(subscription), Change)
            await events.aclose()
        assert tokens.renewals >= 1
        assert router.expiry_closes >= 1
        assert router.expired_token_subs == []


CHAOS_SECONDS = float(os.environ.get("GIOSG_CHAOS_SECONDS", "5"))
CHAOS_SEED = int(os.environ.get("GIOSG_CHAOS_SEED", "1234"))


async def _chaos_script(
    router: MessageRouter, channel: str, seconds: float, seed: int, done: threading.Event
) -> int:
    """Push numbered events every 10 ms and drop every socket every 0.5-2 s."""
    rng = random.Random(seed)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    next_drop = loop.time() + rng.uniform(0.5, 2.0)
    seq = 0
    while loop.time() < deadline:
        seq += 1
        router.push(channel, "added", {"id": f"m{seq}", "seq": seq, "tail": False})
        if loop.time() >= next_drop:
            mode: DropMode = rng.choice(["reset", "close", "blackhole"])
            router.drop_all(mode, code=rng.choice([1001, 1011, 1012]))
            next_drop = loop.time() + rng.uniform(0.5, 2.0)
        await asyncio.sleep(0.01)
    # Tail: keep publishing until the client has seen one event after the chaos.
    while not done.is_set():
        seq += 1
        router.push(channel, "added", {"id": f"m{seq}", "seq": seq, "tail": True})
        await asyncio.sleep(0.02)
    return seq


async def test_chaos_no_silent_loss(make_router: MakeRouter, tokens: Tokens) -> None:
    """Under random drops every event is delivered or covered by a marker around its slot."""
    harness = make_router()
    done = threading.Event()
    items: list[SubscriptionEvent] = []
    async with connection(harness, tokens) as conn:
        subscription = await subscribed(conn)
        future = harness.submit(
            _chaos_script(harness.router, CHANNEL, CHAOS_SECONDS, seed=CHAOS_SEED, done=done)
        )
        try:
            with anyio.fail_after(CHAOS_SECONDS + 30):
                async for item in subscription:
                    items.append(item)
                    if isinstance(item, Change) and item.resource and item.resource["tail"]:
                        break
        finally:
            done.set()
            await anyio.to_thread.run_sync(future.result)
        drops = conn.stats.drops

    delivered = [
        (index, item.resource["seq"])
        for index, item in enumerate(items)
        if isinstance(item, Change) and item.resource
    ]
    seqs = [seq for _, seq in delivered]
    assert seqs == sorted(set(seqs)), "events out of order or duplicated"
    markers = [i for i, item in enumerate(items) if isinstance(item, Resubscribed | Gap)]
    index_of = {seq: index for index, seq in delivered}
    uncovered = []
    for missing in sorted(set(range(1, seqs[-1])) - set(seqs)):
        before = max((index_of[s] for s in seqs if s < missing), default=-1)
        after = min(index_of[s] for s in seqs if s > missing)
        if not any(before < marker < after for marker in markers):
            uncovered.append(missing)
    assert uncovered == [], f"events lost without a marker: {uncovered[:20]}"
    assert drops >= 2
    assert len(markers) >= 1
    assert len(seqs) > seqs[-1] / 3


async def test_the_close_code_and_reason_reach_the_server() -> None:
    """``close(code, reason)`` on the default transport's socket sends that close frame.

    On both backends: websockets' trio connection closes with ``aclose()``, its asyncio
    one with ``close()``; the server records what it received.
    """
    from websockets.asyncio.server import ServerConnection, serve

    from giosg_visitor.testing import LoopThread

    received: list[tuple[int | None, str | None]] = []

    async def handler(ws: ServerConnection) -> None:
        await ws.wait_closed()
        received.append((ws.close_code, ws.close_reason))

    with LoopThread() as thread:
        server = await thread.arun(_serve_on_loopback(serve, handler))
        port = server.sockets[0].getsockname()[1]
        try:
            async with WebSocketTransport(proxy=None).connect(
                f"ws://127.0.0.1:{port}/",
                open_timeout=5.0,
                ping_interval=None,
                ping_timeout=None,
                close_timeout=2.0,
            ) as socket:
                await socket.close(4000, "going away on purpose")
            with anyio.fail_after(5):
                while not received:  # noqa: ASYNC110 - the server is on another thread
                    await anyio.sleep(0.01)
        finally:
            server.close()
            await thread.arun(server.wait_closed())
    assert received == [(4000, "going away on purpose")]


async def _serve_on_loopback(serve: Any, handler: Any) -> Any:
    return await serve(handler, "127.0.0.1", 0)
