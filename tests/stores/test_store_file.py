"""FileStore: private files, atomic replace, refusal to clobber, locks between stores."""

from __future__ import annotations

import errno
import json
import os
import stat
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

import giosg_visitor.stores.file as file_module
from giosg_visitor import Secret
from giosg_visitor.errors import ProtocolError
from giosg_visitor.stores import FileStore, OrganizationSession, StoredToken, VisitorRecord
from giosg_visitor.stores.file import FilePermissionWarning


SECRET = "canary-visitor-secret-0123456789"


def record(secret: str = SECRET, version: int = 1) -> VisitorRecord:
    session = OrganizationSession(
        organization_id="org",
        visitor_id="visitor",
        socket_url="https://messagerouter.giosg.com",
        access_token=Secret(f"{secret}-token"),
        expires_at=1_700_000_000.5,
        lifetime=3600.0,
    )
    token = StoredToken(access_token=Secret(f"{secret}-oauth"), expires_at=1.0, lifetime=2.0)
    return VisitorRecord(
        visitor_secret_id=Secret(secret),
        sessions={"org": session},
        tokens={"oauth": token},
        version=version,
    )


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def temporaries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


async def entered_within(store: FileStore, key: str, seconds: float) -> bool:
    """Whether lock(key) of ``store`` can be entered within ``seconds``."""
    with anyio.move_on_after(seconds):
        async with store.lock(key):
            return True
    return False


class TestPermissions:
    @pytest.mark.parametrize("umask", [0o000, 0o022, 0o077], ids=["000", "022", "077"])
    async def test_new_file_is_0600_and_new_folder_0700(self, tmp_path: Path, umask: int) -> None:
        """Under any umask the file and its lock files are 0600 and new folders 0700."""
        path = tmp_path / "new" / "deeper" / "visitor.json"
        old_umask = os.umask(umask)
        try:
            store = FileStore(path)
            await store.save("k", record())
            async with store.lock("k"):
                pass
        finally:
            os.umask(old_umask)
        assert mode(path) == 0o600
        assert mode(path.parent) == mode(path.parent.parent) == 0o700
        assert mode(Path(f"{path}.lock")) == 0o600
        assert mode(Path(f"{path}.renew.lock")) == 0o600

    async def test_existing_folder_is_left_alone(self, tmp_path: Path) -> None:
        """Only a folder the store creates is made 0700; an existing one keeps its mode."""
        os.chmod(tmp_path, 0o755)
        await FileStore(tmp_path / "visitor.json").save("k", record())
        assert mode(tmp_path) == 0o755

    @pytest.mark.parametrize("loose", [0o644, 0o640, 0o606], ids=oct)
    async def test_loose_file_is_tightened_with_a_warning(self, tmp_path: Path, loose: int) -> None:
        """A file other users can access is changed to 0600, with a warning, on first use."""
        path = tmp_path / "visitor.json"
        store = FileStore(path)
        await store.save("k", record())
        path.chmod(loose)
        with pytest.warns(FilePermissionWarning, match=f"mode {loose:#o}") as caught:
            assert await store.load("k") == record()
        assert mode(path) == 0o600
        assert caught[0].filename == __file__  # the warning points at the caller
        assert await store.load("k") == record()  # no second warning (warnings are errors)

    async def test_loose_file_is_tightened_on_save(self, tmp_path: Path) -> None:
        """Saving into a 0644 file warns too, and the new file is 0600."""
        path = tmp_path / "visitor.json"
        store = FileStore(path)
        await store.save("k", record())
        path.chmod(0o644)
        with pytest.warns(FilePermissionWarning):
            await store.save("k", record(version=2))
        assert mode(path) == 0o600
        assert await store.load("k") == record(version=2)

    async def test_symlink_at_path_is_refused(self, tmp_path: Path) -> None:
        """A symlink at the store path is refused for load, save and delete; the target is kept."""
        target = tmp_path / "elsewhere.json"
        await FileStore(target).save("k", record())
        before = target.read_bytes()
        link = tmp_path / "visitor.json"
        link.symlink_to(target)
        store = FileStore(link)
        attempts: list[Callable[[], Awaitable[object]]] = [
            lambda: store.load("k"),
            lambda: store.save("k", record("other")),
            lambda: store.delete("k"),
        ]
        for attempt in attempts:
            with pytest.raises(OSError, match="symlink") as caught:
                await attempt()
            assert caught.value.errno == errno.ELOOP
            assert SECRET not in str(caught.value)
        assert target.read_bytes() == before

    async def test_dangling_symlink_is_refused(self, tmp_path: Path) -> None:
        """A symlink to a missing file is refused too (save would otherwise create it)."""
        link = tmp_path / "visitor.json"
        link.symlink_to(tmp_path / "missing.json")
        with pytest.raises(OSError, match="symlink"):
            await FileStore(link).save("k", record())
        assert not (tmp_path / "missing.json").exists()

    async def test_not_a_regular_file_is_refused(self, tmp_path: Path) -> None:
        """A folder at the store path is an OSError, not an empty store."""
        (tmp_path / "visitor.json").mkdir()
        with pytest.raises(OSError, match="regular file"):
            await FileStore(tmp_path / "visitor.json").load("k")


