"""Rendezvous (highest-random-weight) hashing: who should own a visitor.

Each worker scores each key with a hash of both; the highest score wins. When a worker
joins or leaves, only the keys it wins (or won) move: about 1/N of them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence


__all__ = ["preferred_owner"]


def _score(key: str, worker: str) -> int:
    digest = hashlib.blake2b(f"{worker}\x00{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def preferred_owner(key: str, workers: Sequence[str]) -> str | None:
    """The worker that should own ``key`` (``None`` without workers)."""
    if not workers:
        return None
    return max(workers, key=lambda worker: (_score(key, worker), worker))
