"""Stores: where visitor secrets and sessions live between runs."""

from __future__ import annotations

from .base import Store as Store
from .file import FileStore as FileStore
from .memory import MemoryStore as MemoryStore
from .redis import RedisStore as RedisStore
from .sqlite import SQLiteStore as SQLiteStore


__all__ = ["FileStore", "MemoryStore", "RedisStore", "SQLiteStore", "Store"]
