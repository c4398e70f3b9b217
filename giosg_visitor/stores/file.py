"""A store in one JSON file: 0600, atomic replace, safe to share between processes.

File layout: ``{"version": 1, "records": {key: record}}``. Next to ``<path>`` live two
empty lock files that are never deleted (deleting a lock file while someone waits on it
breaks the lock): ``<path>.lock`` serialises writers, ``<path>.renew.lock`` backs
:meth:`FileStore.lock`.

POSIX only (``fcntl``); the module imports on other systems but the store refuses to start.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import stat
import struct
import sys
import tempfile
import warnings
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any, Final, final

import anyio
import anyio.to_thread

from giosg_visitor.errors import (
    ProtocolError,
    StoreCorruptError,
    StoreError,
    StoreUnavailableError,
)
from giosg_visitor.stores._records import VisitorRecord

from .base import check_key, store_path


if sys.platform != "win32":
    import fcntl


__all__ = ["FilePermissionWarning", "FileStore"]

_FORMAT_VERSION: Final = 1
_O_NOFOLLOW: Final[int] = getattr(os, "O_NOFOLLOW", 0)
_O_CLOEXEC: Final[int] = getattr(os, "O_CLOEXEC", 0)
_O_DIRECTORY: Final[int] = getattr(os, "O_DIRECTORY", 0)
_TEMP_MARKER: Final = ".write-"
_TEMP_SUFFIX: Final = ".tmp"
# How often a waiting lock(key) retries: fast at first, then at most every 50 ms.
_POLL_FIRST: Final = 0.005
_POLL_MAX: Final = 0.05
# Some file systems cannot fsync a directory; durability is then theirs to give.
_DIR_FSYNC_UNSUPPORTED: Final = frozenset({errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP})


class FilePermissionWarning(UserWarning):
    """A store file was accessible to other users; its mode was changed to 0600."""


# Blocking helpers: they run in worker threads only. ----------------------------------------


def _uses_ofd_locks() -> bool:
    """Whether per-key byte-range locks (Linux open file description locks) are available."""
    return sys.platform == "linux" and hasattr(fcntl, "F_OFD_SETLK")


def _ensure_private_parent(path: str) -> None:
    """Create the missing folders above ``path``, each with mode 0700."""
    missing: list[str] = []
    folder = os.path.dirname(path)
    while not os.path.isdir(folder):
        missing.append(folder)
        folder = os.path.dirname(folder)
    for folder in reversed(missing):
        try:
            os.mkdir(folder, 0o700)
        except FileExistsError:
            continue  # created meanwhile by someone else: theirs to set up
        # mkdir applies the umask; a private folder must be 0700 whatever the umask is.
        os.chmod(folder, 0o700)


def _open_no_follow(path: str, flags: int, mode: int = 0o600) -> int:
    """``os.open`` that refuses a symlink at ``path`` with a clear :class:`OSError`."""
    try:
        return os.open(path, flags | _O_NOFOLLOW | _O_CLOEXEC, mode)
    except OSError:
        if os.path.islink(path):
            raise OSError(
                errno.ELOOP, "refusing to follow a symlink at a store path", path
            ) from None
        raise


def _tighten_mode(fd: int, path: str) -> int | None:
    """Make the open file ``fd`` private (0600); return its old mode if it was not.

    Raises:
        OSError: ``path`` is not a regular file.
    """
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        raise OSError(errno.EINVAL, "a store path must be a regular file", path)
    old = stat.S_IMODE(st.st_mode)
    if old & 0o077:
        os.fchmod(fd, 0o600)
        return old
    return None


def _permission_warning(path: str, old_mode: int) -> FilePermissionWarning:
    """The warning for a store file that was readable by others."""
    return FilePermissionWarning(
        f"store file {path!r} was accessible to other users (mode {old_mode:#o}); "
        "its mode is now 0600"
    )


def _corrupt(path: str, problem: str) -> StoreCorruptError:
    # The file's content never goes into the message: it holds secrets.
    return StoreCorruptError(
        f"store file {path!r} is not a valid giosg_visitor store ({problem}); "
        "it was left untouched: move it away or repair it"
    )


def _parse(raw: bytes, path: str) -> dict[str, Any]:
    if not raw.strip():
        # An empty file (for example created with touch) holds nothing that could be lost.
        return {}
    data: Any = None
    ok = True
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        # Raised outside this block so that the decode error (whose ``doc`` is the whole
        # file, secrets included) is not kept as the ProtocolError's context.
        ok = False
    if not ok:
        raise _corrupt(path, "unparsable JSON")
    if not isinstance(data, dict):
        raise _corrupt(path, f"expected a JSON object, got {type(data).__name__}")
    version = data.get("version")
    if version != _FORMAT_VERSION:
        shown = version if isinstance(version, int) and not isinstance(version, bool) else "?"
        raise _corrupt(path, f"unsupported format version {shown}")
    records = data.get("records")
    if not isinstance(records, dict):
        raise _corrupt(path, "'records' must be an object")
    return records


def _read(path: str) -> tuple[dict[str, Any], int | None]:
    """All raw records of the file and, if it had to be tightened, its old mode."""
    try:
        fd = _open_no_follow(path, os.O_RDONLY)
    except FileNotFoundError:
        return {}, None
    try:
        old_mode = _tighten_mode(fd, path)
        file = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    with file:
        raw = file.read()
    return _parse(raw, path), old_mode


def _decode(raw: Any, path: str) -> VisitorRecord:
    try:
        return VisitorRecord.from_json(raw)
    except ProtocolError as exc:
        # Model errors name the field, never its value.
        raise StoreCorruptError(f"store file {path!r}: {exc}") from exc


def _write_all(fd: int, payload: bytes) -> None:
    view = memoryview(payload)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _fsync_directory(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY | _O_DIRECTORY | _O_CLOEXEC)
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in _DIR_FSYNC_UNSUPPORTED:
            raise
    finally:
        os.close(fd)


def _replace_atomically(path: str, records: dict[str, Any]) -> None:
    """Write a whole new file next to ``path`` and rename it over ``path``."""
    payload = json.dumps(
        {"version": _FORMAT_VERSION, "records": records}, separators=(",", ":"), sort_keys=True
    ).encode("ascii")
    directory, name = os.path.split(path)
    # mkstemp creates the file with mode 0600 whatever the umask.
    fd, temp = tempfile.mkstemp(prefix=f".{name}{_TEMP_MARKER}", suffix=_TEMP_SUFFIX, dir=directory)
    try:
        try:
            _write_all(fd, payload)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    # The rename itself is durable only once the directory entry is on disk.
    _fsync_directory(directory)


def _remove_stale_temporaries(path: str) -> None:
    """Delete temporary files left by a writer that crashed (the caller holds the write lock)."""
    directory, name = os.path.split(path)
    prefix = f".{name}{_TEMP_MARKER}"
    with os.scandir(directory) as entries:
        for entry in entries:
            if (
                entry.name.startswith(prefix)
                and entry.name.endswith(_TEMP_SUFFIX)
                and entry.is_file(follow_symlinks=False)
            ):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)


@contextlib.contextmanager
def _flocked(lock_path: str) -> Iterator[None]:
    fd = _open_no_follow(lock_path, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _key_offset(key: str) -> int:
    """The byte of the renewal lock file that stands for ``key`` (63-bit, from SHA-256)."""
    digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big") >> 1


@final
class _RenewalLock:
    """One holder's claim on ``key`` in the renewal lock file (used from worker threads).

    On Linux each key is one byte of the file, locked with an open file description lock
    (``F_OFD_SETLK``): it belongs to this descriptor only, so holders in the same process,
    in other stores or in other processes exclude each other and different keys do not.
    Elsewhere the whole file is ``flock``-ed, which is correct but serialises all keys.
    The kernel drops either lock when the descriptor is closed, also when a process dies.
    """

    def __init__(self, path: str, key: str) -> None:
        self._path = path
        self._key = key
        self._fd: int | None = None

    def try_acquire(self) -> bool:
        if self._fd is None:
            _ensure_private_parent(self._path)
            self._fd = _open_no_follow(self._path, os.O_RDWR | os.O_CREAT)
        try:
            if _uses_ofd_locks():
                # struct flock: l_type, l_whence, l_start, l_len, l_pid (must be 0 for OFD).
                request = struct.pack(
                    "hhqqi4x", fcntl.F_WRLCK, os.SEEK_SET, _key_offset(self._key), 1, 0
                )
                fcntl.fcntl(self._fd, fcntl.F_OFD_SETLK, request)
            else:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                return False
            raise
        return True

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)


def unavailable(store: str, what: str, exc: OSError) -> StoreUnavailableError:
    """The :class:`StoreUnavailableError` for an ``OSError`` of a file-based store.

    The message is the store, the operation and the system's own words (``strerror``,
    which never holds file content); ``errno`` is kept so callers can tell ENOSPC from
    EROFS.
    """
    reason = exc.strerror or type(exc).__name__
    code = errno.errorcode.get(exc.errno, "") if isinstance(exc.errno, int) else ""
    suffix = f" ({code})" if code else ""
    error = StoreUnavailableError(f"{store}: {what} failed: {reason}{suffix}")
    error.errno = exc.errno
    return error


@contextlib.contextmanager
def _typed_errors(path: str, what: str) -> Iterator[None]:
    """Raise an ``OSError`` of the file system as :class:`StoreUnavailableError`."""
    try:
        yield
    except StoreError:
        raise
    except OSError as exc:
        raise unavailable(f"store file {path!r}", what, exc) from exc


# The store. --------------------------------------------------------------------------------


@final
class FileStore:
    """Keeps every record in one JSON file that only its owner can read.

    Writes are atomic (a temporary file in the same folder, ``fsync``, ``os.replace``, then
    ``fsync`` of the folder), so a crash leaves the previous or the new file, never a torn
    one. Every write reads, modifies and rewrites the whole file under an exclusive lock
    on ``<path>.lock``, so several processes can share the file without losing each other's
    updates. :meth:`lock` is a cross-process lock per key on ``<path>.renew.lock``, released
    by the kernel if its holder dies. Blocking I/O runs in worker threads.

    The file is created with mode 0600 and its folder, if missing, with 0700. A symlink at
    ``path`` is refused; an existing file that other users can access is changed to 0600
    with a :class:`FilePermissionWarning`. A file that is not a valid store is never
    overwritten: ``load`` and ``save`` raise :class:`~giosg_visitor.StoreCorruptError`.
    File-system failures (a read-only folder, a full disk, an I/O error, a symlink at
    ``path``) raise :class:`~giosg_visitor.StoreUnavailableError` (also an ``OSError``,
    with the original ``errno``; the original error is its ``__cause__``).

    Meant for a handful of visitors; for many visitors use
    :class:`~giosg_visitor.stores.SQLiteStore`.

    Args:
        path: The JSON file (``~`` is expanded; a relative path is made absolute now).

    Raises:
        RuntimeError: The platform has no ``fcntl`` file locks (Windows).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        if sys.platform == "win32":  # pragma: no cover
            raise RuntimeError("FileStore needs POSIX file locks (fcntl)")
        self._path = store_path(path, owner="FileStore")
        self._write_lock_path = f"{self._path}.lock"
        self._renew_lock_path = f"{self._path}.renew.lock"
        self._write_lock: anyio.Lock | None = None
        self._key_locks: dict[str, anyio.Lock] = {}
        self._swept = False

    @property
    def path(self) -> str:
        """The absolute path of the JSON file."""
        return self._path

    def __repr__(self) -> str:
        return f"<FileStore path={self._path!r}>"

    # Store protocol. ---------------------------------------------------------------------

    async def load(self, key: str) -> VisitorRecord | None:
        """Return the record stored under ``key``, or ``None``.

        Raises:
            StoreCorruptError: The file is not a valid store, or the record is malformed.
            StoreUnavailableError: The file cannot be read, or ``path`` is a symlink.
        """
        key = check_key(key)
        with _typed_errors(self._path, "load"):
            record, old_mode = await anyio.to_thread.run_sync(self._load_sync, key)
        if old_mode is not None:
            warnings.warn(_permission_warning(self._path, old_mode), stacklevel=2)
        return record

    async def save(self, key: str, record: VisitorRecord) -> None:
        """Store ``record`` under ``key`` atomically and durably; other keys are kept.

        Raises:
            StoreCorruptError: The existing file is not a valid store (it is left untouched).
            StoreUnavailableError: Writing failed (the previous file is intact: a read-only
                folder, a full disk), or ``path`` is a symlink.
        """
        key = check_key(key)
        if not isinstance(record, VisitorRecord):
            raise TypeError(f"expected a VisitorRecord, got {type(record).__name__}")
        with _typed_errors(self._path, "save"):
            old_mode = await self._modify(key, record.to_json())
        if old_mode is not None:
            warnings.warn(_permission_warning(self._path, old_mode), stacklevel=2)

    async def delete(self, key: str) -> None:
        """Forget ``key`` (no error if absent).

        Raises:
            StoreCorruptError: The existing file is not a valid store (it is left untouched).
            StoreUnavailableError: Writing failed (the previous file is intact).
        """
        key = check_key(key)
        with _typed_errors(self._path, "delete"):
            old_mode = await self._modify(key, None)
        if old_mode is not None:
            warnings.warn(_permission_warning(self._path, old_mode), stacklevel=2)

    @asynccontextmanager
    async def lock(self, key: str) -> AsyncIterator[None]:
        """Hold the renewal lock of ``key`` against every process sharing this file.

        Not re-entrant. :meth:`save` may be called while it is held. Waiting is
        cancellable; the lock is released on exit, on error and on cancellation.

        Raises:
            StoreUnavailableError: The lock file cannot be created or opened.
        """
        key = check_key(key)
        local = self._key_locks.get(key)
        if local is None:
            local = self._key_locks[key] = anyio.Lock()
        async with local:
            claim = _RenewalLock(self._renew_lock_path, key)
            try:
                # Non-blocking attempts in a thread, sleeping in between, keep the wait
                # cancellable: a thread blocked in the kernel could not be called back.
                delay = _POLL_FIRST
                while True:
                    with _typed_errors(self._path, "lock"):
                        acquired = await anyio.to_thread.run_sync(claim.try_acquire)
                    if acquired:
                        break
                    await anyio.sleep(delay)
                    delay = min(delay * 2, _POLL_MAX)
                yield
            finally:
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(claim.release)

    # Internals. --------------------------------------------------------------------------

    def _load_sync(self, key: str) -> tuple[VisitorRecord | None, int | None]:
        records, old_mode = _read(self._path)
        raw = records.get(key)
        return (None if raw is None else _decode(raw, self._path)), old_mode

    async def _modify(self, key: str, data: dict[str, Any] | None) -> int | None:
        if self._write_lock is None:
            self._write_lock = anyio.Lock()
        # One writer thread per store at a time; the file lock orders processes.
        async with self._write_lock:
            return await anyio.to_thread.run_sync(self._modify_sync, key, data)

    def _modify_sync(self, key: str, data: dict[str, Any] | None) -> int | None:
        if data is None and not os.path.lexists(self._path):
            return None  # nothing to delete: do not create the folder or lock file
        _ensure_private_parent(self._path)
        with _flocked(self._write_lock_path):
            if not self._swept:
                _remove_stale_temporaries(self._path)
                self._swept = True
            records, old_mode = _read(self._path)
            if data is not None:
                records[key] = data
            elif key in records:
                del records[key]
            else:
                return old_mode
            _replace_atomically(self._path, records)
            return old_mode
