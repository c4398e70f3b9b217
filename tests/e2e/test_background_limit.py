"""The pool-wide limit on background requests, and the pool's gate in front of httpcore.

Unit tests of :class:`DeadlineLimiter` (earliest deadline first, cancellation) and of
:class:`GatedTransport` (never more requests inside the HTTP library than its
connections, pool timeout, the slot held until the body is closed), and end-to-end tests
over real sockets: a pool with a small HTTP connection pool whose visitors all renew (or
all refresh their room presence) at the same virtual instant completes every request
without queueing more in the HTTP library than its connections can serve; a background
request whose token must be renewed first cannot deadlock the limit (both backends).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import anyio
import anyio.lowlevel
import httpx
import pytest

from giosg_visitor import MemoryStore, SessionState, Timeouts, Visitor
from giosg_visitor._limiter import (
    DeadlineLimiter,
    GatedTransport,
    ShardedTransport,
    background,
    limiter_for,
    register,
    unregister,
)
from giosg_visitor.pool import VisitorPool
from giosg_visitor.realtime import ReconnectPolicy
from giosg_visitor.testing import FakeClock, FakeGiosg

from .._helpers import ORG_ID, ROOM_ID, get_chats, virtual_world, wait_until


async def _yield(rounds: int = 5) -> None:
    for _ in range(rounds):
        await anyio.lowlevel.checkpoint()


class TestDeadlineLimiter:
    async def test_waiters_are_admitted_earliest_deadline_first(self) -> None:
        """With one slot held, waiters arriving in any order are served by deadline."""
        limiter = DeadlineLimiter(1)
        order: list[float] = []

        async def wait(deadline: float) -> None:
            async with limiter.slot(deadline):
                order.append(deadline)
                await _yield()

        async with anyio.create_task_group() as tg, limiter.slot(0.0):
            for deadline in (50.0, 10.0, 40.0, 20.0, 30.0, 10.0):
                tg.start_soon(wait, deadline)
                await _yield()
            assert limiter.waiting == 6
        assert order == [10.0, 10.0, 20.0, 30.0, 40.0, 50.0]
        assert limiter.max_in_use == 1
        assert limiter.in_use == 0

    async def test_never_more_holders_than_capacity(self) -> None:
        """Two hundred tasks through three slots: at most three inside at any time."""
        limiter = DeadlineLimiter(3)
        inside = 0
        peak = 0

        async def hold(deadline: float) -> None:
            nonlocal inside, peak
            async with limiter.slot(deadline):
                inside += 1
                peak = max(peak, inside)
                await _yield(3)
                inside -= 1

        async with anyio.create_task_group() as tg:
            for n in range(200):
                tg.start_soon(hold, float(n % 7))
        assert peak == 3
        assert limiter.granted == 200
        assert limiter.in_use == 0

    async def test_a_cancelled_waiter_is_skipped_and_a_slot_is_never_lost(self) -> None:
        """Cancelling waiters (queued or just granted) leaves the slots usable."""
        limiter = DeadlineLimiter(1)
        served: list[str] = []

        async def wait(name: str, deadline: float, scope: anyio.CancelScope) -> None:
            with scope:
                async with limiter.slot(deadline):
                    served.append(name)

        early, late = anyio.CancelScope(), anyio.CancelScope()
        async with anyio.create_task_group() as tg, limiter.slot(0.0):
            tg.start_soon(wait, "early", 1.0, early)
            tg.start_soon(wait, "late", 2.0, late)
            await _yield()
            early.cancel()
            await _yield()
            # "late" got the slot once "early" left the queue.
        assert served == ["late"]
        assert limiter.in_use == 0
        async with limiter.slot(5.0):
            assert limiter.in_use == 1

    def test_capacity_must_be_positive(self) -> None:
        with pytest.raises(ValueError, match="capacity"):
            DeadlineLimiter(0)


class _CountingTransport(httpx.AsyncBaseTransport):
    """Counts requests inside the HTTP library at once (waiting for a connection or sent)."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.now = 0
        self.peak = 0
        # While set, PATCH requests wait here until it fires: a test holds the first ones on
        # the wire so that the rest must queue, however fast the loopback server answers.
        self.hold_patches: anyio.Event | None = None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.now += 1
        self.peak = max(self.peak, self.now)
        try:
            if self.hold_patches is not None and request.method == "PATCH":
                await self.hold_patches.wait()
            return await self.inner.handle_async_request(request)
        finally:
            self.now -= 1

    async def aclose(self) -> None:
        await self.inner.aclose()


