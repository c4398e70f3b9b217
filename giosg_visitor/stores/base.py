"""The :class:`Store` protocol: where visitor secrets and sessions live."""

from __future__ import annotations

import os
from contextlib import AbstractAsyncContextManager
from typing import Protocol, runtime_checkable

from ._records import VisitorRecord


__all__ = ["Store"]


@runtime_checkable
class Store(Protocol):
    """Persistent state for visitors, keyed by the caller's own id (``key``).

    A store keeps one :class:`~giosg_visitor.models.VisitorRecord` per key: the visitor's
    secret and the latest session per organization. The contract (checked by
    :func:`giosg_visitor.testing.check_store`):

    * ``load`` returns what the last completed ``save`` for that key wrote, or ``None``;
    * ``save`` is atomic: a reader (in any process) sees the old or the new record, never
      a torn one, and a failed ``save`` leaves the old record intact and raises;
    * ``save`` of one key never loses another key's record;
    * ``lock(key)`` is mutual exclusion per key among every user of the same backing
      storage (processes included, for shared stores). The SDK holds it while it renews a
      token so that one renewal serves everyone. It is not re-entrant. Stores whose lock
      outlives a crashed holder must expire it (a lease).
    * blocking I/O never runs on the event loop thread;
    * failures of the backing storage raise :class:`~giosg_visitor.StoreError` (the
      original exception as ``__cause__``, no record content or password in the
      message): :class:`~giosg_visitor.StoreUnavailableError` when it cannot be used
      now (locked, read-only, full, down), :class:`~giosg_visitor.StoreCorruptError`
      when its content is unreadable (left untouched). A store of your own should do
      the same; the SDK treats any other exception from a store as a
      :class:`~giosg_visitor.StoreError` too. Misuse (a key that is not a ``str``)
      raises ``TypeError`` or ``ValueError``.

    Keys are arbitrary non-empty strings (they may contain ``/``, ``:``, Unicode).
    """

    async def load(self, key: str) -> VisitorRecord | None:
        """Return the record stored under ``key``, or ``None``."""
        ...

    async def save(self, key: str, record: VisitorRecord) -> None:
        """Store ``record`` under ``key`` atomically and durably."""
        ...

    async def delete(self, key: str) -> None:
        """Forget ``key`` (no error if absent)."""
        ...

    def lock(self, key: str) -> AbstractAsyncContextManager[None]:
        """Mutual exclusion for renewing ``key`` across every user of this storage."""
        ...


def check_key(key: object) -> str:
    """Validate a store key (shared by the built-in stores).

    Raises:
        TypeError: ``key`` is not a ``str``.
        ValueError: ``key`` is empty.
    """
    if not isinstance(key, str):
        raise TypeError(f"store keys are str, not {type(key).__name__}")
    if not key:
        raise ValueError("store keys must not be empty")
    return key


def store_path(path: str | os.PathLike[str], *, owner: str) -> str:
    """Validate a store's path (shared by the file-backed stores); return it absolute.

    ``~`` is expanded, and a relative path is made absolute against the current directory
    now, so a later ``chdir`` does not move the store.

    Raises:
        TypeError: ``path`` is neither a ``str`` nor an ``os.PathLike[str]``.
        ValueError: ``path`` is empty.
    """
    raw = os.fspath(path)
    if not isinstance(raw, str):
        raise TypeError(f"{owner} path must be a str or os.PathLike[str], not {type(raw).__name__}")
    if not raw:
        raise ValueError(f"{owner} path must not be empty")
    return os.path.abspath(os.path.expanduser(raw))
