"""SQLiteStore: private database, leases that survive crashed holders, closing."""

from __future__ import annotations

import os
import sqlite3
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from giosg_visitor import Secret
from giosg_visitor.errors import ProtocolError
from giosg_visitor.stores import SQLiteStore, VisitorRecord
from giosg_visitor.stores.file import FilePermissionWarning


SECRET = "canary-visitor-secret-0123456789"


def record(secret: str = SECRET, version: int = 1) -> VisitorRecord:
    return VisitorRecord(visitor_secret_id=Secret(secret), version=version)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def execute(path: Path, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    """Run one statement on a separate connection, as another process would."""
    with sqlite3.connect(path, isolation_level=None) as conn:
        rows = conn.execute(sql, params).fetchall()
    conn.close()
    return rows


async def entered_within(store: SQLiteStore, key: str, seconds: float) -> bool:
    """Whether lock(key) of ``store`` can be entered within ``seconds``."""
    with anyio.move_on_after(seconds):
        async with store.lock(key):
            return True
    return False


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "visitors.sqlite3"


class TestFile:
    @pytest.mark.parametrize("umask", [0o000, 0o077], ids=["000", "077"])
    async def test_database_is_private(self, tmp_path: Path, umask: int) -> None:
        """The database and its WAL files are 0600, a new folder 0700, under any umask."""
        path = tmp_path / "new" / "visitors.sqlite3"
        old_umask = os.umask(umask)
        try:
            async with SQLiteStore(path) as store:
                await store.save("k", record())
                wal_files = [Path(f"{path}-wal"), Path(f"{path}-shm")]
                assert all(wal.exists() for wal in wal_files)
                assert [mode(wal) for wal in wal_files] == [0o600, 0o600]
        finally:
            os.umask(old_umask)
        assert mode(path) == 0o600
        assert mode(path.parent) == 0o700

    async def test_schema_and_journal(self, path: Path) -> None:
        """Tables records(key, data, updated_at) and locks(key, owner, expires_at), in WAL mode."""
        async with SQLiteStore(path) as store:
            before = time.time()
            await store.save("k", record())
            columns = {
                table: [row[1] for row in execute(path, f"PRAGMA table_info({table})")]
                for table in ("records", "locks")
            }
            assert columns == {
                "records": ["key", "data", "updated_at"],
                "locks": ["key", "owner", "expires_at"],
            }
            assert execute(path, "PRAGMA journal_mode") == [("wal",)]
            ((key, data, updated_at),) = execute(path, "SELECT * FROM records")
            assert (key, VisitorRecord.loads(data)) == ("k", record())
            assert before <= updated_at <= time.time()

    async def test_loose_file_is_tightened_with_a_warning(self, path: Path) -> None:
        """An existing database other users can read becomes 0600, with a warning."""
        async with SQLiteStore(path) as store:
            await store.save("k", record())
        await anyio.Path(path).chmod(0o644)
        async with SQLiteStore(path) as store:
            with pytest.warns(FilePermissionWarning, match="0o644") as caught:
                assert await store.load("k") == record()
            assert caught[0].filename == __file__
            assert await store.load("k") == record()
        assert mode(path) == 0o600

    async def test_symlink_is_refused(self, tmp_path: Path, path: Path) -> None:
        """A symlink at the database path is refused."""
        await anyio.Path(path).symlink_to(tmp_path / "elsewhere.sqlite3")
        async with SQLiteStore(path) as store:
            with pytest.raises(OSError, match="symlink"):
                await store.load("k")
        assert not (tmp_path / "elsewhere.sqlite3").exists()

    async def test_not_a_database_is_a_protocol_error(self, path: Path) -> None:
        """A file that is not SQLite raises ProtocolError naming it, and is not rewritten."""
        content = f"not a database {SECRET}".encode() * 200
        await anyio.Path(path).write_bytes(content)
        await anyio.Path(path).chmod(0o600)
        async with SQLiteStore(path) as store:
            for _ in range(2):
                with pytest.raises(ProtocolError, match="not a valid database") as caught:
                    await store.save("k", record())
                assert str(path) in str(caught.value)
                assert SECRET not in str(caught.value)
        assert await anyio.Path(path).read_bytes() == content

    async def test_malformed_row_is_a_protocol_error(self, path: Path) -> None:
        """A row that is not a record raises ProtocolError without quoting the row."""
        async with SQLiteStore(path) as store:
            await store.save("good", record())
            execute(path, "INSERT INTO records VALUES ('bad', ?, 0)", f"{{{SECRET}")
            with pytest.raises(ProtocolError, match="stored record") as caught:
                await store.load("bad")
            assert str(path) in str(caught.value)
            assert SECRET not in str(caught.value)
            assert await store.load("good") == record()

    async def test_connects_in_a_worker_thread(
        self, path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The connection is opened (and so used) off the event loop thread."""
        loop_thread = threading.get_ident()
        threads: list[int] = []
        real_connect: Callable[..., sqlite3.Connection] = sqlite3.connect

        def connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
            threads.append(threading.get_ident())
            return real_connect(*args, **kwargs)

        monkeypatch.setattr("giosg_visitor.stores.sqlite.sqlite3.connect", connect)
        async with SQLiteStore(path) as store:
            await store.save("k", record())
        assert len(threads) == 1
        assert threads[0] != loop_thread


class TestLifecycle:
    async def test_closed_store_refuses_use(self, path: Path) -> None:
        """After aclose every operation raises RuntimeError; closing again is fine."""
        store = SQLiteStore(path)
        await store.save("k", record())
        await store.aclose()
        await store.aclose()
        store.close()
        with pytest.raises(RuntimeError, match="closed"):
            await store.load("k")
        with pytest.raises(RuntimeError, match="closed"):
            async with store:
                pass
        with pytest.raises(RuntimeError, match="closed"):
            async with store.lock("k"):
                pass
        async with SQLiteStore(path) as reopened:
            assert await reopened.load("k") == record()

    async def test_closing_releases_held_leases(self, path: Path) -> None:
        """aclose deletes the leases the store holds so other processes need not wait."""
        holder, other = SQLiteStore(path), SQLiteStore(path)
        async with holder.lock("k"):
            assert not await entered_within(other, "k", 0.1)
            await holder.aclose()
            assert await entered_within(other, "k", 2)
        await other.aclose()

    @pytest.mark.parametrize(
        "options",
        [
            {"lease_seconds": 0},
            {"lease_seconds": -1},
            {"lease_seconds": float("nan")},
            {"lease_seconds": float("inf")},
            {"busy_timeout": 0},
        ],
        ids=["zero", "negative", "nan", "inf", "busy-zero"],
    )
    def test_options_are_checked(self, path: Path, options: dict[str, float]) -> None:
        """Leases and timeouts must be positive, finite numbers of seconds."""
        with pytest.raises(ValueError, match="positive"):
            SQLiteStore(path, **options)

    def test_repr_shows_the_path_only(self, path: Path) -> None:
        """repr names the file and nothing else."""
        assert repr(SQLiteStore(path)) == f"<SQLiteStore path={str(path)!r}>"
        assert SQLiteStore(path, lease_seconds=2).lease_seconds == 2.0


class TestLease:
    async def test_expired_lease_of_a_crashed_holder_is_taken_over(self, path: Path) -> None:
        """A lease row left by a dead process is taken once it has expired."""
        async with SQLiteStore(path) as store:
            await store.save("k", record())  # creates the schema
            execute(path, "INSERT INTO locks VALUES ('k', 'dead-process', ?)", time.time() - 1)
            assert await entered_within(store, "k", 2)
            assert execute(path, "SELECT * FROM locks") == []

    async def test_live_lease_keeps_others_out_until_it_expires(self, path: Path) -> None:
        """A lease that has not expired blocks lock(key) until its expiry time passes."""
        async with SQLiteStore(path) as store:
            await store.save("k", record())
            expires = time.time() + 0.4
            execute(path, "INSERT INTO locks VALUES ('k', 'other-process', ?)", expires)
            assert not await entered_within(store, "k", 0.2)
            with anyio.fail_after(3):
                async with store.lock("k"):
                    assert time.time() >= expires

    async def test_holder_past_its_lease_does_not_release_its_successor(self, path: Path) -> None:
        """A holder that overstays its lease loses it, and its exit leaves the new lease alone."""
        slow, successor, third = (
            SQLiteStore(path, lease_seconds=0.2),
            SQLiteStore(path),
            SQLiteStore(path),
        )
        successor_in, slow_out = anyio.Event(), anyio.Event()

        async def take_over() -> None:
            async with successor.lock("k"):
                successor_in.set()
                await slow_out.wait()
                assert not await entered_within(third, "k", 0.2)

        async with anyio.create_task_group() as tg:
            async with slow.lock("k"):
                tg.start_soon(take_over)
                with anyio.fail_after(3):
                    await successor_in.wait()
            slow_out.set()
        assert await entered_within(third, "k", 2)
        for store in (slow, successor, third):
            await store.aclose()

    async def test_lease_row_is_owned_and_removed(self, path: Path) -> None:
        """While held, the lease row names a unique owner and expires lease_seconds ahead."""
        async with SQLiteStore(path, lease_seconds=12) as store:
            async with store.lock("visitor/ü:1"):
                ((key, owner, expires_at),) = execute(path, "SELECT * FROM locks")
                assert key == "visitor/ü:1"
                assert owner.startswith(f"{os.getpid()}-")
                assert 11 < expires_at - time.time() <= 12
            assert execute(path, "SELECT * FROM locks") == []


def test_initialisation_retries_a_locked_database(tmp_path: Path) -> None:
    """A "database is locked" while another process switches to WAL is retried, not raised."""

    class Flaky:
        def __init__(self) -> None:
            self.calls = 0
            self.real = sqlite3.connect(":memory:")

        def execute(self, sql: str) -> sqlite3.Cursor:
            self.calls += 1
            if self.calls <= 2:
                raise sqlite3.OperationalError("database is locked")
            return self.real.execute(sql)

    store = SQLiteStore(tmp_path / "v.db")
    flaky = Flaky()
    store._initialise(flaky)  # type: ignore[arg-type]
    assert flaky.calls > 2
    flaky.real.close()