@pytest.fixture
def sdk_warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    caplog.set_level(logging.INFO, logger="giosg_visitor")
    return caplog.records


@asynccontextmanager
async def _counting_pool(
    giosg: FakeGiosg, clock: FakeClock, *, connections: int, background: int, **options: Any
) -> AsyncIterator[tuple[_CountingTransport, VisitorPool, httpx.AsyncClient]]:
    """A pool on the fake over an HTTP client of ``connections`` connections.

    The client's transport counts the requests inside the HTTP library. A short pool
    timeout: a request queued behind many others fails fast. ``options`` go to the pool.
    """
    transport = _CountingTransport(
        httpx.AsyncHTTPTransport(
            limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
        )
    )
    timeouts = Timeouts(pool=2.0)
    async with (
        httpx.AsyncClient(transport=transport, timeout=timeouts.httpx_timeout()) as client,
        VisitorPool(
            ORG_ID,
            store=MemoryStore(),
            base_url=giosg.base_url,
            http_client=client,
            clock=clock,
            idle_timeout=None,
            max_background_requests=background,
            realtime=False,
            timeouts=timeouts,
            **options,
        ) as pool,
    ):
        yield transport, pool, client


async def _fast_settle() -> None:
    # Real sockets are in flight: "every task blocked" would not mean idle anyway.
    await _yield(20)


async def test_a_small_http_pool_completes_every_simultaneous_renewal(
    sdk_warnings: list[logging.LogRecord],
) -> None:
    """200 pooled visitors, 4 HTTP connections, every renewal due at the same instant.

    Over real sockets against FakeGiosg, on a virtual clock shared with it: every visitor
    renews exactly once, no attempt fails (no PoolTimeout), at most the pool's background
    limit of requests is ever inside the HTTP library (so its queue never holds more than
    its connections serve), and after the old tokens' expiry no request carries one.
    """
    visitors_count, connections, background = 200, 4, 3
    clock = FakeClock(settle=_fast_settle)
    async with (
        FakeGiosg(token_lifetime=120, clock=clock) as giosg,
        _counting_pool(
            giosg,
            clock,
            connections=connections,
            background=background,
            # The same draw for everyone: every renewal is due at the same instant.
            rng=lambda: 0.0,
        ) as (transport, pool, client),
    ):
        limiter = limiter_for(client)
        assert limiter is not None
        visitors = {}

        async def start(n: int) -> None:
            visitors[n] = await pool.get(f"user-{n}")

        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                for n in range(visitors_count):
                    tg.start_soon(start, n)
        assert len(giosg.auth_requests) == visitors_count

        # Past the soft point (60 s for 120 s tokens with this draw): all renew now.
        await clock.advance(61)
        await wait_until(lambda: len(giosg.auth_requests) >= 2 * visitors_count, seconds=60)
        await wait_until(
            lambda: all(v.state is SessionState.AUTHENTICATED for v in visitors.values())
        )
        assert len(giosg.auth_requests) == 2 * visitors_count
        assert transport.peak <= background
        assert limiter.max_in_use <= background
        assert limiter.max_waiting > 0  # the renewals did queue: in the limiter

        # Past the old tokens' expiry (120 s after they were issued).
        await clock.advance(59.5)
        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                for visitor in visitors.values():

                    async def probe(v: object = visitor) -> None:
                        response = await get_chats(giosg, v)  # type: ignore[arg-type]
                        assert response.status_code == 200

                    tg.start_soon(probe)
        # (The next renewals, due at 120 s after the first ones, may be in flight.)
        assert all(v.state is not SessionState.FAILED for v in visitors.values())
    assert giosg.expired_token_requests == []
    failures = [
        r.getMessage()
        for r in sdk_warnings
        if "failed" in r.msg or "did not finish" in r.getMessage()
    ]
    assert failures == []


async def test_the_limit_defaults_to_half_the_http_pool_and_lives_with_the_pool(
    giosg: FakeGiosg,
) -> None:
    """Default capacity max_connections // 2; tied to the pool's client while it runs."""
    pool = VisitorPool(ORG_ID, store=MemoryStore(), base_url=giosg.base_url, max_connections=8)
    async with pool:
        client = (await pool.get("alice")).http_client
        limiter = limiter_for(client)
        assert limiter is not None
        assert limiter.capacity == 4
        assert limiter.granted == 1  # alice's first auth went through it
    assert limiter_for(client) is None
    with pytest.raises(ValueError, match="max_background_requests"):
        VisitorPool(ORG_ID, store=MemoryStore(), max_background_requests=0)
    with pytest.raises(ValueError, match="max_background_requests"):
        VisitorPool(ORG_ID, store=MemoryStore(), max_connections=10, max_background_requests=11)


