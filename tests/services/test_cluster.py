"""Cluster mode against a real redis-server and the fake Giosg (both backends).

Coordinator tests drive the Redis side directly (leases, fencing, dedupe, redelivery);
pool tests run two or three workers in one process over real sockets. The multi-process
soak with SIGKILL lives in ``tests/services/test_cluster_soak.py``.
"""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import anyio
import attrs
import pytest
import redis

from giosg_visitor import (
    Delivery,
    DeliveryLostError,
    LeaseLostError,
    Message,
    RedisCoordinator,
    RedisStore,
    VisitorPool,
)
from giosg_visitor.testing import FakeGiosg

from .._helpers import FAST_RETRY, ORG_ID, wait_until


ROOM_ID = "9926bdfa-56e0-11e5-b98c-6c4008c08dfe"


def unique_prefix() -> str:
    return f"test-cluster:{uuid.uuid4().hex[:10]}:"


def message(n: int = 0) -> Message:
    return Message(id=str(uuid.uuid4()), sender_type="user", sender_id="op", message=f"m{n}")


@asynccontextmanager
async def coordinators(
    redis_url: str, count: int, prefix: str, **options: Any
) -> AsyncIterator[list[RedisCoordinator]]:
    made = [
        RedisCoordinator(redis_url, prefix=prefix, worker_id=f"w{n}", **options)
        for n in range(count)
    ]
    try:
        yield made
    finally:
        for coordinator in made:
            await coordinator.aclose()


def raw_client(redis_url: str) -> redis.Redis:
    return redis.Redis.from_url(redis_url)


# Leases and fencing ---------------------------------------------------------------------------


async def test_concurrent_claims_have_exactly_one_winner(redis_url: str) -> None:
    """Eight workers claim the same twenty visitors at once: one lease per visitor."""
    prefix = unique_prefix()
    async with coordinators(redis_url, 8, prefix) as workers:
        keys = [f"user-{n}" for n in range(20)]
        won: dict[str, list[str]] = {key: [] for key in keys}

        async def claim(worker: RedisCoordinator, key: str) -> None:
            lease = await worker.claim(key)
            if lease is not None:
                won[key].append(lease.token)

        async with anyio.create_task_group() as tg:
            for key in keys:
                for worker in workers:
                    tg.start_soon(claim, worker, key)
        for key in keys:
            assert len(won[key]) == 1, won[key]
            assert await workers[0].holder(key) == won[key][0]


async def test_a_lease_expires_and_the_next_owner_gets_a_larger_fence(redis_url: str) -> None:
    """A holder that stops renewing loses the lease after lease_seconds, not before."""
    async with coordinators(redis_url, 2, unique_prefix(), lease_seconds=0.4) as (a, b):
        first = await a.claim("alice")
        assert first is not None
        assert await b.claim("alice") is None
        assert await a.renew([first]) == [True]
        second = None
        with anyio.fail_after(3):
            while second is None:  # the lease expires inside Redis: nothing to wait on
                await anyio.sleep(0.05)
                second = await b.claim("alice")
        assert second.fence > first.fence
        assert second.token.startswith("w1|")
        assert await a.renew([first]) == [False]


async def test_a_paused_owner_is_fenced(redis_url: str) -> None:
    """An owner that slept past its lease can neither publish, renew nor release."""
    async with coordinators(redis_url, 2, unique_prefix(), lease_seconds=1.0) as (a, b):
        await a.ensure_group()
        stale = await a.claim("alice")
        assert stale is not None
        assert await a.publish(stale, "chat-1", message(1))
        await anyio.sleep(1.2)  # "paused": the lease expires meanwhile
        fresh = await b.claim("alice")
        assert fresh is not None
        with pytest.raises(LeaseLostError, match="stale"):
            await a.publish(stale, "chat-1", message(2))
        assert await a.renew([stale]) == [False]
        assert not await a.release(stale)
        assert await b.holder("alice") == fresh.token
        assert await b.publish(fresh, "chat-1", message(3))
        client = raw_client(redis_url)
        try:
            assert client.xlen(a.redis_key("stream")) == 2
        finally:
            client.close()
        counters = await a.counters()
        assert counters["fenced"] == 1
        assert counters["published"] == 2


