"""RedisStore against a real redis-server: the Store contract, leases, errors, reprs."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import anyio
import anyio.to_thread
import pytest
import redis
import redis.asyncio

from giosg_visitor import Secret
from giosg_visitor.errors import (
    ProtocolError,
    StoreConnectionError,
    StoreCorruptError,
    StoreTimeoutError,
    StoreUnavailableError,
    TransportError,
    TransportTimeoutError,
)
from giosg_visitor.stores import RedisStore, Store, VisitorRecord
from giosg_visitor.testing import check_store

from .._store_faults import redis_refusing_writes


SECRET = "canary-visitor-secret-0123456789"
PASSWORD = "hunter2-canary-password"


def record(secret: str = SECRET, version: int = 1) -> VisitorRecord:
    return VisitorRecord(visitor_secret_id=Secret(secret), version=version)


def unique_prefix() -> str:
    return f"test-giosg:{uuid.uuid4().hex}:"


async def entered_within(store: RedisStore, key: str, seconds: float) -> bool:
    """Whether lock(key) of ``store`` can be entered within ``seconds``."""
    with anyio.move_on_after(seconds):
        async with store.lock(key):
            return True
    return False


class Raw:
    """Direct access to the server, as another process would have (runs in threads)."""

    def __init__(self, url: str) -> None:
        self.client = redis.Redis.from_url(url)
        self._execute: Callable[..., Any] = self.client.execute_command

    async def __call__(self, *command: Any) -> Any:
        return await anyio.to_thread.run_sync(lambda: self._execute(*command))


@pytest.fixture
def raw(redis_url: str) -> Iterator[Raw]:
    raw = Raw(redis_url)
    yield raw
    raw.client.close()


@pytest.fixture
async def store(redis_url: str) -> AsyncIterator[RedisStore]:
    async with RedisStore(redis_url, prefix=unique_prefix()) as store:
        yield store


@pytest.fixture
def dead_port() -> Iterator[int]:
    """A local port where nothing listens (kept bound, never listening, so it stays dead)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


class TestContract:
    async def test_url_store_passes_check_store(self, store: RedisStore) -> None:
        """A store made from a URL keeps the Store contract (redis.asyncio or threads)."""
        assert isinstance(store, Store)
        await check_store(store)

    @pytest.mark.parametrize("decode", [False, True], ids=["bytes", "decode_responses"])
    async def test_sync_client_passes_check_store(self, redis_url: str, decode: bool) -> None:
        """A caller's redis.Redis client keeps the contract on both backends (threads)."""
        client = redis.Redis.from_url(redis_url, decode_responses=decode)
        async with RedisStore(client, prefix=unique_prefix()) as store:
            await check_store(store)
        assert client.ping()  # the caller's client is left open
        client.close()

    @pytest.mark.single_backend(reason="redis.asyncio clients run on asyncio only")
    @pytest.mark.parametrize("anyio_backend", ["asyncio"])
    async def test_asyncio_client_passes_check_store(self, redis_url: str) -> None:
        """A caller's redis.asyncio.Redis client keeps the contract on asyncio."""
        client = redis.asyncio.Redis.from_url(redis_url)
        async with RedisStore(client, prefix=unique_prefix()) as store:
            await check_store(store)
        assert await client.ping()  # the caller's client is left open
        await client.aclose()

    @pytest.mark.single_backend(reason="checks the refusal that only trio triggers")
    @pytest.mark.parametrize("anyio_backend", ["trio"])
    async def test_asyncio_client_is_refused_on_trio(self, redis_url: str) -> None:
        """redis.asyncio cannot run on trio: a clear RuntimeError says what to pass instead."""
        client = redis.asyncio.Redis.from_url(redis_url)
        async with RedisStore(client) as store:
            with pytest.raises(RuntimeError, match=r"asyncio only.*redis\.Redis client"):
                await store.load("k")

    async def test_record_is_json_under_the_prefixed_key(self, store: RedisStore, raw: Raw) -> None:
        """save writes dumps() JSON to <prefix>record:<key>; delete removes it."""
        await store.save("visitor/ü:1", record())
        assert store.record_key("visitor/ü:1") == f"{store.prefix}record:visitor/ü:1"
        stored = await raw("GET", store.record_key("visitor/ü:1"))
        assert VisitorRecord.loads(stored) == record()
        assert json.loads(stored) == json.loads(record().dumps())
        await store.delete("visitor/ü:1")
        assert await raw("EXISTS", store.record_key("visitor/ü:1")) == 0

    async def test_prefixes_keep_stores_apart(self, redis_url: str) -> None:
        """Two prefixes on one server are two separate stores, records and locks alike."""
        async with (
            RedisStore(redis_url, prefix=unique_prefix()) as one,
            RedisStore(redis_url, prefix=unique_prefix()) as two,
        ):
            await one.save("k", record())
            assert await two.load("k") is None
            async with one.lock("k"):
                assert await entered_within(two, "k", 1)


