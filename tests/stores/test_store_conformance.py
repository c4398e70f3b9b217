"""The Store contract, for every built-in store: check_store, crashes, several processes."""

from __future__ import annotations

import errno
import importlib.util
import json
import os
import random
import select
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import IO, Any

import anyio
import anyio.lowlevel
import pytest
from anyio.streams.buffered import BufferedByteReceiveStream

from giosg_visitor import Secret
from giosg_visitor.errors import StoreUnavailableError
from giosg_visitor.stores import FileStore, MemoryStore, SQLiteStore, Store, VisitorRecord
from giosg_visitor.testing import check_store

from .._store_faults import immutable_folder, sqlite_held_exclusive


CHILD = Path(__file__).parent.parent / "_store_crash_child.py"
ROOT = Path(__file__).resolve().parent.parent.parent
KINDS = [pytest.param("file", id="file"), pytest.param("sqlite", id="sqlite")]


def _load_child() -> Any:
    # The helper is a script, not a package module: load it by path to share build_record.
    spec = importlib.util.spec_from_file_location("_store_crash_child", CHILD)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_CHILD = _load_child()


def build_record(seed: int, version: int) -> VisitorRecord:
    """The record the helper process saves as ``version`` (see ``_store_crash_child``)."""
    record = _CHILD.build_record(seed, version)
    assert isinstance(record, VisitorRecord)
    return record


def make_store(kind: str, path: Path, **options: Any) -> FileStore | SQLiteStore:
    if kind == "file":
        return FileStore(path)
    return SQLiteStore(path, **options)


async def close(store: object) -> None:
    if isinstance(store, SQLiteStore):
        await store.aclose()


def store_path(tmp_path: Path, kind: str) -> Path:
    return tmp_path / ("store.json" if kind == "file" else "store.sqlite3")


def child_command(mode: str, **fields: Any) -> list[str]:
    return [sys.executable, str(CHILD), json.dumps({"mode": mode, **fields})]


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


# check_store on the built-in stores. -----------------------------------------------------


@pytest.mark.parametrize("kind", [pytest.param("memory", id="memory"), *KINDS])
async def test_builtin_stores_pass_check_store(tmp_path: Path, kind: str) -> None:
    """MemoryStore, FileStore and SQLiteStore all keep the Store contract."""
    store = MemoryStore() if kind == "memory" else make_store(kind, store_path(tmp_path, kind))
    assert isinstance(store, Store)
    await check_store(store)
    await close(store)


@pytest.mark.parametrize("kind", KINDS)
async def test_builtin_stores_raise_store_errors_in_an_outage(tmp_path: Path, kind: str) -> None:
    """A real outage (SQLite held by another process, an immutable folder) is a StoreError.

    check_store's outage check: the failed save is typed, quotes no secret, and the
    record saved before it is intact afterwards.
    """
    folder = tmp_path / "store"
    folder.mkdir()
    path = store_path(folder, kind)
    store = make_store(kind, path, busy_timeout=0.2)
    errors: list[BaseException] = []

    @asynccontextmanager
    async def outage() -> AsyncIterator[None]:
        cm = sqlite_held_exclusive(path) if kind == "sqlite" else immutable_folder(folder)
        async with cm:
            yield

    class Watching:
        """The store, recording what its save raises (to check the type and cause)."""

        def __init__(self, inner: FileStore | SQLiteStore) -> None:
            self.inner = inner

        async def load(self, key: str) -> VisitorRecord | None:
            return await self.inner.load(key)

        async def save(self, key: str, record: VisitorRecord) -> None:
            try:
                await self.inner.save(key, record)
            except Exception as exc:
                errors.append(exc)
                raise

        async def delete(self, key: str) -> None:
            await self.inner.delete(key)

        def lock(self, key: str) -> Any:
            return self.inner.lock(key)

    await check_store(Watching(store), outage=outage)
    await close(store)
    assert len(errors) == 1
    assert isinstance(errors[0], StoreUnavailableError)
    assert isinstance(errors[0], OSError)  # what callers of the file stores caught before
    if kind == "sqlite":
        assert "database is locked" in str(errors[0])
        assert isinstance(errors[0].__cause__, sqlite3.OperationalError)
    else:
        assert errors[0].errno == errno.EPERM
        assert isinstance(errors[0].__cause__, PermissionError)