class TestFormat:
    async def test_file_holds_every_key_as_versioned_json(self, tmp_path: Path) -> None:
        """The file is {"version": 1, "records": {key: record.to_json()}} for all keys."""
        path = tmp_path / "visitor.json"
        store = FileStore(path)
        records = {"a": record("secret-a"), "b/ü:1": record("secret-b", version=3)}
        for key, value in records.items():
            await store.save(key, value)
        data = json.loads(path.read_bytes())
        assert data == {
            "version": 1,
            "records": {key: value.to_json() for key, value in records.items()},
        }

    async def test_missing_file_loads_nothing_and_creates_nothing(self, tmp_path: Path) -> None:
        """load and delete on a store that was never written leave the disk untouched."""
        store = FileStore(tmp_path / "missing" / "visitor.json")
        assert await store.load("k") is None
        await store.delete("k")
        assert listing(tmp_path) == []

    async def test_empty_file_is_an_empty_store(self, tmp_path: Path) -> None:
        """A zero-length file (made with touch) holds nothing and may be written."""
        path = tmp_path / "visitor.json"
        path.touch(mode=0o600)
        store = FileStore(path)
        assert await store.load("k") is None
        await store.save("k", record())
        assert await store.load("k") == record()

    async def test_delete_keeps_other_keys(self, tmp_path: Path) -> None:
        """Deleting one key rewrites the file with every other key intact."""
        store = FileStore(tmp_path / "visitor.json")
        await store.save("a", record("secret-a"))
        await store.save("b", record("secret-b"))
        await store.delete("a")
        await store.delete("a")
        assert await store.load("a") is None
        assert await store.load("b") == record("secret-b")

    def test_path_is_made_absolute_and_user_expanded(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A relative path is resolved against today's working folder; ``~`` is expanded."""
        monkeypatch.setenv("HOME", "/home/someone")
        assert FileStore("~/visitor.json").path == "/home/someone/visitor.json"
        assert FileStore("visitor.json").path == os.path.join(os.getcwd(), "visitor.json")

    def test_repr_shows_the_path_only(self, tmp_path: Path) -> None:
        """repr names the file and nothing else."""
        store = FileStore(tmp_path / "visitor.json")
        assert repr(store) == f"<FileStore path={str(tmp_path / 'visitor.json')!r}>"

    async def test_arguments_are_checked(self, tmp_path: Path) -> None:
        """Bad paths, keys and records are TypeError or ValueError before any I/O."""
        with pytest.raises(TypeError, match="bytes"):
            FileStore(b"visitor.json")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="empty"):
            FileStore("")
        store = FileStore(tmp_path / "visitor.json")
        with pytest.raises(ValueError, match="empty"):
            await store.save("", record())
        with pytest.raises(TypeError, match="str"):
            await store.load(1)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="VisitorRecord"):
            await store.save("k", {"visitor_secret_id": SECRET})  # type: ignore[arg-type]
        assert listing(tmp_path) == []