class TestLease:
    async def test_lease_key_holds_a_token_with_an_expiry(self, redis_url: str, raw: Raw) -> None:
        """While held, <prefix>lock:<key> names this process and expires lease_seconds ahead."""
        async with RedisStore(redis_url, prefix=unique_prefix(), lease_seconds=12) as store:
            lock_key = store.lock_key("k")
            async with store.lock("k"):
                token = (await raw("GET", lock_key)).decode()
                assert token.startswith(f"{os.getpid()}-")
                assert 11_000 < await raw("PTTL", lock_key) <= 12_000
            assert await raw("EXISTS", lock_key) == 0

    async def test_lease_of_a_crashed_holder_expires(self, store: RedisStore, raw: Raw) -> None:
        """A lease left by a dead process keeps others out until Redis expires it."""
        await raw("SET", store.lock_key("k"), "dead-process", "PX", 400)
        assert not await entered_within(store, "k", 0.2)
        assert await entered_within(store, "k", 3)

    async def test_killed_holder_process_is_taken_over(self, redis_url: str) -> None:
        """A process killed inside lock(key) blocks others only until its lease expires."""
        prefix = unique_prefix()
        script = (
            "import sys, anyio\n"
            "from giosg_visitor.stores import RedisStore\n"
            "async def main():\n"
            "    store = RedisStore(sys.argv[1], prefix=sys.argv[2], lease_seconds=0.5)\n"
            "    async with store.lock('k'):\n"
            "        print('held', flush=True)\n"
            "        await anyio.sleep_forever()\n"
            "anyio.run(main)\n"
        )
        async with RedisStore(redis_url, prefix=prefix) as survivor:
            async with await anyio.open_process(
                [sys.executable, "-c", script, redis_url, prefix], stderr=None
            ) as child:
                assert child.stdout is not None
                with anyio.fail_after(30):
                    assert (await child.stdout.receive()).startswith(b"held")
                assert not await entered_within(survivor, "k", 0.1)
                child.kill()
                await child.wait()
            assert await entered_within(survivor, "k", 3)

    async def test_release_deletes_only_its_own_lease(self, store: RedisStore, raw: Raw) -> None:
        """A holder whose lease was taken over leaves the new holder's lease in place."""
        lock_key = store.lock_key("k")
        async with store.lock("k"):
            # As if our lease expired and another process took the key meanwhile.
            await raw("SET", lock_key, "other-process", "PX", 10_000)
        assert await raw("GET", lock_key) == b"other-process"
        assert not await entered_within(store, "k", 0.1)

    async def test_holder_past_its_lease_does_not_release_its_successor(
        self, redis_url: str
    ) -> None:
        """A holder that overstays its lease loses it; its exit leaves the successor alone."""
        prefix = unique_prefix()
        slow = RedisStore(redis_url, prefix=prefix, lease_seconds=0.2)
        successor, third = (
            RedisStore(redis_url, prefix=prefix),
            RedisStore(redis_url, prefix=prefix),
        )
        successor_in, slow_out = anyio.Event(), anyio.Event()
        third_entered_early = True

        async def take_over() -> None:
            nonlocal third_entered_early
            async with successor.lock("k"):
                successor_in.set()
                await slow_out.wait()
                third_entered_early = await entered_within(third, "k", 0.2)

        async with anyio.create_task_group() as tg:
            async with slow.lock("k"):
                tg.start_soon(take_over)
                with anyio.fail_after(3):
                    await successor_in.wait()
            slow_out.set()
        assert not third_entered_early
        assert await entered_within(third, "k", 2)
        for each in (slow, successor, third):
            await each.aclose()

    async def test_closing_releases_held_leases(self, redis_url: str, raw: Raw) -> None:
        """aclose deletes the leases the store holds so other processes need not wait."""
        prefix = unique_prefix()
        holder, other = RedisStore(redis_url, prefix=prefix), RedisStore(redis_url, prefix=prefix)
        async with holder.lock("k"):
            assert not await entered_within(other, "k", 0.1)
            await holder.aclose()
            assert await raw("EXISTS", holder.lock_key("k")) == 0
            assert await entered_within(other, "k", 2)
        await other.aclose()