async def test_publish_dedupes_by_message_id_across_owners(redis_url: str) -> None:
    """A message published by an old owner is not published again by the new one."""
    async with coordinators(redis_url, 2, unique_prefix(), lease_seconds=5) as (a, b):
        await a.ensure_group()
        lease_a = await a.claim("alice")
        assert lease_a is not None
        repeated = message(1)
        assert await a.publish(lease_a, "chat-1", repeated)
        assert not await a.publish(lease_a, "chat-1", repeated)
        assert await a.release(lease_a)
        lease_b = await b.claim("alice")
        assert lease_b is not None
        assert not await b.publish(lease_b, "chat-1", repeated)
        assert await b.cursor("alice", "chat-1") == repeated.id
        entries = await b.read(count=10, block_ms=100)
        assert [entry.message.id for entry in entries] == [repeated.id]
        assert entries[0].message == attrs.evolve(repeated, chat_id="chat-1")


async def test_dedupe_is_bounded_in_size(redis_url: str) -> None:
    """The dedupe set keeps at most dedupe_max ids (the oldest go first)."""
    async with coordinators(redis_url, 1, unique_prefix(), dedupe_max=3) as (a,):
        await a.ensure_group()
        lease = await a.claim("alice")
        assert lease is not None
        sent = [message(n) for n in range(5)]
        for item in sent:
            assert await a.publish(lease, "chat-1", item)
        client = raw_client(redis_url)
        try:
            members: list[bytes] = list(client.zrange(a.redis_key("dedupe"), 0, -1))  # type: ignore[arg-type]
            kept = {member.decode() for member in members}
        finally:
            client.close()
        assert kept == {item.id for item in sent[2:]}


async def test_an_unacked_delivery_of_a_dead_worker_is_redelivered_and_acked_once(
    redis_url: str,
) -> None:
    """A consumer dies holding a delivery: another claims it; only one ack counts."""
    prefix = unique_prefix()
    async with coordinators(redis_url, 2, prefix, redeliver_after=3) as (a, b):
        await a.ensure_group()
        lease = await a.claim("alice")
        assert lease is not None
        sent = message(1)
        await a.publish(lease, "chat-1", sent)
        taken = await a.read(count=10, block_ms=100)
        assert [entry.message.id for entry in taken] == [sent.id]
        assert await b.read(count=10, block_ms=50) == []  # each entry goes to one consumer
        assert await b.autoclaim() == []  # not idle long enough yet
        await anyio.sleep(3.1)
        claimed = await b.autoclaim()
        assert [entry.message.id for entry in claimed] == [sent.id]
        assert await a.ack(taken[0].entry_id, sent.id) == -1  # the dead one woke up: refused
        assert await b.ack(claimed[0].entry_id, sent.id) == 1
        assert await b.ack(claimed[0].entry_id, sent.id) == -1
        assert await b.acked([sent.id, "other"]) == [True, False]
        counters = await b.counters()
        assert counters["acked"] == 1
        assert counters["ack_refused"] == 2


# Pools: real workers over real sockets -------------------------------------------------------


@asynccontextmanager
async def workers(
    giosg: FakeGiosg, redis_url: str, names: list[str], prefix: str, **options: Any
) -> AsyncIterator[dict[str, VisitorPool]]:
    store = RedisStore(redis_url, prefix=prefix)
    async with AsyncExitStack() as stack:
        stack.push_async_callback(store.aclose)
        pools: dict[str, VisitorPool] = {}
        for name in names:
            pools[name] = await stack.enter_async_context(
                cluster_pool(giosg, redis_url, name, prefix, store, **options)
            )
        yield pools


def cluster_pool(
    giosg: FakeGiosg,
    redis_url: str,
    name: str,
    prefix: str,
    store: RedisStore,
    **options: Any,
) -> VisitorPool:
    coordinator = RedisCoordinator(redis_url, prefix=prefix, worker_id=name, **options)
    return VisitorPool(
        ORG_ID,
        store=store,
        base_url=giosg.base_url,
        coordinator=coordinator,
        retry=FAST_RETRY,
    )


