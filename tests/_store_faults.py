"""Real store outages for the tests: nothing is mocked, the storage itself refuses.

* :func:`sqlite_held_exclusive`: another process opens the SQLite database and holds
  ``BEGIN EXCLUSIVE`` until told to stop, so every write of the store waits for its
  ``busy_timeout`` and then fails with SQLite's own "database is locked".
* :func:`immutable_folder`: the store's folder and every file in it get the ext4/xfs
  *immutable* attribute (``chattr +i``), which behaves like a read-only mount: nothing
  can be created in the folder, and no file in it can be opened for writing (the
  FileStore's lock files included), not even by root. The tests run as root, which
  ``chmod`` does not stop, and cannot mount. Needs ``chattr`` and
  ``CAP_LINUX_IMMUTABLE``: without them the test is skipped (in CI it fails).
* :func:`redis_refusing_writes`: the Redis server is told to accept writes only with one
  replica connected (``min-replicas-to-write 1``); it has none, so every write is
  refused with ``NOREPLICAS``, reads go on. Restored on exit.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
import redis

from ._install import in_ci


__all__ = [
    "BreakableStore",
    "immutable_folder",
    "redis_refusing_writes",
    "sqlite_held_exclusive",
]

_HOLDER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
conn.execute("BEGIN EXCLUSIVE")
print("held", flush=True)
sys.stdin.read()
conn.execute("ROLLBACK")
"""


@asynccontextmanager
async def sqlite_held_exclusive(path: Path | str) -> AsyncIterator[None]:
    """Another process holds ``BEGIN EXCLUSIVE`` on the database at ``path`` meanwhile."""
    process = await anyio.open_process(
        [sys.executable, "-c", _HOLDER, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        assert process.stdin is not None
        with anyio.fail_after(30):
            line = b""
            while not line.endswith(b"\n"):
                line += await process.stdout.receive(1)
        assert line == b"held\n", line
        yield
    finally:
        with anyio.CancelScope(shield=True):
            if process.stdin is not None:
                await process.stdin.aclose()
            with anyio.move_on_after(10):
                await process.wait()
            if process.returncode is None:
                process.kill()
                await process.wait()


def _chattr(flag: str, *paths: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["chattr", flag, *map(str, paths)], capture_output=True, text=True, check=False, timeout=30
    )


def _files_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.is_symlink())


def _cannot(reason: str) -> None:
    message = f"an immutable folder is needed for a real read-only store: {reason}"
    if in_ci():
        pytest.fail(f"{message} (CI is set, so this is a failure, not a skip)", pytrace=False)
    pytest.skip(message)


@asynccontextmanager
async def immutable_folder(folder: Path) -> AsyncIterator[None]:
    """``folder`` and its files are read-only, even for root, meanwhile."""
    if shutil.which("chattr") is None:
        _cannot("chattr is not installed")
    # Files first: once the folder is immutable its entries stay, but they can still
    # have their own attribute changed; undone in the opposite order.
    paths = [*_files_in(folder), folder]
    result = _chattr("+i", *paths)
    if result.returncode != 0:
        _cannot(f"chattr +i failed ({result.stderr.strip()})")
    try:
        probe = folder / f".probe-{os.getpid()}"
        try:
            probe.touch()
        except PermissionError:
            pass
        else:
            probe.unlink()
            _cannot("the file system ignores the immutable attribute")
        yield
    finally:
        _chattr("-i", *reversed(paths))


@asynccontextmanager
async def redis_refusing_writes(url: str) -> AsyncIterator[None]:
    """The Redis server at ``url`` refuses every write (``NOREPLICAS``) meanwhile."""
    client: Any = redis.Redis.from_url(url)
    old = client.config_get("min-replicas-to-write")["min-replicas-to-write"]
    client.config_set("min-replicas-to-write", 1)
    try:
        yield
    finally:
        client.config_set("min-replicas-to-write", old)
        client.close()


class BreakableStore:
    """A fault hook around a real store: while ``broken`` is set, every call raises it.

    ``broken`` makes the exception to raise (a class or a zero-argument callable): what a real store
    raises in an outage (``StoreUnavailableError``) or what a store of the user's own
    might raise (``OSError``, ``sqlite3.OperationalError``). ``failures`` counts the calls
    that were made to fail.
    """

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.broken: Callable[[], BaseException] | None = None
        self.failures = 0

    def _check(self) -> None:
        if self.broken is not None:
            self.failures += 1
            raise self.broken()

    async def load(self, key: str) -> Any:
        self._check()
        return await self.inner.load(key)

    async def save(self, key: str, record: Any) -> None:
        self._check()
        await self.inner.save(key, record)

    async def delete(self, key: str) -> None:
        self._check()
        await self.inner.delete(key)

    @asynccontextmanager
    async def lock(self, key: str) -> AsyncIterator[None]:
        self._check()
        async with self.inner.lock(key):
            yield
