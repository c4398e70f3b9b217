"""The bounded memory of which messages a stream has already yielded.

A message stream yields each message once: live notifications and the REST read-backs
after a reconnect overlap, and every id already yielded must be recognised. Remembering
every id would grow with every message of a long chat. :class:`SeenWindow` remembers the
ids of the newest ``capacity`` messages and, for those it forgets, only the newest
creation time among them (the *horizon*): a message created at or before the horizon has
been yielded already, since it is older than a message the window had to drop.

A read-back returns the chat's history; whatever in it is at or before the horizon is at
least ``capacity`` messages behind the newest one yielded, so it was yielded in its time
(from the first read-back, or live, or a later read-back). A message without a creation
time cannot be placed against the horizon; such ids are forgotten oldest first, only
once no timed id is left to drop (the API always sends ``created_at``).
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from collections.abc import Iterable
from typing import Final, final

from .models import Message


__all__ = ["DEFAULT_SEEN_CAPACITY", "SeenWindow"]

#: Message ids a stream remembers exactly (about 200 KB at most per stream).
DEFAULT_SEEN_CAPACITY: Final = 4096


@final
class SeenWindow:
    """Which messages were yielded: the newest ``capacity`` ids, plus a time horizon.

    Args:
        capacity: How many ids are remembered exactly (at least 1; default
            :data:`DEFAULT_SEEN_CAPACITY`, read when the window is made).
    """

    __slots__ = ("_capacity", "_counter", "_horizon", "_ids", "_timed", "_untimed")

    def __init__(self, capacity: int | None = None) -> None:
        if capacity is None:
            capacity = DEFAULT_SEEN_CAPACITY
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, not {capacity}")
        self._capacity = capacity
        self._ids: set[str] = set()
        self._timed: list[tuple[float, int, str]] = []
        self._untimed: deque[str] = deque()
        self._counter = itertools.count()
        self._horizon = float("-inf")

    def __len__(self) -> int:
        """How many ids are remembered exactly (never more than ``capacity``)."""
        return len(self._ids)

    @property
    def capacity(self) -> int:
        """The most ids remembered exactly."""
        return self._capacity

    def __contains__(self, message: object) -> bool:
        """Whether ``message`` was yielded (by id, or created at or before the horizon)."""
        if not isinstance(message, Message):
            return False
        if message.id in self._ids:
            return True
        created = message.created_at
        return created is not None and created.timestamp() <= self._horizon

    def add(self, message: Message) -> None:
        """Remember ``message`` as yielded (dropping the oldest ids beyond ``capacity``)."""
        if message in self:
            return
        self._ids.add(message.id)
        if message.created_at is None:
            self._untimed.append(message.id)
        else:
            stamp = message.created_at.timestamp()
            heapq.heappush(self._timed, (stamp, next(self._counter), message.id))
        while len(self._ids) > self._capacity:
            if self._timed:
                stamp, _, old = heapq.heappop(self._timed)
                self._horizon = max(self._horizon, stamp)
            else:
                old = self._untimed.popleft()
            self._ids.discard(old)

    def update(self, messages: Iterable[Message]) -> None:
        """:meth:`add` each of ``messages``."""
        for message in messages:
            self.add(message)