def owners(pools: dict[str, VisitorPool]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for name, pool in pools.items():
        assert pool._cluster is not None
        for key in pool._cluster.owned_keys():
            found.setdefault(key, []).append(name)
    return found


def sockets(giosg: FakeGiosg, visitor_id: str) -> int:
    return giosg.router.subscriber_count(f"/api/v5/public/visitors/{visitor_id}/chats")


async def collect(
    pools: list[VisitorPool], want: set[str], got: list[Delivery], *, seconds: float = 15
) -> None:
    """Consume every pool's ``inbound()`` and ack until each id in ``want`` was acked."""

    async def consume(pool: VisitorPool, scope: anyio.CancelScope) -> None:
        async with pool.inbound() as deliveries:
            async for delivery in deliveries:
                await delivery.ack()
                got.append(delivery)
                if want <= {d.message.id for d in got}:
                    scope.cancel()

    with anyio.move_on_after(seconds):
        async with anyio.create_task_group() as tg:
            for pool in pools:
                tg.start_soon(consume, pool, tg.cancel_scope)


async def test_each_active_visitor_has_one_owner_and_each_message_is_acked_once(
    giosg: FakeGiosg, redis_url: str
) -> None:
    """Three workers, six visitors: one socket each, every operator message acked once."""
    prefix = unique_prefix()
    async with workers(giosg, redis_url, ["a", "b", "c"], prefix, lease_seconds=2) as pools:
        chats = {}
        visitor_ids = {}
        for n in range(6):
            # Any worker serves REST: start each chat on a different one.
            async with pools["abc"[n % 3]].visitor(f"user-{n}") as visitor:
                chats[f"user-{n}"] = (await visitor.start_chat(ROOM_ID)).id
                visitor_ids[f"user-{n}"] = visitor.visitor_id
        await wait_until(lambda: len(owners(pools)) == 6)
        assert all(len(names) == 1 for names in owners(pools).values())
        assert len({names[0] for names in owners(pools).values()}) > 1  # spread out
        operator = await giosg.operator_online(ROOM_ID, organization_id=ORG_ID)
        await anyio.sleep(0.5)  # owners subscribe
        sent = set()
        for key, chat_id in chats.items():
            for n in range(3):
                sent.add((await giosg.operator_says(chat_id, operator, f"{key}-{n}"))["id"])
        got: list[Delivery] = []
        await collect(list(pools.values()), sent, got)
        acked = [d.message.id for d in got if d.message.message is not None]
        assert sorted(acked) == sorted(sent)  # each exactly once, across three consumers
        assert {d.key for d in got} == set(chats)
        assert all(d.chat_id == chats[d.key] for d in got)
        for key, visitor_id in visitor_ids.items():
            assert sockets(giosg, visitor_id) == 1, key
        stats = [pool.stats().cluster for pool in pools.values()]
        assert sum(s.owned for s in stats if s is not None) == 6
        assert sum(s.acked for s in stats if s is not None) == len(got)


async def test_a_clean_exit_hands_visitors_over_at_once(giosg: FakeGiosg, redis_url: str) -> None:
    """The owner leaves its `async with`: the other worker owns within a fraction of a lease."""
    prefix = unique_prefix()
    store = RedisStore(redis_url, prefix=prefix)
    lease = 10.0  # expiry would take 10 s; a hand-over must take well under half
    async with (
        cluster_pool(giosg, redis_url, "stay", prefix, store, lease_seconds=lease) as stay,
        AsyncExitStack() as leaving_stack,
    ):
        leave = await leaving_stack.enter_async_context(
            cluster_pool(giosg, redis_url, "leave", prefix, store, lease_seconds=lease)
        )
        pools = {"stay": stay, "leave": leave}
        keys = [f"user-{n}" for n in range(8)]
        chats = {}
        for key in keys:
            async with stay.visitor(key) as visitor:
                chats[key] = (await visitor.start_chat(ROOM_ID)).id
        await wait_until(lambda: len(owners(pools)) == len(keys))
        moving = [k for k, names in owners(pools).items() if names == ["leave"]]
        assert moving, "rendezvous hashing gave the leaving worker nothing"
        started = anyio.current_time()
        await leaving_stack.aclose()
        await wait_until(lambda: len(owners({"stay": stay})) == len(keys), seconds=lease)
        took = anyio.current_time() - started
        assert took < lease / 2, took
        assert stay.stats().cluster is not None
        operator = await giosg.operator_online(ROOM_ID, organization_id=ORG_ID)
        await anyio.sleep(0.5)
        sent = {(await giosg.operator_says(chats[k], operator, "after"))["id"] for k in moving}
        got: list[Delivery] = []
        await collect([stay], sent, got)
        assert sent <= {d.message.id for d in got}
        counters = await stay._require_cluster().coordinator.counters()
        assert counters["leases_handed_over"] >= len(moving)
    await store.aclose()


async def test_a_fenced_owner_drops_the_visitor_and_publishes_nothing(
    giosg: FakeGiosg, redis_url: str
) -> None:
    """Another holder took the lease (the owner was paused): the owner stops publishing."""
    prefix = unique_prefix()
    async with workers(giosg, redis_url, ["a"], prefix, lease_seconds=3) as pools:
        pool = pools["a"]
        async with pool.visitor("alice") as visitor:
            chat = await visitor.start_chat(ROOM_ID)
        await wait_until(lambda: owners(pools) == {"alice": ["a"]})
        # Simulate the pause: the lease vanished and an outsider took it over.
        thief = RedisCoordinator(redis_url, prefix=prefix, worker_id="thief", lease_seconds=60)
        try:
            client = raw_client(redis_url)
            client.delete(thief.redis_key("lease", "alice"))
            client.close()
            stolen = await thief.claim("alice")
            assert stolen is not None
            operator = await giosg.operator_online(ROOM_ID, organization_id=ORG_ID)
            said = await giosg.operator_says(chat.id, operator, "only the new owner may publish")
            await wait_until(lambda: owners(pools) == {}, seconds=5)
            stats = pool.stats().cluster
            assert stats is not None
            assert stats.leases_lost == 1
            await thief.ensure_group()
            published = await thief.read(count=100, block_ms=200)
            assert said["id"] not in {entry.message.id for entry in published}
            assert await thief.holder("alice") == stolen.token
        finally:
            await thief.aclose()


async def test_a_delivery_left_by_a_leaving_consumer_goes_to_another(
    giosg: FakeGiosg, redis_url: str
) -> None:
    """A consumer stops without acking: another worker gets it (redelivered), acks it once;
    the first consumer's late ack is refused."""
    prefix = unique_prefix()
    async with workers(
        giosg, redis_url, ["a", "b"], prefix, lease_seconds=2, redeliver_after=1
    ) as pools:
        async with pools["a"].visitor("alice") as visitor:
            chat = await visitor.start_chat(ROOM_ID)
        await wait_until(lambda: "alice" in owners(pools))
        operator = await giosg.operator_online(ROOM_ID, organization_id=ORG_ID)
        await anyio.sleep(0.5)
        said = await giosg.operator_says(chat.id, operator, "hello")
        first: Delivery | None = None
        with anyio.fail_after(10):
            async with pools["a"].inbound() as deliveries:
                async for delivery in deliveries:
                    if delivery.message.id == said["id"]:
                        first = delivery
                        break
                    await delivery.ack()
        assert first is not None
        assert not first.redelivered
        got: list[Delivery] = []
        await collect([pools["b"]], {said["id"]}, got, seconds=10)
        again = [d for d in got if d.message.id == said["id"]]
        assert len(again) == 1
        assert again[0].redelivered
        with pytest.raises(DeliveryLostError):
            await first.ack()
        stats_b = pools["b"].stats().cluster
        assert stats_b is not None
        assert stats_b.redelivered >= 1


async def test_inbound_needs_a_coordinator(giosg: FakeGiosg) -> None:
    from giosg_visitor import MemoryStore

    async with VisitorPool(ORG_ID, store=MemoryStore(), base_url=giosg.base_url) as pool:
        with pytest.raises(RuntimeError, match="coordinator"):
            pool.inbound()
        assert pool.stats().cluster is None


def test_options_are_checked(redis_url: str) -> None:
    with pytest.raises(ValueError, match="lease_seconds"):
        RedisCoordinator(redis_url, lease_seconds=0)
    with pytest.raises(ValueError, match="worker_id"):
        RedisCoordinator(redis_url, worker_id="a|b")
    with pytest.raises(TypeError):
        RedisCoordinator(42)  # type: ignore[arg-type]
    secret_url = "redis://:hunter2-canary@127.0.0.1:1/0"
    assert "hunter2" not in repr(RedisCoordinator(secret_url))


async def test_cluster_status_reads_the_state_from_redis(giosg: FakeGiosg, redis_url: str) -> None:
    """`giosg-visitor cluster-status` shows workers, owners and counters, no visitor keys."""
    prefix = unique_prefix()
    async with workers(giosg, redis_url, ["only-worker"], prefix, lease_seconds=3) as pools:
        async with pools["only-worker"].visitor("secret-user-key") as visitor:
            await visitor.start_chat(ROOM_ID)
        await wait_until(lambda: len(owners(pools)) == 1)
        command = [sys.executable, "-m", "giosg_visitor", "cluster-status"]
        command += ["--redis", redis_url, "--prefix", prefix]
        result = await anyio.run_process(command, check=True)
        text = result.stdout.decode()
        assert "workers: 1" in text
        assert "only-worker" in text
        assert "owns 1" in text
        assert "active visitors: 1 (0 without an owner right now)" in text
        assert "leases_taken=1" in text
        assert "secret-user-key" not in text
        as_json = await anyio.run_process([*command, "--json"], check=True)
        state = json.loads(as_json.stdout)
        assert state["leases"] == {"only-worker": 1}


def test_rendezvous_placement_moves_only_what_the_new_worker_wins() -> None:
    """A fifth worker joins: about a fifth of the keys move, all of them to it."""
    from giosg_visitor.cluster._placement import preferred_owner

    keys = [f"user-{n}" for n in range(2000)]
    four = [f"w{n}" for n in range(4)]
    before = {key: preferred_owner(key, four) for key in keys}
    after = {key: preferred_owner(key, [*four, "w4"]) for key in keys}
    moved = [key for key in keys if before[key] != after[key]]
    assert all(after[key] == "w4" for key in moved)
    assert 0.15 < len(moved) / len(keys) < 0.25
    # A worker leaving moves only its own keys.
    three = {key: preferred_owner(key, four[1:]) for key in keys}
    assert all(three[key] == before[key] for key in keys if before[key] != "w0")
    assert preferred_owner("x", []) is None


async def test_an_idle_visitor_stops_being_active(giosg: FakeGiosg, redis_url: str) -> None:
    """Its chat ended and the idle time passed: the owner lets the socket go."""
    prefix = unique_prefix()
    async with workers(giosg, redis_url, ["a"], prefix, lease_seconds=2, idle_seconds=1) as pools:
        async with pools["a"].visitor("alice") as visitor:
            chat = await visitor.start_chat(ROOM_ID)
            visitor_id = visitor.visitor_id
        await wait_until(lambda: owners(pools) == {"alice": ["a"]})
        await wait_until(lambda: sockets(giosg, visitor_id) == 1)
        await giosg.end_chat(chat.id)
        await wait_until(lambda: owners(pools) == {}, seconds=10)
        await wait_until(lambda: sockets(giosg, visitor_id) == 0)
        coordinator = pools["a"]._require_cluster().coordinator
        assert await coordinator.active() == {}
        assert await coordinator.holder("alice") is None
        # A new chat makes it active again.
        async with pools["a"].visitor("alice") as visitor:
            await visitor.start_chat(ROOM_ID)
        await wait_until(lambda: owners(pools) == {"alice": ["a"]})


def test_the_cluster_example_relays_every_answer_once(redis_url: str) -> None:
    """examples/cluster/run.py: workers relay each bot answer once, also after a SIGTERM."""
    import subprocess
    from pathlib import Path

    url = redis_url.rsplit("/", 1)[0] + "/7"  # the example uses the default prefixes
    client = raw_client(url)
    client.flushdb()
    client.close()
    root = Path(__file__).resolve().parent.parent.parent
    command = [sys.executable, str(root / "examples" / "cluster" / "run.py"), "--redis", url]
    result = subprocess.run(
        [*command, "--workers", "2", "--users", "3"],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    assert "every answer relayed exactly once" in result.stdout
    assert result.stdout.count("1x whatsapp:") == 6


async def test_an_owner_that_cannot_renew_stops_before_its_lease_ends(
    giosg: FakeGiosg, redis_url: str
) -> None:
    """Redis unreachable for renewals: the owner drops the visitor within 2/3 of the lease."""
    from giosg_visitor import TransportError

    prefix = unique_prefix()
    lease = 9.0  # it must stop by 2/3 of it (6 s): 3 s to spare on a loaded machine
    async with workers(giosg, redis_url, ["a"], prefix, lease_seconds=lease) as pools:
        async with pools["a"].visitor("alice") as visitor:
            await visitor.start_chat(ROOM_ID)
            visitor_id = visitor.visitor_id
        await wait_until(lambda: owners(pools) == {"alice": ["a"]})
        await wait_until(lambda: sockets(giosg, visitor_id) == 1)
        coordinator = pools["a"]._require_cluster().coordinator
        holder = await coordinator.holder("alice")

        async def partitioned(leases: object) -> list[bool]:
            raise TransportError("Redis at redis://127.0.0.1 could not be reached (test)")

        coordinator.renew = partitioned  # type: ignore[method-assign]
        cut = anyio.current_time()
        await wait_until(lambda: owners(pools) == {}, seconds=lease)
        stopped_after = anyio.current_time() - cut
        assert stopped_after < lease
        # It stopped while its lease was still valid: nobody could have taken over yet.
        assert await coordinator.holder("alice") == holder, stopped_after
        stats = pools["a"].stats().cluster
        assert stats is not None
        assert stats.leases_lost == 1
        await wait_until(lambda: sockets(giosg, visitor_id) == 0)