CORRUPT = {
    "garbage": f"{{not json at all {SECRET}".encode(),
    "truncated": b'{"version":1,"records":{"k":{"visitor_secret_id":"' + SECRET.encode(),
    "binary": b"\xff\xfe\x00" + SECRET.encode(),
    "list": json.dumps([SECRET]).encode(),
    "newer-format": json.dumps({"version": 2, "records": {}}).encode(),
    "records-not-object": json.dumps({"version": 1, "records": [SECRET]}).encode(),
}


class TestCorruption:
    @pytest.mark.parametrize("content", CORRUPT.values(), ids=CORRUPT.keys())
    async def test_corrupt_file_is_never_overwritten(self, tmp_path: Path, content: bytes) -> None:
        """load, save and delete raise ProtocolError naming the file, which stays byte-exact."""
        path = tmp_path / "visitor.json"
        path.write_bytes(content)
        path.chmod(0o600)
        store = FileStore(path)
        attempts: list[Callable[[], Awaitable[object]]] = [
            lambda: store.load("k"),
            lambda: store.save("k", record()),
            lambda: store.delete("k"),
        ]
        for attempt in attempts:
            with pytest.raises(ProtocolError, match="not a valid giosg_visitor store") as caught:
                await attempt()
            message = str(caught.value)
            assert str(path) in message
            assert SECRET not in message
            assert caught.value.__context__ is None  # the decode error holds the whole file
        assert path.read_bytes() == content
        assert temporaries(tmp_path) == []

    async def test_malformed_record_fails_alone(self, tmp_path: Path) -> None:
        """A malformed record raises on its own load; other keys load and save normally."""
        path = tmp_path / "visitor.json"
        records = {"bad": {"visitor_secret_id": 12345, "sessions": SECRET}, "good": {}}
        path.write_text(json.dumps({"version": 1, "records": records}))
        path.chmod(0o600)
        store = FileStore(path)
        with pytest.raises(ProtocolError, match="stored record") as caught:
            await store.load("bad")
        assert str(path) in str(caught.value)
        assert SECRET not in str(caught.value)
        await store.save("other", record())
        assert await store.load("other") == record()
        assert json.loads(path.read_text())["records"]["bad"] == records["bad"]


