"""VisitorPool: many visitors in one process (both backends)."""

from __future__ import annotations

from collections import Counter

import anyio
import pytest
from sniffio import current_async_library as anyio_backend_name

from giosg_visitor import MemoryStore, SessionState
from giosg_visitor.pool import VisitorPool
from giosg_visitor.testing import FakeGiosg

from .._helpers import ORG_ID, get_chats, virtual_world, wait_until


ROOM_ID = "9926bdfa-56e0-11e5-b98c-6c4008c08dfe"


async def test_thousand_visitors_share_one_client() -> None:
    """1,000 lazily created visitors: one auth each, one shared HTTP client, bounded starts."""
    async with FakeGiosg(rooms=[ROOM_ID]) as giosg:
        giosg.inject(endpoint="auth", latency=0.01, times=10_000)
        store = MemoryStore()
        async with VisitorPool(
            ORG_ID, store=store, base_url=giosg.base_url, realtime=False, max_concurrent_starts=10
        ) as pool:
            visitors = {}

            async def open_one(n: int) -> None:
                visitors[n] = await pool.get(f"user-{n}")

            with anyio.fail_after(120):
                async with anyio.create_task_group() as tg:
                    for n in range(1000):
                        tg.start_soon(open_one, n)
            assert len(pool) == 1000
            assert len({v.visitor_id for v in visitors.values()}) == 1000
            assert len({id(v.http_client) for v in visitors.values()}) == 1
            assert all(v.state is SessionState.AUTHENTICATED for v in visitors.values())
            assert (await get_chats(giosg, visitors[999])).status_code == 200
        assert len(giosg.auth_requests) == 1000
        assert giosg.state.max_auth_in_flight <= 10
        assert len(store) == 1000
        assert all(v.state is SessionState.CLOSED for v in visitors.values())


async def test_concurrent_gets_of_one_key_share_one_visitor(giosg: FakeGiosg) -> None:
    """Fifty concurrent gets for one key create exactly one visitor."""
    giosg.inject(endpoint="auth", latency=0.2)
    async with VisitorPool(ORG_ID, store=MemoryStore(), base_url=giosg.base_url) as pool:
        seen = []

        async def get() -> None:
            seen.append(await pool.get("alice"))

        async with anyio.create_task_group() as tg:
            for _ in range(50):
                tg.start_soon(get)
        assert len({id(v) for v in seen}) == 1
    assert len(giosg.auth_requests) == 1


async def test_restart_resumes_the_same_visitors(giosg: FakeGiosg) -> None:
    """A new pool on the same store resumes every visitor: no new visitor is created."""
    store = MemoryStore()
    ids: dict[str, str] = {}
    for _ in range(2):
        async with VisitorPool(ORG_ID, store=store, base_url=giosg.base_url) as pool:
            for key in ("a", "b", "c"):
                visitor = await pool.get(key)
                assert ids.setdefault(key, visitor.visitor_id) == visitor.visitor_id
    assert len(giosg.state.visitors) == 3


async def test_idle_visitors_are_closed_and_resumed_on_demand() -> None:
    """Unused visitors close after idle_timeout; the next get resumes with the stored token."""
    async with virtual_world() as world:
        async with VisitorPool(
            ORG_ID,
            store=MemoryStore(),
            base_url=world.giosg.base_url,
            http_client=world.client,
            clock=world.clock,
            idle_timeout=60,
            realtime=False,
        ) as pool:
            first = await pool.get("alice")
            async with pool.visitor("bob"):
                await world.clock.advance(100)
                assert "bob" in pool  # in use: never reaped
            assert "alice" not in pool
            assert first.state is SessionState.CLOSED
            again = await pool.get("alice")
            assert again is not first
            assert again.visitor_id == first.visitor_id
            assert pool.closed_idle == 1
        assert len(world.giosg.auth_requests) == 2  # alice's stored token was reused


async def test_pooled_visitors_with_sockets_reconnect_after_a_server_drop(giosg: FakeGiosg) -> None:
    """Twenty pooled visitors with sockets all come back after every socket is dropped."""
    async with VisitorPool(ORG_ID, store=MemoryStore(), base_url=giosg.base_url) as pool:
        visitors = [await pool.get(f"u{n}") for n in range(20)]
        await wait_until(lambda: giosg.router.handshakes >= 20)
        assert giosg.router.handshakes == 20
        await giosg.drop_sockets("reset")
        await wait_until(lambda: giosg.router.handshakes >= 40, seconds=20)
        chat = await visitors[7].start_chat(ROOM_ID)
        await chat.send("still here")


async def test_misuse_is_reported() -> None:
    """Using a pool before entering it, or passing options it owns, raises clearly."""
    pool = VisitorPool(ORG_ID, store=MemoryStore())
    with pytest.raises(RuntimeError):
        await pool.get("x")
    with pytest.raises(TypeError):
        VisitorPool(ORG_ID, store=MemoryStore(), key="k")  # type: ignore[call-arg]
    with pytest.raises(ValueError):
        VisitorPool(ORG_ID, store=MemoryStore(), idle_timeout=0)


async def test_a_connected_pooled_visitor_runs_two_tasks(giosg: FakeGiosg) -> None:
    """Idle pooled visitors: the visitor's host and its socket's read loop, nothing more.

    The keepalive pings and the token renewals of every visitor run as calls on the
    event loop's one timer task. (On trio, websockets runs a reader task of its own per
    socket.)
    """
    async with VisitorPool(ORG_ID, store=MemoryStore(), base_url=giosg.base_url) as pool:
        before = Counter(str(task.name) for task in anyio.get_running_tasks())
        for n in range(10):
            await pool.get(f"u{n}")
        await wait_until(lambda: giosg.router.handshakes >= 10)
        await anyio.sleep(0.2)  # let every start-up read finish
        added = Counter(str(task.name) for task in anyio.get_running_tasks()) - before
        timer_tasks = added.pop("giosg_visitor._timers.Timers._run_until_idle", 0)
        assert timer_tasks == 1, added  # one for all ten
        ours = {name: count for name, count in added.items() if name.startswith("giosg_visitor")}
        assert sum(ours.values()) == 20, ours
        assert sum(added.values()) == (30 if anyio_backend_name() == "trio" else 20), added
