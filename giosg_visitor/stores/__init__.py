"""Stores: where visitor secrets and sessions live between runs.

One :class:`Store` protocol (write your own against it) and four implementations. The
records a store keeps (:class:`VisitorRecord` and its parts) are values of this package.
"""

from __future__ import annotations

from ._records import (
    AuthSession as AuthSession,
    OrganizationSession as OrganizationSession,
    StoredToken as StoredToken,
    VisitorRecord as VisitorRecord,
)
from .base import Store as Store
from .file import FileStore as FileStore
from .memory import MemoryStore as MemoryStore
from .redis import RedisStore as RedisStore
from .sqlite import SQLiteStore as SQLiteStore


__all__ = [
    "AuthSession",
    "FileStore",
    "MemoryStore",
    "OrganizationSession",
    "RedisStore",
    "SQLiteStore",
    "Store",
    "StoredToken",
    "VisitorRecord",
]
