"""The real-time socket under kills, gaps, dead links, expiry, codes.

Over real sockets against ``FakeGiosg`` (the message router runs in its own thread), on
asyncio and trio. Keepalive and backoff are shortened; real time is used only for that
and for hang guards. Already covered elsewhere (README.md): one chat losing nothing under
reset/close/black-hole drops (``tests/e2e/test_chat_e2e.py``), the connection-level chaos
test, overflow at the connection level, hostile frames, the close-code classification
table in pure form (``tests/test_realtime_*.py``).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import anyio
import pytest

from giosg_visitor import ConnectionClosedError, RenewalPolicy, Secret, ServerError, Visitor
from giosg_visitor.chat import MessageStream
from giosg_visitor.models import Message
from giosg_visitor.realtime import (
    Change,
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
)
from giosg_visitor.testing import FakeGiosg, MessageRouter

from .._helpers import FAST_RETRY, ORG_ID, wait_until
from .._router_harness import RouterHarness
from .canary import Sentinel
from .figures import Figures


ROOM_ID = "9926bdfa-56e0-11e5-b98c-6c4008c08dfe"
CHANNEL = "/api/v5/public/visitors/8a60b202474547dbb8ce19737e4c166f/chats"
PING = 0.5
FAST_RECONNECT = ReconnectPolicy(first_delay=0.2, max_delay=1.0)


async def next_event(events: ConnectionEvents, kind: Any, within: float = 5.0) -> Any:
    """The next connection event of type ``kind``."""
    with anyio.fail_after(within):
        async for event in events:
            if isinstance(event, kind):
                return event
    raise AssertionError("the event stream ended")


def _fin_all(router: MessageRouter) -> int:
    """Close every live socket with a TCP FIN and no close frame."""
    count = 0
    for client in router.clients:
        if client.is_live:
            client.closing = True
            client.subscriptions.clear()
            client.ws.transport.close()
            count += 1
    return count


#: How the zero-loss test kills sockets, in rotation: TCP reset, FIN without close frame,
#: close frames 1001/1011/1012, and a black hole found by keepalive.
KILLS: list[tuple[str, int]] = [
    ("reset", 1006),
    ("close", 1001),
    ("fin", 1006),
    ("close", 1011),
    ("blackhole", 1011),
    ("close", 1012),
]


async def kill(giosg: FakeGiosg, step: int) -> int:
    """Kill every socket the ``step``-th way of :data:`KILLS`; returns how many."""
    mode, code = KILLS[step % len(KILLS)]
    if mode == "fin":
        return await giosg.call(lambda: _fin_all(giosg.router))
    return await giosg.drop_sockets(mode, code=code)  # type: ignore[arg-type]


def _operator_messages(received: list[Message]) -> list[Message]:
    return [m for m in received if m.sender_type == "user" and m.type == "msg"]


def _count_loss(
    figures: Figures, expected: list[str], received: list[Message]
) -> tuple[list[str], int]:
    """Record and return (lost texts, duplicates) of ``received`` against ``expected``."""
    texts = [m.message or "" for m in received]
    lost = sorted(set(expected) - set(texts))
    duplicates = len(received) - len({m.id for m in received})
    figures.add("messages.expected", len(expected))
    figures.add("messages.lost", len(lost))
    figures.add("messages.duplicates", duplicates)
    return lost, duplicates


# Zero loss under socket kills ---------------------------------------------------------------


async def _zero_loss(
    chats: int, per_chat: int, seconds: float, figures: Figures, sentinel: Sentinel
) -> None:
    rng = random.Random(chats * 1000 + per_chat)
    async with (
        FakeGiosg(rooms=[ROOM_ID]) as giosg,
        Visitor(
            ORG_ID,
            base_url=giosg.base_url,
            reconnect=FAST_RECONNECT,
            ping_interval=PING,
            ping_timeout=PING,
            retry=FAST_RETRY,
        ) as visitor,
    ):
        operator = await giosg.operator_online(ROOM_ID)
        opened = [await visitor.start_chat(ROOM_ID, join_room=False) for _ in range(chats)]
        expected = {
            chat.id: [f"c{n}-m{i:04d}" for i in range(per_chat)] for n, chat in enumerate(opened)
        }
        received: dict[str, list[Message]] = {chat.id: [] for chat in opened}
        kills = 0

        async def consume(stream: MessageStream, chat_id: str) -> None:
            async for message in stream:
                received[chat_id].append(message)
                if len(_operator_messages(received[chat_id])) == per_chat:
                    return

        async def operators_talk() -> None:
            for i in range(per_chat):
                for chat in opened:
                    await giosg.operator_says(chat.id, operator, expected[chat.id][i])
                await anyio.sleep(seconds / per_chat)

        async def chaos(done: anyio.Event) -> None:
            nonlocal kills
            step = 0
            while not done.is_set():
                await anyio.sleep(rng.uniform(0.3, 1.0))
                kills += await kill(giosg, step)
                step += 1

        streams = [chat.messages() for chat in opened]
        done = anyio.Event()
        with anyio.fail_after(60 + 2 * seconds):
            async with anyio.create_task_group() as tg:
                tg.start_soon(chaos, done)
                async with anyio.create_task_group() as consumers:
                    for stream, chat in zip(streams, opened, strict=True):
                        consumers.start_soon(consume, stream, chat.id)
                    await operators_talk()
                done.set()
                tg.cancel_scope.cancel()
        for stream in streams:
            await stream.aclose()
        # Live chat state ("changed" notifications merged, or refreshed after a gap).
        with anyio.fail_after(10):
            for chat in opened:
                while chat.info.message_count != per_chat:
                    await chat.wait_changed()
        sentinel.scan(visitor, *opened, where="socket kills")
        figures.add("faults.socket_kills", kills)
        figures.add("trials.chats", chats)
    problems = []
    for chat in opened:
        got = _operator_messages(received[chat.id])
        lost, duplicates = _count_loss(figures, expected[chat.id], got)
        if [m.message for m in got] != expected[chat.id]:
            problems.append(f"chat {chat.id}: {len(lost)} lost, {duplicates} duplicates")
    assert problems == []
    assert kills >= 2


async def test_every_message_once_and_in_order_under_socket_kills(
    figures: Figures, secret_sentinel: Sentinel
) -> None:
    """3 chats x 40 operator messages over 5 s, sockets killed every 0.3-1 s, 6 ways."""
    await _zero_loss(chats=3, per_chat=40, seconds=5, figures=figures, sentinel=secret_sentinel)


@pytest.mark.slow
async def test_every_message_once_and_in_order_under_socket_kills_long(
    figures: Figures, secret_sentinel: Sentinel
) -> None:
    """Long run: 10 chats x 300 operator messages over 90 s, the same chaos."""
    await _zero_loss(chats=10, per_chat=300, seconds=90, figures=figures, sentinel=secret_sentinel)


# Honest gaps --------------------------------------------------------------------------------


async def _drain(events: ConnectionEvents, seconds: float) -> list[ConnectionEvent]:
    seen: list[ConnectionEvent] = []
    with anyio.move_on_after(seconds):
        async for event in events:
            seen.append(event)
    return seen


async def test_a_consumer_that_falls_behind_gets_one_gap_and_loses_nothing(
    giosg: FakeGiosg, figures: Figures
) -> None:
    """1,101 notifications into a 1,000-slot buffer: one Gap, then REST fills it in."""
    burst = 1100
    async with Visitor(ORG_ID, base_url=giosg.base_url) as visitor:
        operator = await giosg.operator_online(ROOM_ID)
        chat = await visitor.start_chat(ROOM_ID, join_room=False)
        texts = [f"b{i:04d}" for i in range(burst)]
        events = visitor.realtime.events()
        async with chat.messages(include_history=False) as stream:

            def flood() -> None:
                for text in texts:
                    giosg.state.chats.operator_says(chat.id, operator, text)

            await giosg.call(flood)
            stats = visitor.realtime.stats
            # The join message and the burst, minus the buffer, must have been dropped.
            await wait_until(lambda: stats.dropped_notifications >= burst + 1 - 1000, seconds=30)
            received: list[Message] = []
            with anyio.fail_after(30):
                while len(_operator_messages(received)) < burst:
                    received.append(await anext(stream))
        seen = await _drain(events, 0.3)
        await events.aclose()
    channel = f"/api/v5/public/visitors/{visitor.visitor_id}/chats/{chat.id}/messages"
    gaps = [e for e in seen if isinstance(e, Gap) and e.channel == channel]
    got = _operator_messages(received)
    lost, duplicates = _count_loss(figures, texts, got)
    assert len(gaps) == 1
    assert [m.message for m in got] == texts
    assert (lost, duplicates) == ([], 0)


async def _read_until_error(stream: MessageStream) -> None:
    while True:
        await anext(stream)


async def test_a_gap_that_rest_cannot_fill_is_reported_then_filled(
    giosg: FakeGiosg, figures: Figures
) -> None:
    """Socket down and history failing: the stream raises, then recovers everything."""
    async with Visitor(
        ORG_ID, base_url=giosg.base_url, reconnect=FAST_RECONNECT, retry=FAST_RETRY
    ) as visitor:
        operator = await giosg.operator_online(ROOM_ID)
        chat = await visitor.start_chat(ROOM_ID, join_room=False)
        missed = [f"missed-{i}" for i in range(3)]
        async with chat.messages(include_history=False) as stream:
            outage = giosg.inject(
                endpoint="api", status=503, times=1_000_000, path_contains=f"{chat.id}/messages"
            )
            await giosg.drop_sockets("reset")
            for text in missed:
                await giosg.operator_says(chat.id, operator, text)
            # Honest: the caller learns that the backfill failed instead of a silent skip.
            with anyio.fail_after(30), pytest.raises(ServerError):
                await _read_until_error(stream)
            outage.times = 0
            received: list[Message] = []
            with anyio.fail_after(10):
                while len(_operator_messages(received)) < len(missed):
                    received.append(await anext(stream))
            await giosg.operator_says(chat.id, operator, "after")
            with anyio.fail_after(10):
                while len(_operator_messages(received)) < len(missed) + 1:
                    received.append(await anext(stream))
    got = _operator_messages(received)
    lost, duplicates = _count_loss(figures, [*missed, "after"], got)
    assert [m.message for m in got] == [*missed, "after"]
    assert (lost, duplicates) == ([], 0)


# A dead link --------------------------------------------------------------------------------


async def test_a_dead_link_is_found_within_ping_interval_plus_timeout(
    giosg: FakeGiosg, figures: Figures
) -> None:
    """An idle but answering link stays up; a black hole is found within 2 s."""
    async with Visitor(
        ORG_ID,
        base_url=giosg.base_url,
        ping_interval=PING,
        ping_timeout=PING,
        reconnect=FAST_RECONNECT,
    ) as visitor:
        connection = visitor.realtime
        async with connection.events() as events:
            await anyio.sleep(4 * PING)  # idle: pings are answered, nothing else moves
            assert connection.stats.drops == 0
            assert connection.state is ConnectionState.OPEN
            started = anyio.current_time()
            figures.add("faults.socket_kills", await giosg.drop_sockets("blackhole"))
            lost = await next_event(events, Disconnected, within=10)
            detected = anyio.current_time() - started
            await next_event(events, Reconnected, within=10)
    assert lost.code == 1011
    assert detected <= PING + PING + 1.0


# Token expiry while connected ---------------------------------------------------------------


async def test_short_tokens_while_connected_lose_nothing_and_never_expire_on_the_socket(
    figures: Figures,
) -> None:
    """3 s tokens, strict router, 80 messages over 6 s: no expiry close, no loss."""
    texts = [f"t{i:04d}" for i in range(80)]
    async with (
        FakeGiosg(token_lifetime=3, strict_socket_expiry=True, rooms=[ROOM_ID]) as giosg,
        Visitor(ORG_ID, base_url=giosg.base_url, reconnect=FAST_RECONNECT) as visitor,
    ):
        operator = await giosg.operator_online(ROOM_ID)
        chat = await visitor.start_chat(ROOM_ID, join_room=False)
        received: list[Message] = []
        async with chat.messages(include_history=False) as stream:

            async def talk() -> None:
                for text in texts:
                    await giosg.operator_says(chat.id, operator, text)
                    await anyio.sleep(0.075)

            async with anyio.create_task_group() as tg:
                tg.start_soon(talk)
                with anyio.fail_after(40):
                    while len(_operator_messages(received)) < len(texts):
                        received.append(await anext(stream))
        figures.add("trials.token_lifetimes", 2)
        router = giosg.router
        expiry_closes, expired_subs = router.expiry_closes, router.expired_token_subs
    got = _operator_messages(received)
    assert _count_loss(figures, texts, got) == ([], 0)
    assert [m.message for m in got] == texts
    assert expiry_closes == 0
    assert expired_subs == []
    assert len(giosg.auth_requests) >= 3  # renewed (and re-authorised) at least twice


async def test_an_auth_close_renews_once_and_reconnects_once(giosg: FakeGiosg) -> None:
    """Close code 4401 on the socket: exactly one renewal and one new socket."""
    async with Visitor(
        ORG_ID,
        base_url=giosg.base_url,
        reconnect=FAST_RECONNECT,
        renewal=RenewalPolicy(min_spacing=0.2),
    ) as visitor:
        channel = f"/api/v5/public/orgs/{ORG_ID}/rooms/{ROOM_ID}/online_users"
        async with visitor.subscribe(channel) as subscription, visitor.realtime.events() as events:
            with anyio.fail_after(5):
                await subscription.wait_subscribed()
            auths, handshakes = len(giosg.auth_requests), giosg.router.handshakes
            await giosg.drop_sockets("close", code=4401)
            lost = await next_event(events, Disconnected)
            await next_event(events, Reconnected)
            with anyio.fail_after(5):
                assert isinstance(await anext(subscription), Resubscribed)
            await giosg.push(channel, "added", {"id": "after"})
            with anyio.fail_after(5):
                item = await anext(subscription)
    assert lost.code == 4401
    assert isinstance(item, Change)
    assert len(giosg.auth_requests) == auths + 1
    assert giosg.router.handshakes == handshakes + 1


async def test_a_second_auth_rejection_fails_the_socket(giosg: FakeGiosg) -> None:
    """4401, one renewal, then a refused handshake (401): the connection fails."""
    async with Visitor(
        ORG_ID,
        base_url=giosg.base_url,
        reconnect=FAST_RECONNECT,
        renewal=RenewalPolicy(min_spacing=0.2),
    ) as visitor:
        auths = len(giosg.auth_requests)
        async with visitor.realtime.events() as events:
            await giosg.refuse_handshakes(401)
            await giosg.drop_sockets("close", code=4401)
            first = await next_event(events, Disconnected)
            second = await next_event(events, Disconnected)
        with anyio.fail_after(10), pytest.raises(HandshakeRejectedError) as info:
            await visitor.realtime.wait_connected()
        state = visitor.realtime.state
    assert (first.code, first.retry_in is not None) == (4401, True)
    assert (second.code, second.retry_in) == (None, None)
    assert info.value.status_code == 401
    assert state is ConnectionState.CLOSED
    assert len(giosg.auth_requests) == auths + 1


# Close codes and refused handshakes ---------------------------------------------------------


class _Tokens:
    """A token provider that mints a new token per call and counts forced renewals."""

    def __init__(self, sentinel: Sentinel) -> None:
        self.sentinel = sentinel
        self.renewals = 0
        #: Every token handed out, kept alive as a session would keep its current one.
        self.issued: list[Secret] = []

    async def __call__(self) -> Secret:
        await anyio.lowlevel.checkpoint()
        self.issued.append(Secret(self.sentinel.canary("socket-token")))
        return self.issued[-1]

    async def renew(self) -> None:
        self.renewals += 1
        await anyio.lowlevel.checkpoint()


@pytest.fixture
def router() -> Iterator[RouterHarness]:
    """A message router on its own loop."""
    with RouterHarness(MessageRouter()) as harness:
        yield harness


def _connection(harness: RouterHarness, tokens: _Tokens, **kwargs: Any) -> RealtimeConnection:
    options: dict[str, Any] = {
        "socket_url": harness.socket_url,
        "token_provider": tokens,
        "renew_token": tokens.renew,
        "ping_interval": PING,
        "ping_timeout": PING,
        "close_timeout": 1.0,
        # Counters reset at every drop, so one connection can go through the whole table.
        "reconnect": ReconnectPolicy(first_delay=0.05, max_delay=0.2, stable_after=0.0),
        "rng": random.Random(7),
    }
    options.update(kwargs)
    return RealtimeConnection(**options)


RECONNECT_CODES = [1000, 1001, 1008, 1011, 1012, 1013, 1014, 3000, 4000, 4999]
PROTOCOL_CODES = [1002, 1003, 1007, 1009]
AUTH_CODES = [4001, 4003, 4401, 4403]


async def _subscribed(conn: RealtimeConnection) -> Subscription:
    subscription = conn.subscribe(CHANNEL)
    with anyio.fail_after(5):
        await subscription.wait_subscribed()
    return subscription


async def test_close_codes_map_to_reconnect_or_renew_then_reconnect(
    router: RouterHarness, secret_sentinel: Sentinel, figures: Figures
) -> None:
    """Every close code (and a TCP reset) reconnects; auth codes renew first."""
    tokens = _Tokens(secret_sentinel)
    table: list[tuple[str, int]] = [("reset", 1006)]
    table += [("close", code) for code in RECONNECT_CODES + PROTOCOL_CODES + AUTH_CODES]
    outcome: dict[int, tuple[int | None, int]] = {}
    async with _connection(router, tokens) as conn, conn.events() as events:
        subscription = await _subscribed(conn)
        for mode, code in table:
            renewals = tokens.renewals
            router.call(router.router.drop_all, mode, code=code)  # type: ignore[arg-type]
            lost = await next_event(events, Disconnected)
            assert lost.retry_in is not None, f"code {code} failed the connection"
            await next_event(events, Reconnected)
            with anyio.fail_after(5):
                assert isinstance(await anext(subscription), Resubscribed)
            outcome[code] = (lost.code, tokens.renewals - renewals)
        figures.add("faults.socket_kills", len(table))
    expected = {code: (code, 1 if code in AUTH_CODES else 0) for _, code in table}
    assert outcome == expected


@pytest.mark.parametrize("code", [1002, 1007], ids=["1002", "1007"])
async def test_repeated_protocol_closes_fail_the_connection(
    router: RouterHarness, secret_sentinel: Sentinel, code: int
) -> None:
    """Three protocol-error closes in a row fail the connection with that code."""
    tokens = _Tokens(secret_sentinel)
    async with _connection(router, tokens, reconnect=FAST_RECONNECT) as conn:
        async with conn.events() as events:
            for _ in range(3):
                await _subscribed(conn)
                router.call(router.router.drop_all, "close", code=code)
                await next_event(events, Disconnected)
        with anyio.fail_after(5), pytest.raises(ConnectionClosedError) as info:
            await conn.wait_connected()
    assert info.value.code == code


RETRYABLE_HANDSHAKES: list[tuple[int, float | None]] = [
    (401, None),
    (403, None),
    (408, None),
    (429, 0.3),
    (500, None),
    (502, None),
    (503, 0.3),
    (504, None),
]


async def test_refused_handshakes_are_retried_and_honour_retry_after(
    router: RouterHarness, secret_sentinel: Sentinel
) -> None:
    """401/403 renew then retry; 408/429/5xx retry, 429 and 503 after Retry-After."""
    tokens = _Tokens(secret_sentinel)
    seen: dict[int, tuple[float | None, int]] = {}
    async with _connection(router, tokens) as conn, conn.events() as events:
        subscription = await _subscribed(conn)
        for status, retry_after in RETRYABLE_HANDSHAKES:
            renewals = tokens.renewals
            router.call(router.router.refuse_handshakes, status, retry_after=retry_after, count=1)
            router.call(router.router.drop_all, "reset")
            await next_event(events, Disconnected)  # the drop
            refused = await next_event(events, Disconnected)  # the refused handshake
            assert f"HTTP {status}" in refused.reason
            await next_event(events, Reconnected)
            with anyio.fail_after(5):  # the server accepted our token again
                assert isinstance(await anext(subscription), Resubscribed)
            seen[status] = (refused.retry_in, tokens.renewals - renewals)
    for status, retry_after in RETRYABLE_HANDSHAKES:
        delay, renewals = seen[status]
        assert delay is not None
        if retry_after is not None:
            assert delay == pytest.approx(retry_after)
        assert renewals == (1 if status in (401, 403) else 0), status


@pytest.mark.parametrize("status", [400, 404, 410])
async def test_other_refused_handshakes_fail_at_once(
    router: RouterHarness, secret_sentinel: Sentinel, status: int
) -> None:
    """A 4xx other than 401/403/408/425/429 fails without retrying."""
    tokens = _Tokens(secret_sentinel)
    router.call(router.router.refuse_handshakes, status)
    async with _connection(router, tokens) as conn:
        with anyio.fail_after(5), pytest.raises(HandshakeRejectedError) as info:
            await conn.wait_connected()
    assert info.value.status_code == status
    assert router.router.refused_handshakes == 1