class TestErrors:
    async def test_unreachable_server_is_a_transport_error(self, dead_port: int) -> None:
        """Connection refused on load, save, delete and lock raises TransportError."""
        url = f"redis://:{PASSWORD}@127.0.0.1:{dead_port}/0"
        async with RedisStore(url) as store:
            operations: list[Callable[[], Awaitable[object]]] = [
                lambda: store.load("k"),
                lambda: store.save("k", record()),
                lambda: store.delete("k"),
            ]
            for operation in operations:
                with pytest.raises(TransportError, match="could not be reached") as caught:
                    await operation()
                assert not isinstance(caught.value, TransportTimeoutError)
                assert isinstance(caught.value.__cause__, redis.ConnectionError)
                assert PASSWORD not in str(caught.value)
            with pytest.raises(TransportError, match=f"127.0.0.1:{dead_port}/0"):
                async with store.lock("k"):
                    pass

    async def test_errors_are_store_errors(self, dead_port: int, redis_url: str) -> None:
        """Unreachable, silent, refusing and wrong-type Redis each raise their StoreError."""
        async with RedisStore(f"redis://:{PASSWORD}@127.0.0.1:{dead_port}/0") as down:
            with pytest.raises(StoreConnectionError) as caught:
                await down.save("k", record())
            assert isinstance(caught.value, StoreUnavailableError)
            assert SECRET not in str(caught.value)
            assert PASSWORD not in str(caught.value)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
            listener.bind(("127.0.0.1", 0))
            listener.listen(8)
            port = listener.getsockname()[1]
            async with RedisStore(f"redis://127.0.0.1:{port}/0", socket_timeout=0.2) as silent:
                with pytest.raises(StoreTimeoutError):
                    await silent.load("k")
        async with RedisStore(redis_url, prefix=unique_prefix()) as store:
            await store.save("k", record())
            async with redis_refusing_writes(redis_url):
                with pytest.raises(StoreUnavailableError, match="NOREPLICAS") as refused:
                    await store.save("k", record("new-canary-secret-987654321"))
                assert "new-canary-secret" not in str(refused.value)
                assert await store.load("k") == record()  # reads go on
            await Raw(redis_url)("HSET", store.record_key("h"), "field", "value")
            with pytest.raises(StoreCorruptError, match="WRONGTYPE"):
                await store.load("h")

    def test_echoed_command_arguments_are_not_kept(self) -> None:
        """Redis quotes the arguments of an unknown command; a record's secrets must not."""
        store = RedisStore("redis://127.0.0.1:6379/0")
        echoed = (
            "ERR unknown command 'SET', with args beginning with: 'giosg_visitor:record:k' "
            f'\'{{"visitor_secret_id":"{SECRET}"\''
        )
        error = store._reply_error(redis.exceptions.ResponseError(echoed))
        assert "unknown command 'SET'" in str(error)
        assert SECRET not in str(error)

    async def test_outage_passes_check_store(self, redis_url: str) -> None:
        """check_store's outage check: a Redis refusing writes raises StoreUnavailableError."""
        async with RedisStore(redis_url, prefix=unique_prefix()) as store:
            await check_store(store, outage=lambda: redis_refusing_writes(redis_url))

    async def test_silent_server_is_a_transport_timeout(self) -> None:
        """A server that accepts but never answers raises TransportTimeoutError."""
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
            listener.bind(("127.0.0.1", 0))
            listener.listen(8)
            port = listener.getsockname()[1]
            async with RedisStore(f"redis://127.0.0.1:{port}/0", socket_timeout=0.2) as store:
                with pytest.raises(TransportTimeoutError, match="timed out"):
                    await store.load("k")

    async def test_malformed_record_is_a_protocol_error(self, store: RedisStore, raw: Raw) -> None:
        """A value that is not a record raises ProtocolError without quoting it."""
        await store.save("good", record())
        await raw("SET", store.record_key("bad"), f"{{{SECRET}")
        with pytest.raises(ProtocolError, match="stored record") as caught:
            await store.load("bad")
        assert SECRET not in str(caught.value)
        assert await store.load("good") == record()

    async def test_wrong_type_is_a_protocol_error(self, store: RedisStore, raw: Raw) -> None:
        """A record key holding another Redis type raises ProtocolError (Redis's error)."""
        await raw("HSET", store.record_key("k"), "field", "value")
        with pytest.raises(ProtocolError, match="WRONGTYPE"):
            await store.load("k")

    async def test_failed_release_is_logged_not_raised(
        self, redis_url: str, raw: Raw, caplog: pytest.LogCaptureFixture
    ) -> None:
        """If the lease cannot be deleted, the block's outcome stands and a warning is logged."""
        user = f"no-eval-{uuid.uuid4().hex}"
        # A user who may take leases but not run the release script (NOPERM on EVAL).
        await raw("ACL", "SETUSER", user, "on", f">{PASSWORD}", "~*", "+@all", "-eval")
        host_port = redis_url.removeprefix("redis://")
        try:
            url = f"redis://{user}:{PASSWORD}@{host_port}"
            async with RedisStore(url, prefix=unique_prefix(), lease_seconds=5) as store:
                async with store.lock("k"):
                    pass
                assert 0 < await raw("PTTL", store.lock_key("k")) <= 5000  # expires by itself
        finally:
            await raw("ACL", "DELUSER", user)
        assert "could not release the renewal lease" in caplog.text
        assert "ProtocolError" in caplog.text
        assert PASSWORD not in caplog.text


