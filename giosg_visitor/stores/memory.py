"""An in-memory store for tests, notebooks and single-process bots that may forget."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import final

import anyio

from ._records import VisitorRecord
from .base import check_key


__all__ = ["MemoryStore"]


@final
class MemoryStore:
    """Keeps records in a dict: fast, shared by every visitor of this process, lost on exit.

    There is no storage that could fail, so it never raises
    :class:`~giosg_visitor.StoreError`; only misuse raises (``TypeError``, ``ValueError``).
    """

    def __init__(self) -> None:
        self._records: dict[str, VisitorRecord] = {}
        # key -> (lock, tasks holding or waiting for it); dropped when nobody needs it, so
        # a pool cycling through many keys does not keep a lock per key forever.
        self._locks: dict[str, tuple[anyio.Lock, list[int]]] = {}

    async def load(self, key: str) -> VisitorRecord | None:
        """Return the record for ``key``, or ``None``."""
        return self._records.get(check_key(key))

    async def save(self, key: str, record: VisitorRecord) -> None:
        """Store ``record`` under ``key``."""
        if not isinstance(record, VisitorRecord):
            raise TypeError(f"expected a VisitorRecord, got {type(record).__name__}")
        self._records[check_key(key)] = record

    async def delete(self, key: str) -> None:
        """Forget ``key``."""
        self._records.pop(check_key(key), None)

    @asynccontextmanager
    async def lock(self, key: str) -> AsyncIterator[None]:
        """Per-key mutual exclusion inside this process."""
        key = check_key(key)
        entry = self._locks.get(key)
        if entry is None:
            entry = self._locks[key] = (anyio.Lock(), [0])
        lock, users = entry
        users[0] += 1
        try:
            async with lock:
                yield
        finally:
            users[0] -= 1
            if not users[0]:
                del self._locks[key]

    def __len__(self) -> int:
        return len(self._records)

    def __repr__(self) -> str:
        return f"<MemoryStore keys={len(self._records)}>"