def failing(name: str, *, after: int = 0) -> Callable[..., Any]:
    """A stand-in for ``os.<name>`` that works ``after`` times, then fails."""
    real = getattr(os, name)
    calls = 0

    def fake(*args: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls > after:
            raise OSError(errno.EIO, f"injected {name} failure")
        return real(*args)

    return fake


def short_write_then_enospc() -> Callable[[int, Any], int]:
    """An ``os.write`` that writes half of the first buffer, then runs out of space."""
    real = os.write
    calls = 0

    def fake(fd: int, data: Any) -> int:
        nonlocal calls
        calls += 1
        if calls == 1:
            return real(fd, bytes(data)[: len(data) // 2])
        raise OSError(errno.ENOSPC, "injected write failure")

    return fake


class TestFailedWrites:
    @pytest.mark.parametrize(
        ("function", "fake"),
        [
            pytest.param("write", short_write_then_enospc, id="write"),
            pytest.param("fsync", lambda: failing("fsync"), id="fsync"),
            pytest.param("replace", lambda: failing("replace"), id="replace"),
        ],
    )
    async def test_failed_write_keeps_the_old_record(
        self,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
        function: str,
        fake: Callable[[], Callable[..., Any]],
    ) -> None:
        """A failing write, fsync or replace raises, keeps the old file and leaves no temp."""
        path = tmp_path / "visitor.json"
        store = FileStore(path)
        await store.save("k", record("old-secret"))
        before = path.read_bytes()
        with monkeypatch.context() as patch:
            patch.setattr(f"giosg_visitor.stores.file.os.{function}", fake())
            with pytest.raises(OSError, match="injected") as caught:
                await store.save("k", record("new-secret"))
        assert "new-secret" not in str(caught.value)
        assert path.read_bytes() == before
        assert await FileStore(path).load("k") == record("old-secret")
        assert temporaries(tmp_path) == []
        await store.save("k", record("new-secret"))  # and the store still works
        assert await store.load("k") == record("new-secret")

    async def test_failed_directory_fsync_is_reported(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """If only the folder's fsync fails the error is raised (the rename may not be durable)."""
        path = tmp_path / "visitor.json"
        store = FileStore(path)
        with monkeypatch.context() as patch:
            patch.setattr("giosg_visitor.stores.file.os.fsync", failing("fsync", after=1))
            with pytest.raises(OSError, match="injected"):
                await store.save("k", record())
        assert temporaries(tmp_path) == []

    async def test_stale_temporaries_are_removed_by_the_next_save(self, tmp_path: Path) -> None:
        """Temporary files of a writer that was killed are deleted; other files are not."""
        path = tmp_path / "visitor.json"
        stale = tmp_path / ".visitor.json.write-abc123xy.tmp"
        stale.write_bytes(b'{"version":1,"rec')
        unrelated = [tmp_path / "notes.tmp", tmp_path / ".other.json.write-abc123xy.tmp"]
        for other in unrelated:
            other.write_bytes(b"keep me")
        await FileStore(path).save("k", record())
        assert not stale.exists()
        assert all(other.exists() for other in unrelated)

    async def test_blocking_io_runs_in_worker_threads(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """open, fsync and replace never run on the event loop thread."""
        loop_thread = threading.get_ident()
        threads: dict[str, set[int]] = {"open": set(), "fsync": set(), "replace": set()}

        def spy(name: str) -> Callable[..., Any]:
            real = getattr(os, name)

            def wrapper(*args: Any, **kwargs: Any) -> Any:
                if name != "open" or str(args[0]).startswith(str(tmp_path)):
                    threads[name].add(threading.get_ident())
                return real(*args, **kwargs)

            return wrapper

        store = FileStore(tmp_path / "visitor.json")
        with monkeypatch.context() as patch:
            for name in threads:
                patch.setattr(f"giosg_visitor.stores.file.os.{name}", spy(name))
            await store.save("k", record())
            assert await store.load("k") == record()
            async with store.lock("k"):
                pass
            await store.delete("k")
        assert all(threads.values()), threads
        assert loop_thread not in set().union(*threads.values())


class TestLock:
    async def test_two_stores_on_one_file_exclude_each_other(self, tmp_path: Path) -> None:
        """lock(key) of one FileStore keeps out another on the same file, per key."""
        first, second = FileStore(tmp_path / "v.json"), FileStore(tmp_path / "v.json")
        async with first.lock("k"):
            assert not await entered_within(second, "k", 0.2)
            assert await entered_within(second, "other", 5)
        assert await entered_within(second, "k", 5)

    async def test_cancelled_waiter_leaves_the_lock_usable(self, tmp_path: Path) -> None:
        """A waiter cancelled while polling for the file lock holds nothing afterwards."""
        first, second = FileStore(tmp_path / "v.json"), FileStore(tmp_path / "v.json")
        async with first.lock("k"):
            assert not await entered_within(second, "k", 0.05)
        assert await entered_within(second, "k", 5)
        assert await entered_within(first, "k", 5)

    async def test_save_while_holding_the_lock(self, tmp_path: Path) -> None:
        """save() uses another lock file than lock(), so holding lock(key) does not deadlock."""
        store = FileStore(tmp_path / "v.json")
        with anyio.fail_after(5):
            async with store.lock("k"):
                await store.save("k", record())
                await FileStore(tmp_path / "v.json").save("other", record("x"))
        assert await store.load("k") == record()

    async def test_whole_file_lock_fallback(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Without OFD locks (macOS) the renewal lock flocks the whole file: still exclusive."""
        monkeypatch.setattr(file_module, "_uses_ofd_locks", lambda: False)
        first, second = FileStore(tmp_path / "v.json"), FileStore(tmp_path / "v.json")
        async with first.lock("k"):
            assert not await entered_within(second, "k", 0.2)
            assert not await entered_within(second, "other", 0.05)  # coarse: one lock for all
        assert await entered_within(second, "k", 5)

    async def test_lock_is_refused_through_a_symlink(self, tmp_path: Path) -> None:
        """A symlink in place of the renewal lock file is refused too."""
        (tmp_path / "v.json.renew.lock").symlink_to(tmp_path / "target")
        with pytest.raises(OSError, match="symlink"):
            async with FileStore(tmp_path / "v.json").lock("k"):
                pass
        assert not (tmp_path / "target").exists()