class TestLifecycle:
    async def test_closed_store_refuses_use(self, redis_url: str) -> None:
        """After aclose every operation raises RuntimeError; closing again is fine."""
        store = RedisStore(redis_url, prefix=unique_prefix())
        await store.save("k", record())
        await store.aclose()
        await store.aclose()
        with pytest.raises(RuntimeError, match="closed"):
            await store.load("k")
        with pytest.raises(RuntimeError, match="closed"):
            await store.save("k", record())
        with pytest.raises(RuntimeError, match="closed"):
            async with store:
                pass
        with pytest.raises(RuntimeError, match="closed"):
            async with store.lock("k"):
                pass

    async def test_keys_and_records_are_checked(self, store: RedisStore) -> None:
        """Keys must be non-empty strings and records VisitorRecords."""
        with pytest.raises(ValueError, match="empty"):
            await store.load("")
        with pytest.raises(TypeError, match="str"):
            await store.delete(1)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="VisitorRecord"):
            await store.save("k", {"visitor_secret_id": SECRET})  # type: ignore[arg-type]

    @pytest.mark.parametrize(
        "options",
        [
            {"lease_seconds": 0},
            {"lease_seconds": -1},
            {"lease_seconds": float("nan")},
            {"lease_seconds": float("inf")},
            {"lease_seconds": True},
            {"socket_timeout": 0},
        ],
        ids=["zero", "negative", "nan", "inf", "bool", "timeout-zero"],
    )
    def test_options_are_checked(self, options: dict[str, Any]) -> None:
        """Leases and timeouts must be positive, finite numbers of seconds."""
        with pytest.raises(ValueError, match="positive"):
            RedisStore("redis://127.0.0.1", **options)

    def test_bad_arguments_are_refused(self) -> None:
        """A non-Redis URL is a ValueError; anything but a URL or a client is a TypeError."""
        with pytest.raises(ValueError, match="invalid Redis URL"):
            RedisStore("http://127.0.0.1:6379")
        with pytest.raises(TypeError, match="URL or a redis"):
            RedisStore(b"redis://127.0.0.1")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="prefix"):
            RedisStore("redis://127.0.0.1", prefix=None)  # type: ignore[arg-type]


class TestRepr:
    @pytest.mark.parametrize(
        ("url", "shown"),
        [
            (f"redis://alice:{PASSWORD}@redis.example:6380/2", "redis://redis.example:6380/2"),
            (f"rediss://:{PASSWORD}@redis.example", "rediss://redis.example:6379/0"),
            (f"redis://127.0.0.1?db=3&password={PASSWORD}", "redis://127.0.0.1:6379/3"),
            ("unix:///run/redis.sock?db=1", "unix:///run/redis.sock?db=1"),
        ],
        ids=["userinfo", "tls", "query-password", "unix"],
    )
    def test_repr_shows_the_server_never_the_password(self, url: str, shown: str) -> None:
        """repr and str name server, db and prefix, never the username or the password."""
        store = RedisStore(url, prefix="app:")
        assert repr(store) == f"<RedisStore {shown} prefix='app:'>"
        assert PASSWORD not in str(store)
        assert "alice" not in repr(store)

    def test_repr_of_a_client_store_hides_the_password(self) -> None:
        """A store around a caller's client shows the client's server, not its password."""
        client = redis.Redis(host="redis.example", port=6390, db=4, password=PASSWORD)
        store = RedisStore(client)
        assert repr(store) == "<RedisStore redis://redis.example:6390/4 prefix='giosg_visitor:'>"
        assert PASSWORD not in repr(store)
        client.close()

    async def test_connection_error_hides_the_password(self, dead_port: int) -> None:
        """Error messages name the server, never a password from the URL."""
        async with RedisStore(f"redis://user:{PASSWORD}@127.0.0.1:{dead_port}/5") as store:
            with pytest.raises(TransportError) as caught:
                await store.load("k")
        assert f"redis://127.0.0.1:{dead_port}/5" in str(caught.value)
        assert PASSWORD not in str(caught.value)
        assert PASSWORD not in repr(caught.value)


def test_import_works_without_redis() -> None:
    """giosg_visitor imports without redis-py; RedisStore then says how to install it."""
    script = (
        "import sys\n"
        "sys.modules['redis'] = None\n"
        "import giosg_visitor\n"
        "from giosg_visitor.stores import RedisStore\n"
        "try:\n"
        "    RedisStore('redis://127.0.0.1')\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    assert "pip install giosg-visitor[redis]" in result.stdout