class TestGatedTransport:
    @staticmethod
    def _held(release: anyio.Event, counts: dict[str, int]) -> httpx.AsyncBaseTransport:
        async def handler(request: httpx.Request) -> httpx.Response:
            counts["now"] += 1
            counts["peak"] = max(counts["peak"], counts["now"])
            counts["order"] = counts.get("order", 0) * 100 + int(request.url.path[1:])
            try:
                await release.wait()
            finally:
                counts["now"] -= 1
            return httpx.Response(200, content=b"x" * 10)

        return httpx.MockTransport(handler)

    async def test_never_more_requests_inside_than_capacity(self) -> None:
        """Thirty requests through a gate of three: at most three reach the transport."""
        release, counts = anyio.Event(), {"now": 0, "peak": 0}
        gated = GatedTransport(self._held(release, counts), 3, time.monotonic)
        statuses: list[int] = []
        async with httpx.AsyncClient(transport=gated, base_url="http://x") as client:

            async def get(n: int) -> None:
                statuses.append((await client.get(f"/{n}")).status_code)

            async with anyio.create_task_group() as tg:
                for n in range(30):
                    tg.start_soon(get, n)
                await _yield(20)
                assert counts["now"] == 3
                assert gated.gate.waiting == 27
                release.set()
        assert statuses == [200] * 30
        assert counts["peak"] == 3
        assert gated.gate.in_use == 0

    async def test_a_waiter_gets_pool_timeout(self) -> None:
        """Waiting at the gate longer than the pool timeout raises httpx.PoolTimeout."""
        release, counts = anyio.Event(), {"now": 0, "peak": 0}
        gated = GatedTransport(self._held(release, counts), 1, time.monotonic)
        timeout = httpx.Timeout(5.0, pool=0.05)
        async with (
            httpx.AsyncClient(transport=gated, base_url="http://x", timeout=timeout) as client,
            anyio.create_task_group() as tg,
        ):
            tg.start_soon(client.get, "/1")
            await _yield(5)
            with pytest.raises(httpx.PoolTimeout):
                await client.get("/2")
            assert gated.gate.in_use == 1
            release.set()
        assert gated.gate.in_use == 0

    async def test_the_slot_is_held_until_the_body_is_closed(self) -> None:
        """A streamed response keeps its slot (and connection) until it is closed."""

        class Body(httpx.AsyncByteStream):
            async def __aiter__(self) -> AsyncIterator[bytes]:
                yield b"abc"

        transport = httpx.MockTransport(lambda request: httpx.Response(200, stream=Body()))
        gated = GatedTransport(transport, 1, time.monotonic)
        async with httpx.AsyncClient(transport=gated, base_url="http://x") as client:
            async with client.stream("GET", "/1") as response:
                assert gated.gate.in_use == 1
                assert await response.aread() == b"abc"
            assert gated.gate.in_use == 0
            async with client.stream("GET", "/2"):
                pass  # closed unread
            assert gated.gate.in_use == 0

    async def test_background_requests_go_first_by_deadline(self) -> None:
        """Behind a held slot, background requests (by deadline) pass plain ones."""
        release, counts = anyio.Event(), {"now": 0, "peak": 0}
        gated = GatedTransport(self._held(release, counts), 1, lambda: 100.0)
        async with httpx.AsyncClient(transport=gated, base_url="http://x") as client:

            async def get(n: int, deadline: float | None) -> None:
                if deadline is None:
                    await client.get(f"/{n}")
                else:
                    with background(deadline):
                        await client.get(f"/{n}")

            async with anyio.create_task_group() as tg:
                tg.start_soon(get, 1, None)
                await _yield(5)
                # A plain request ranks at now + pool timeout (100 + 5).
                for n, deadline in ((2, None), (3, 150.0), (4, 101.0)):
                    tg.start_soon(get, n, deadline)
                    await _yield(5)
                release.set()
        assert counts["order"] == 1_04_02_03