async def test_check_store_catches_a_store_raising_untyped_errors(tmp_path: Path) -> None:
    """A store whose save raises a bare OSError in an outage fails the outage check."""

    broken = False

    class Raw:
        def __init__(self) -> None:
            self.inner = MemoryStore()

        async def load(self, key: str) -> VisitorRecord | None:
            return await self.inner.load(key)

        async def save(self, key: str, record: VisitorRecord) -> None:
            if broken:
                raise OSError(errno.EROFS, "read-only file system")
            await self.inner.save(key, record)

        async def delete(self, key: str) -> None:
            await self.inner.delete(key)

        def lock(self, key: str) -> Any:
            return self.inner.lock(key)

    @asynccontextmanager
    async def outage() -> AsyncIterator[None]:
        nonlocal broken
        broken = True
        try:
            yield
        finally:
            broken = False

    with pytest.raises(AssertionError, match="raised OSError, not a StoreError"):
        await check_store(Raw(), outage=outage)


async def test_check_store_accepts_factories() -> None:
    """A class, a function or an async function returning a store may be passed instead."""

    async def make() -> MemoryStore:
        return MemoryStore()

    await check_store(MemoryStore)
    await check_store(lambda: MemoryStore())
    await check_store(make)


async def test_check_store_rejects_what_is_not_a_store() -> None:
    """Something that is neither a store nor returns one is a TypeError, not a pass."""
    with pytest.raises(TypeError, match="expected a Store"):
        await check_store(42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="returned int"):
        await check_store(lambda: 42)  # type: ignore[arg-type, return-value]


async def test_check_store_leaves_no_keys_behind() -> None:
    """The suite deletes every key it used, so it can run against a store with real data."""
    store = MemoryStore()
    keep = VisitorRecord(visitor_secret_id=Secret("user-data"))
    await store.save("real-user", keep)
    await check_store(store)
    assert len(store) == 1
    assert await store.load("real-user") == keep


# Broken stores: check_store must catch each bug. ------------------------------------------


class DropsOtherKeysStore:
    """save() rewrites the whole storage with just the saved key (a lost-update bug)."""

    def __init__(self) -> None:
        self.inner = MemoryStore()
        self.records: dict[str, VisitorRecord] = {}

    async def load(self, key: str) -> VisitorRecord | None:
        return self.records.get(key)

    async def save(self, key: str, record: VisitorRecord) -> None:
        self.records = {key: record}

    async def delete(self, key: str) -> None:
        self.records.pop(key, None)

    def lock(self, key: str) -> Any:
        return self.inner.lock(key)


class NoLockStore(DropsOtherKeysStore):
    """lock() excludes nobody."""

    async def save(self, key: str, record: VisitorRecord) -> None:
        self.records[key] = record

    @asynccontextmanager
    async def lock(self, key: str) -> AsyncIterator[None]:
        yield


class MasksSecretsStore(NoLockStore):
    """save() keeps str(secret), which is the mask, instead of the secret."""

    async def save(self, key: str, record: VisitorRecord) -> None:
        data = record.to_json()
        if data["visitor_secret_id"] is not None:
            data["visitor_secret_id"] = str(record.visitor_secret_id)
        self.records[key] = VisitorRecord.from_json(data)

    def lock(self, key: str) -> Any:
        return self.inner.lock(key)


class StrictDeleteStore(NoLockStore):
    """delete() of a missing key raises."""

    async def delete(self, key: str) -> None:
        del self.records[key]

    def lock(self, key: str) -> Any:
        return self.inner.lock(key)


class DropsTokensStore(MasksSecretsStore):
    """save() forgets the OAuth tokens of a record."""

    async def save(self, key: str, record: VisitorRecord) -> None:
        data = record.to_json()
        data["tokens"] = {}
        self.records[key] = VisitorRecord.from_json(data)


@pytest.mark.parametrize(
    ("store_class", "message"),
    [
        pytest.param(DropsOtherKeysStore, "saving another key", id="drops-other-keys"),
        pytest.param(NoLockStore, "entered while the first was held", id="no-lock"),
        pytest.param(MasksSecretsStore, "visitor_secret_id differs", id="masks-secrets"),
        pytest.param(StrictDeleteStore, "delete.. of a deleted key raised", id="strict-delete"),
        pytest.param(DropsTokensStore, "tokens keys", id="drops-tokens"),
    ],
)
async def test_check_store_catches_broken_stores(store_class: type[Any], message: str) -> None:
    """Each deliberately broken store fails check_store with a message naming the bug."""
    with pytest.raises(AssertionError, match=message):
        await check_store(store_class())


# Crashes: SIGKILL a writer at random moments. --------------------------------------------


class LineReader:
    """Reads lines from a child's stdout with a deadline (select, so a hang fails fast)."""

    def __init__(self, stream: IO[bytes] | None) -> None:
        assert stream is not None
        self._fd = stream.fileno()
        self._buffer = b""

    def next(self, timeout: float = 15.0) -> str:
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError("the child process printed nothing in time")
            readable, _, _ = select.select([self._fd], [], [], remaining)
            if readable:
                chunk = os.read(self._fd, 65536)
                if not chunk:
                    raise AssertionError("the child process closed its stdout")
                self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.decode()


@contextmanager
def child_process(tmp_path: Path, mode: str, **fields: Any) -> Iterator[subprocess.Popen[bytes]]:
    """Start a helper process; on failure show its stderr; always reap it."""
    stderr_path = tmp_path / f"child-{mode}-{time.monotonic_ns()}.stderr"
    with stderr_path.open("wb") as stderr:
        process = subprocess.Popen(
            child_command(mode, **fields),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            env=child_env(),
        )
    try:
        yield process
    except BaseException as exc:
        exc.add_note(f"child stderr:\n{stderr_path.read_text(errors='replace')}")
        raise
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)
        for stream in (process.stdin, process.stdout):
            if stream is not None:
                stream.close()


def temporaries(folder: Path) -> list[str]:
    return sorted(name.name for name in folder.iterdir() if name.name.endswith(".tmp"))


async def load_fresh(kind: str, path: Path, key: str) -> VisitorRecord | None:
    store = make_store(kind, path)
    try:
        return await store.load(key)
    finally:
        await close(store)


async def save_fresh(kind: str, path: Path, key: str, record: VisitorRecord) -> None:
    store = make_store(kind, path)
    try:
        await store.save(key, record)
    finally:
        await close(store)


@pytest.mark.parametrize("kind", KINDS)
def test_sigkill_during_saves_leaves_previous_or_new_record(tmp_path: Path, kind: str) -> None:
    """After a SIGKILL at a random moment a fresh store loads the previous or the new record."""
    # GIOSG_CRASH_TRIALS sets the number of kills; the long reliability run uses 10,000
    # (tests/reliability/README.md).
    trials = int(os.environ.get("GIOSG_CRASH_TRIALS", "20"))
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    path, key = store_path(tmp_path, kind), "crash/visitor:ü"
    bystander = VisitorRecord(visitor_secret_id=Secret("bystander-secret"), version=7)
    anyio.run(save_fresh, kind, path, "bystander", bystander)
    known = 0  # the version the store holds before the current trial
    with child_process(tmp_path, "zygote") as zygote:
        assert zygote.stdin is not None
        lines = LineReader(zygote.stdout)
        for trial in range(trials):
            where = f"seed {seed}, trial {trial}"
            command = {"kind": kind, "path": str(path), "key": key, "seed": seed}
            zygote.stdin.write(json.dumps(command).encode() + b"\n")
            zygote.stdin.flush()
            ready = lines.next()
            assert ready.startswith("ready "), f"{where}: {ready!r}"
            time.sleep(rng.uniform(0.0, 0.03))
            os.kill(int(ready.split()[1]), signal.SIGKILL)
            acknowledged = known
            while (line := lines.next()).startswith("saved "):
                acknowledged = int(line.split()[1])
            assert line == f"exit {-signal.SIGKILL}", f"{where}: the writer ended with {line!r}"

            loaded = anyio.run(load_fresh, kind, path, key)
            assert loaded is not None or acknowledged == 0, f"{where}: the record vanished"
            version = loaded.version if loaded is not None else 0
            assert version in (acknowledged, acknowledged + 1), (
                f"{where}: loaded version {version}, last acknowledged {acknowledged}"
            )
            if loaded is not None:
                assert loaded == build_record(seed, version), f"{where}: record {version} differs"
            assert anyio.run(load_fresh, kind, path, "bystander") == bystander, where
            if kind == "file":
                leftovers = temporaries(tmp_path)
                assert len(leftovers) <= 1, f"{where}: {leftovers}"
            known = version
        zygote.stdin.close()
        assert zygote.wait(timeout=10) == 0
    assert known > 0, "no save ever completed: the kills came too early to test anything"

    # The next successful save (by a new store, as after a restart) leaves no temporaries.
    anyio.run(save_fresh, kind, path, key, build_record(seed, known + 1))
    assert temporaries(tmp_path) == []
    assert anyio.run(load_fresh, kind, path, key) == build_record(seed, known + 1)
    if kind == "sqlite":
        with sqlite3.connect(path) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)