async def test_presence_refreshes_go_through_the_background_limit(
    sdk_warnings: list[logging.LogRecord],
) -> None:
    """60 pooled visitors in a room, every presence refresh due at the same instant.

    Over real sockets on a virtual clock: every refresh is made, each through a slot of
    the background limit, and never more than the limit's capacity is inside the HTTP
    library at once.
    """
    visitors_count, connections, capacity, presence = 60, 4, 2, 60
    clock = FakeClock(settle=_fast_settle)
    async with (
        FakeGiosg(token_lifetime=1800, clock=clock, rooms=[ROOM_ID]) as giosg,
        _counting_pool(
            giosg, clock, connections=connections, background=capacity, presence_expires_in=presence
        ) as (transport, pool, client),
    ):
        limiter = limiter_for(client)
        assert limiter is not None

        async def join(n: int) -> None:
            visitor = await pool.get(f"user-{n}")
            await visitor.join_room(ROOM_ID)

        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                for n in range(visitors_count):
                    tg.start_soon(join, n)

        def refreshes() -> int:
            return sum(1 for r in giosg.requests if r.method == "PATCH" and r.status == 200)

        assert refreshes() == 0
        granted, transport.peak, limiter.max_waiting = limiter.granted, 0, 0
        release = transport.hold_patches = anyio.Event()
        await clock.advance(presence / 2 + 0.5)  # every refresh is due now
        # The first refreshes hold their places on the wire; the others must queue.
        await wait_until(lambda: limiter.max_waiting > 0, seconds=30)
        release.set()
        await wait_until(lambda: refreshes() >= visitors_count, seconds=60)
        assert refreshes() == visitors_count
        assert limiter.granted - granted == visitors_count
        assert transport.peak <= capacity
    failures = [r.getMessage() for r in sdk_warnings if r.levelno >= logging.WARNING]
    assert failures == []


async def test_a_background_request_that_must_renew_first_cannot_deadlock_the_limit() -> None:
    """One slot; eight presence refreshes whose tokens are past their hard point.

    Each must renew (a slot for the auth request) before its PATCH (a slot again): a
    refresh that held its slot while waiting for the renewal would block every renewal.
    """
    async with virtual_world(lifetime=1800) as world:
        limiter = register(world.client, 1)
        assert limiter is not None
        try:
            async with AsyncExitStack() as stack:
                visitors = [
                    await stack.enter_async_context(world.visitor(key=f"u{n}")) for n in range(8)
                ]
                for visitor in visitors:
                    await visitor.join_room(ROOM_ID)
                auths = len(world.giosg.auth_requests)
                # Into every token's hard window without waking the renewal loops.
                world.clock._now += 1800 - 10
                with anyio.fail_after(10):
                    async with anyio.create_task_group() as tg:
                        for visitor in visitors:
                            tg.start_soon(visitor._require_api().refresh_presence, ROOM_ID, 60)
                assert len(world.giosg.auth_requests) == auths + 8
                assert limiter.max_in_use == 1
        finally:
            unregister(world.client, limiter)
    assert world.giosg.expired_token_requests == []


@pytest.mark.parametrize(("connections", "shards"), [(3, 1), (25, 3)])
async def test_the_pool_gates_its_own_client(
    giosg: FakeGiosg, connections: int, shards: int
) -> None:
    """A pool's own client admits at most max_connections requests into httpcore, spread
    over connection pools of at most ten connections."""
    async with VisitorPool(
        ORG_ID,
        store=MemoryStore(),
        base_url=giosg.base_url,
        max_connections=connections,
        realtime=False,
    ) as pool:
        visitor = await pool.get("alice")
        gated = visitor.http_client._transport
        assert isinstance(gated, GatedTransport)
        assert isinstance(gated._inner, ShardedTransport)
        assert len(gated._inner) == shards
        statuses: list[int] = []

        async def probe() -> None:
            statuses.append((await get_chats(giosg, visitor)).status_code)

        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                for _ in range(40):
                    tg.start_soon(probe)
        assert statuses == [200] * 40
        assert gated.gate.max_in_use <= connections
        assert gated.gate.in_use == 0
        assert gated._inner._busy == [0] * shards


async def test_catching_up_after_a_reconnect_goes_through_the_background_limit(
    giosg: FakeGiosg,
) -> None:
    """After a router restart every stream reads back what it missed: in the limit.

    Over real sockets: the socket is reset while a message stream, a membership stream
    and an online-operators stream are open; the message backfill, the membership resync
    and the operators resync after the ``Resubscribed`` markers each take a slot of the
    client's background limit, and the missed message arrives once.
    """
    async with httpx.AsyncClient() as client:
        limiter = register(client, 2)
        assert limiter is not None
        try:
            async with Visitor(
                ORG_ID,
                base_url=giosg.base_url,
                http_client=client,
                reconnect=ReconnectPolicy(first_delay=0.2, max_delay=1.0),
            ) as visitor:
                operator = await giosg.operator_online(ROOM_ID)
                chat = await visitor.start_chat(ROOM_ID)
                async with (
                    chat.messages(include_history=False) as messages,
                    chat.member_changes() as members,
                    visitor.online_operators(ROOM_ID) as operators,
                ):
                    with anyio.fail_after(10):
                        await anext(members)  # the initial list, read outside the limit
                    before = limiter.granted
                    await giosg.drop_sockets("reset")
                    await giosg.operator_says(chat.id, operator, "said while disconnected")
                    with anyio.fail_after(10):
                        received = await anext(messages)
                        while received.type != "msg":  # the operator's join comes first
                            received = await anext(messages)
                        assert received.message == "said while disconnected"
                        await anext(operators)  # the resync after the marker
                        while limiter.granted - before < 3:
                            await anext(members)
                    assert limiter.granted - before >= 3
                    assert limiter.in_use == 0
        finally:
            unregister(client, limiter)


class TestShardedTransport:
    """Small connection pools in place of one large one (httpcore checks every connection
    of a pool on every request)."""

    @staticmethod
    def _shards(sizes: list[int], release: anyio.Event, seen: list[int]) -> ShardedTransport:
        def make(connections: int) -> httpx.AsyncBaseTransport:
            shard = len(sizes)
            sizes.append(connections)

            async def handler(request: httpx.Request) -> httpx.Response:
                seen.append(shard)
                await release.wait()
                return httpx.Response(200, content=b"x" * 10)

            return httpx.MockTransport(handler)

        return ShardedTransport(make, 25, shard_size=10)

    async def test_sizes_and_least_busy_routing(self) -> None:
        """25 connections: shards of 10, 10 and 5; concurrent requests spread evenly."""
        sizes: list[int] = []
        seen: list[int] = []
        release = anyio.Event()
        sharded = self._shards(sizes, release, seen)
        assert sizes == [10, 10, 5]
        assert len(sharded) == 3
        async with httpx.AsyncClient(transport=sharded, base_url="http://x") as client:
            async with anyio.create_task_group() as tg:
                for _ in range(6):
                    tg.start_soon(client.get, "/")
                await _yield(20)
                assert sorted(seen) == [0, 0, 1, 1, 2, 2]
                release.set()
            # All bodies closed: every shard is idle, and the first one is picked again.
            seen.clear()
            await client.get("/")
            assert seen == [0]

    async def test_a_body_not_yet_closed_keeps_its_shard_busy(self) -> None:
        seen: list[int] = []

        class Body(httpx.AsyncByteStream):
            async def __aiter__(self) -> AsyncIterator[bytes]:
                yield b"x"

        def make(connections: int) -> httpx.AsyncBaseTransport:
            shard = len(made)
            made.append(connections)

            async def handler(request: httpx.Request) -> httpx.Response:
                seen.append(shard)
                return httpx.Response(200, stream=Body())

            return httpx.MockTransport(handler)

        made: list[int] = []
        sharded = ShardedTransport(make, 20, shard_size=10)
        async with httpx.AsyncClient(transport=sharded, base_url="http://x") as client:
            async with client.stream("GET", "/"):
                await client.get("/")  # the first shard still holds the open body
            await client.get("/")
        assert seen == [0, 1, 0]

    async def test_a_failed_request_frees_its_shard(self) -> None:
        calls: list[int] = []

        def make(connections: int) -> httpx.AsyncBaseTransport:
            def handler(request: httpx.Request) -> httpx.Response:
                calls.append(connections)
                raise httpx.ConnectError("refused")

            return httpx.MockTransport(handler)

        sharded = ShardedTransport(make, 20, shard_size=10)
        async with httpx.AsyncClient(transport=sharded, base_url="http://x") as client:
            for _ in range(3):
                with pytest.raises(httpx.ConnectError):
                    await client.get("/")
        assert len(calls) == 3
        assert sharded._busy == [0, 0]

    def test_bad_sizes_are_refused(self) -> None:
        with pytest.raises(ValueError, match="at least 1"):
            ShardedTransport(lambda n: httpx.MockTransport(lambda r: httpx.Response(200)), 0)