# Several processes. ----------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_two_processes_saving_different_keys_lose_nothing(tmp_path: Path, kind: str) -> None:
    """Two processes each saving 200 new keys into one store at once lose no update."""
    path, count = store_path(tmp_path, kind), 200
    prefixes = ["first", "second"]
    with (
        child_process(tmp_path, "rmw", kind=kind, path=str(path), prefix="first", count=count) as a,
        child_process(
            tmp_path, "rmw", kind=kind, path=str(path), prefix="second", count=count
        ) as b,
    ):
        readers = [LineReader(a.stdout), LineReader(b.stdout)]
        assert [reader.next() for reader in readers] == ["ready", "ready"]
        for process in (a, b):
            assert process.stdin is not None
            process.stdin.write(b"go\n")
            process.stdin.flush()
        assert [reader.next(timeout=60) for reader in readers] == ["done", "done"]
        assert (a.wait(timeout=10), b.wait(timeout=10)) == (0, 0)

    async def load_all() -> dict[str, VisitorRecord | None]:
        store = make_store(kind, path)
        try:
            keys = [f"{prefix}-{i}" for prefix in prefixes for i in range(count)]
            return {key: await store.load(key) for key in keys}
        finally:
            await close(store)

    loaded = anyio.run(load_all)
    lost = sorted(key for key, record in loaded.items() if record is None)
    assert lost == [], f"{len(lost)} lost updates, for example {lost[:5]}"
    for key, record in loaded.items():
        assert record is not None
        assert record.visitor_secret_id == Secret(key)


@pytest.mark.parametrize("ending", ["release", "kill"])
@pytest.mark.parametrize("kind", KINDS)
async def test_lock_excludes_another_process(tmp_path: Path, kind: str, ending: str) -> None:
    """A process holding lock(key) keeps this one out until it releases it or dies."""
    path, key = store_path(tmp_path, kind), "visitor/1"
    # The child's lease (SQLite) outlasts the window in which we check that we are kept out.
    fields = {"kind": kind, "path": str(path), "key": key, "lease": 1.0}
    store = make_store(kind, path)
    async with await anyio.open_process(
        child_command("hold", **fields), env=child_env(), stderr=None
    ) as process:
        assert process.stdout is not None
        assert process.stdin is not None
        reader = BufferedByteReceiveStream(process.stdout)
        with anyio.fail_after(15):
            assert await reader.receive_until(b"\n", 100) == b"locked"
        entered = False
        with anyio.move_on_after(0.3):
            async with store.lock(key):
                entered = True
        assert not entered, "entered lock(key) while another process held it"
        async with store.lock("visitor/2"):
            pass  # another key is free meanwhile
        if ending == "release":
            await process.stdin.send(b"go\n")
        else:
            process.kill()
        with anyio.fail_after(5):
            async with store.lock(key):
                pass
        expected = 0 if ending == "release" else -signal.SIGKILL
        assert await process.wait() == expected
    await close(store)


async def test_memory_store_keeps_no_lock_for_keys_nobody_locks() -> None:
    """A pool cycling through many keys must not keep a lock per key forever."""
    store = MemoryStore()
    async with anyio.create_task_group() as tg:
        for n in range(100):
            tg.start_soon(_hold, store, f"key-{n % 10}")
    assert store._locks == {}


async def _hold(store: MemoryStore, key: str) -> None:
    async with store.lock(key):
        await anyio.lowlevel.checkpoint()


@pytest.mark.parametrize("kind", KINDS)
def test_a_store_path_is_checked_and_made_absolute(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not a text path: TypeError; empty: ValueError; ``~`` and a relative path resolved now."""
    name = "FileStore" if kind == "file" else "SQLiteStore"
    with pytest.raises(TypeError, match=rf"{name} path must be a str or os.PathLike\[str\]"):
        make_store(kind, b"store.db")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=f"{name} path must not be empty"):
        make_store(kind, "")  # type: ignore[arg-type]
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert make_store(kind, "store.db").path == str(tmp_path / "store.db")  # type: ignore[arg-type]
    assert make_store(kind, "~/s.db").path == str(tmp_path / "home" / "s.db")  # type: ignore[arg-type]
