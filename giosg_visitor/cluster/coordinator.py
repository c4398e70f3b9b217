"""``RedisCoordinator``: the Redis side of the cluster mode (leases, membership, delivery).

Every key lives under one hash tag, ``<prefix>{cluster}:...``, so the Lua scripts that
touch several keys at once (a fenced publish checks the lease, the dedupe set, the stream
and the cursor together) also run on a Redis Cluster. The price is that one cluster's
coordination load goes to one shard; run separate prefixes to spread several clusters.

Keys (``P`` = ``<prefix>{cluster}:``):

* ``P members``: sorted set, worker id -> last heartbeat (Redis time, ms).
* ``P epoch``: counter bumped whenever placement may have changed (a join, a leave, a
  released lease, a newly active visitor), so workers react at once instead of waiting
  for their next tick.
* ``P active``: sorted set, visitor key -> last activity (a chat started).
* ``P lease:<key>``: ``<worker>|<fence>``, with a TTL of ``lease_seconds``.
* ``P fence:<key>``: the visitor's fencing counter (``INCR`` on every new lease).
* ``P cursor:<key>``: hash, chat id -> id of the last message published for that chat.
* ``P stream``: the delivery stream; consumer group ``giosg-visitor``.
* ``P dedupe`` / ``P acked``: sorted sets of message ids published / acknowledged,
  trimmed by age (``dedupe_seconds``) and by size (``dedupe_max``).
* ``P stats``: hash of cluster-wide counters.
"""

from __future__ import annotations

import math
import os
import socket
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, final

import attrs

from giosg_visitor.errors import ProtocolError
from giosg_visitor.models import Message
from giosg_visitor.stores.base import check_key

from . import _scripts
from ._redis import coordinator_link
from ._types import Lease, LeaseLostError, message_to_json


if TYPE_CHECKING:
    import redis
    import redis.asyncio


__all__ = ["ClusterState", "RedisCoordinator", "StreamEntry"]

GROUP: Final = "giosg-visitor"


@attrs.frozen(kw_only=True)
class StreamEntry:
    """One entry of the delivery stream as read from Redis."""

    entry_id: str
    key: str
    chat_id: str
    message: Message


@attrs.frozen(kw_only=True)
class ClusterState:
    """A cluster's state as stored in Redis (no secrets, no visitor keys)."""

    members: dict[str, float]
    active: int
    leases: dict[str, int]
    stream_length: int
    pending: int
    consumers: dict[str, int]
    counters: dict[str, int]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _positive(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a positive number")
    if value <= 0:
        raise ValueError(f"{name} must be a positive number")
    return float(value)


def default_worker_id() -> str:
    """``<host>-<pid>-<random>``: unique per process run, readable in the CLI."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


@final
class RedisCoordinator:
    """Coordinates the workers of a cluster through Redis.

    Pass it to :class:`~giosg_visitor.VisitorPool` as ``coordinator=``: the pool then owns
    the socket of each *active* visitor on exactly one worker (a lease with a fencing
    token), moves ownership when workers join or leave, and delivers operator messages
    through :meth:`VisitorPool.inbound() <giosg_visitor.VisitorPool.inbound>` exactly once
    per acknowledgement across the cluster.

    Like :class:`~giosg_visitor.RedisStore`, it takes a URL (it then makes its own
    clients: ``redis.asyncio`` on asyncio, the synchronous client in worker threads on
    trio) or a client you own: a ``redis.asyncio.Redis`` (asyncio only) or a
    ``redis.Redis`` (both backends). Give each pool its own coordinator: the pool closes
    it (the clients it made) when the pool exits.

    Args:
        url_or_client: A ``redis://``, ``rediss://`` or ``unix://`` URL, or a client.
        worker_id: This worker's name in the membership set (default:
            ``<host>-<pid>-<random>``, new on every start; a fixed id must never be used
            by two live processes at once).
        lease_seconds: How long ownership outlives a worker that died. Owners renew at a
            third of it and stop acting as owner at two thirds without a renewal.
        prefix: Prepended to every Redis key.
        redeliver_after: Seconds a delivery may stay unacknowledged before another worker
            takes it over (default: three leases). Keep it above your slowest handler.
        dedupe_seconds: How long a message id is remembered as published / acknowledged.
        dedupe_max: At most this many ids are remembered (the oldest go first).
        idle_seconds: How long a visitor without an open chat stays active (its socket
            owned) after its last chat started.
        socket_timeout: Connect and command timeout for a client made from a URL.

    Raises:
        ImportError: redis-py is not installed.
        TypeError: ``url_or_client`` is neither a URL nor a redis-py client.
        ValueError: A URL or an option is invalid.
    """

    def __init__(
        self,
        url_or_client: str | redis.asyncio.Redis | redis.Redis,
        *,
        worker_id: str | None = None,
        lease_seconds: float = 10.0,
        prefix: str = "giosg:",
        redeliver_after: float | None = None,
        dedupe_seconds: float = 24 * 3600.0,
        dedupe_max: int = 1_000_000,
        idle_seconds: float = 300.0,
        socket_timeout: float = 5.0,
    ) -> None:
        if not isinstance(prefix, str):
            raise TypeError(f"prefix must be a str, not {type(prefix).__name__}")
        if worker_id is not None and (not isinstance(worker_id, str) or not worker_id):
            raise ValueError("worker_id must be a non-empty string")
        if worker_id is not None and "|" in worker_id:
            raise ValueError("worker_id must not contain '|'")
        self.lease_seconds = _positive("lease_seconds", lease_seconds)
        self.redeliver_after = _positive(
            "redeliver_after",
            3 * self.lease_seconds if redeliver_after is None else redeliver_after,
        )
        self.dedupe_seconds = _positive("dedupe_seconds", dedupe_seconds)
        self.idle_seconds = _positive("idle_seconds", idle_seconds)
        if isinstance(dedupe_max, bool) or not isinstance(dedupe_max, int) or dedupe_max < 1:
            raise ValueError("dedupe_max must be a positive integer")
        self.dedupe_max = dedupe_max
        self.prefix = prefix
        self.worker_id = worker_id or default_worker_id()
        self._link = coordinator_link(
            url_or_client, socket_timeout=_positive("socket_timeout", socket_timeout)
        )
        self._lease_ms = max(1, math.ceil(self.lease_seconds * 1000))
        self._base = f"{prefix}{{cluster}}:"
        self._group_ready = False

    def __repr__(self) -> str:
        return (
            f"<RedisCoordinator {self._link.target} prefix={self.prefix!r} "
            f"worker={self.worker_id!r}>"
        )

    async def aclose(self) -> None:
        """Close the clients the coordinator made (a client passed in stays open)."""
        await self._link.aclose()

    # Key names ----------------------------------------------------------------------------

    def redis_key(self, name: str, visitor_key: str | None = None) -> str:
        """The Redis key ``name`` (of ``visitor_key``): all share the ``{cluster}`` tag."""
        if visitor_key is None:
            return f"{self._base}{name}"
        return f"{self._base}{name}:{check_key(visitor_key)}"

    # Membership -----------------------------------------------------------------------------

    async def heartbeat(self, *, leaving: bool = False) -> tuple[int, list[str]]:
        """Record this worker as alive (or leaving); returns (epoch, live members)."""
        reply = await self._link.script(
            _scripts.MEMBERSHIP,
            [self.redis_key("members"), self.redis_key("epoch")],
            [self.worker_id, self._lease_ms, "leave" if leaving else "beat"],
        )
        return int(_text(reply[0])), [_text(member) for member in reply[1:]]

    async def epoch(self) -> int:
        """The placement epoch (bumped on every change that may move a visitor)."""
        value = await self._link.execute("GET", self.redis_key("epoch"))
        return int(_text(value)) if value is not None else 0

    # Activity -------------------------------------------------------------------------------

    async def activate(self, key: str) -> None:
        """Mark ``key`` active: some worker must own its socket."""
        await self._link.script(
            _scripts.ACTIVATE, [self.redis_key("active"), self.redis_key("epoch")], [check_key(key)]
        )

    async def active(self) -> dict[str, float]:
        """Every active key with its last activity (Redis time, ms)."""
        reply = await self._link.execute("ZRANGE", self.redis_key("active"), 0, -1, "WITHSCORES")
        return _pairs(reply)

    async def deactivate(self, lease: Lease) -> bool:
        """End ``lease.key``'s activity if it has been idle long enough; frees the lease."""
        result = await self._link.script(
            _scripts.DEACTIVATE,
            [
                self.redis_key("lease", lease.key),
                self.redis_key("active"),
                self.redis_key("epoch"),
                self.redis_key("cursor", lease.key),
            ],
            [lease.token, lease.key, math.ceil(self.idle_seconds * 1000)],
        )
        if int(result) == -1:
            raise LeaseLostError(f"the lease of visitor {lease.key!r} is no longer ours")
        return int(result) == 1

    # Leases -----------------------------------------------------------------------------------

    async def claim(self, key: str) -> Lease | None:
        """Take ``key``'s lease if nobody holds it (with a new, larger fencing number)."""
        return (await self.claim_many([key]))[0]

    async def claim_many(self, keys: Sequence[str]) -> list[Lease | None]:
        """:meth:`claim` for many keys in one round trip (one result per key)."""
        if not keys:
            return []
        names: list[str] = []
        for key in keys:
            names += [self.redis_key("lease", key), self.redis_key("fence", key)]
        reply = await self._link.script(
            _scripts.CLAIM, [*names, self.redis_key("stats")], [self.worker_id, self._lease_ms]
        )
        return [
            Lease(key=key, token=_text(token)) if token else None
            for key, token in zip(keys, reply, strict=True)
        ]

    async def renew(self, leases: Sequence[Lease]) -> list[bool]:
        """Extend each lease that is still ours; ``False`` for each that is not."""
        if not leases:
            return []
        reply = await self._link.script(
            _scripts.RENEW,
            [self.redis_key("lease", lease.key) for lease in leases],
            [self._lease_ms, *(lease.token for lease in leases)],
        )
        return [int(value) == 1 for value in reply]

    async def release(self, lease: Lease, *, counter: str = "leases_handed_over") -> bool:
        """Give the lease back now (if still ours) so another worker takes over at once."""
        result = await self._link.script(
            _scripts.RELEASE,
            [
                self.redis_key("lease", lease.key),
                self.redis_key("epoch"),
                self.redis_key("stats"),
            ],
            [lease.token, counter],
        )
        return int(result) == 1

    async def holder(self, key: str) -> str | None:
        """The token of whoever holds ``key``'s lease now."""
        value = await self._link.execute("GET", self.redis_key("lease", key))
        return _text(value) if value is not None else None

    # Publishing (owner side) -------------------------------------------------------------------

    async def cursor(self, key: str, chat_id: str) -> str | None:
        """The id of the last message of ``chat_id`` that entered the delivery stream."""
        value = await self._link.execute("HGET", self.redis_key("cursor", key), chat_id)
        return _text(value) if value is not None else None

    async def publish(self, lease: Lease, chat_id: str, message: Message) -> bool:
        """Put ``message`` into the delivery stream once (fenced, deduplicated by id).

        Returns:
            ``True`` if it was added, ``False`` if it had been published before.

        Raises:
            LeaseLostError: ``lease`` is no longer the visitor's current lease.
        """
        result = int(
            await self._link.script(
                _scripts.PUBLISH,
                [
                    self.redis_key("lease", lease.key),
                    self.redis_key("dedupe"),
                    self.redis_key("stream"),
                    self.redis_key("cursor", lease.key),
                    self.redis_key("stats"),
                ],
                [
                    lease.token,
                    message.id,
                    math.ceil(self.dedupe_seconds * 1000),
                    self.dedupe_max,
                    chat_id,
                    lease.key,
                    message_to_json(message),
                ],
            )
        )
        if result == -1:
            raise LeaseLostError(
                f"fencing token {lease.fence} of visitor {lease.key!r} is stale: not published"
            )
        return result == 1

    # Delivery (consumer side) ----------------------------------------------------------------

    async def ensure_group(self) -> None:
        """Create the stream and its consumer group if missing."""
        if self._group_ready:
            return
        try:
            await self._link.execute(
                "XGROUP", "CREATE", self.redis_key("stream"), GROUP, "0", "MKSTREAM"
            )
        except ProtocolError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._group_ready = True

    async def read(self, *, count: int, block_ms: int) -> list[StreamEntry]:
        """New entries for this worker (``XREADGROUP``), waiting up to ``block_ms``."""
        reply = await self._link.execute(
            "XREADGROUP",
            "GROUP",
            GROUP,
            self.worker_id,
            "COUNT",
            count,
            "BLOCK",
            block_ms,
            "STREAMS",
            self.redis_key("stream"),
            ">",
        )
        if not reply:
            return []
        if isinstance(reply, Mapping):  # RESP3
            batches: Iterable[Any] = reply.values()
        else:
            batches = (batch[1] for batch in reply)
        return [entry for batch in batches for entry in self._entries(batch)]

    async def autoclaim(self, *, count: int = 100) -> list[StreamEntry]:
        """Take over entries idle longer than ``redeliver_after`` (``XAUTOCLAIM``)."""
        claimed: list[StreamEntry] = []
        start = "0-0"
        for _ in range(10):  # bounded: at most 10 pages per call
            reply = await self._link.execute(
                "XAUTOCLAIM",
                self.redis_key("stream"),
                GROUP,
                self.worker_id,
                math.ceil(self.redeliver_after * 1000),
                start,
                "COUNT",
                count,
            )
            start = _text(reply[0])
            claimed.extend(self._entries(reply[1]))
            if start == "0-0":
                break
        return claimed

    async def ack(self, entry_id: str, message_id: str) -> int:
        """Acknowledge an entry if it is still pending for this worker.

        Returns 1 (acknowledged), 0 (the message had been acknowledged before) or -1
        (the entry is not pending for this worker any more).
        """
        result = await self._link.script(
            _scripts.ACK,
            [self.redis_key("stream"), self.redis_key("acked"), self.redis_key("stats")],
            [
                GROUP,
                entry_id,
                self.worker_id,
                message_id,
                math.ceil(self.dedupe_seconds * 1000),
                self.dedupe_max,
            ],
        )
        return int(result)

    async def acked(self, message_ids: Sequence[str]) -> list[bool]:
        """Whether each message was acknowledged already (within the dedupe bounds)."""
        if not message_ids:
            return []
        reply = await self._link.execute("ZMSCORE", self.redis_key("acked"), *message_ids)
        return [value is not None for value in reply]

    async def drop(self, entry_id: str) -> None:
        """Acknowledge an entry without delivering it (its message was acknowledged)."""
        await self._link.execute("XACK", self.redis_key("stream"), GROUP, entry_id)

    async def give_back(self, entry_ids: Sequence[str]) -> None:
        """Make entries pending here claimable by others at once (clean shutdown)."""
        if not entry_ids:
            return
        await self._link.script(
            _scripts.GIVE_BACK,
            [self.redis_key("stream")],
            [GROUP, self.worker_id, math.ceil(self.redeliver_after * 1000) + 1, *entry_ids],
        )

    async def trim(self) -> None:
        """Drop stream entries every consumer is done with (acked and delivered)."""
        stream = self.redis_key("stream")
        groups = await self._link.execute("XINFO", "GROUPS", stream)
        last_delivered: str | None = None
        for group in groups or ():
            info = _info(group)
            if info.get("name") == GROUP:
                last_delivered = info.get("last-delivered-id")
        if last_delivered is None:
            return
        summary = await self._link.execute("XPENDING", stream, GROUP)
        oldest = _pending_min(summary)
        # Entries at or below last_delivered that are not pending are done; an undelivered
        # one is above last_delivered. The bound only ever grows, so a stale read is safe.
        ms, seq = (int(part) for part in last_delivered.split("-"))
        bound = f"{ms}-{seq + 1}"
        if oldest is not None and _id_key(oldest) < _id_key(bound):
            bound = oldest
        await self._link.execute("XTRIM", stream, "MINID", bound)

    # Observability -----------------------------------------------------------------------------

    async def counters(self) -> dict[str, int]:
        """The cluster-wide counters."""
        reply = await self._link.execute("HGETALL", self.redis_key("stats"))
        items = reply.items() if isinstance(reply, Mapping) else _chunks(reply)
        return {_text(k): int(_text(v)) for k, v in items}

    async def state(self) -> ClusterState:
        """A snapshot of the cluster as stored in Redis."""
        now_reply = await self._link.execute("TIME")
        now_ms = int(_text(now_reply[0])) * 1000 + int(_text(now_reply[1])) // 1000
        members = await self._link.execute("ZRANGE", self.redis_key("members"), 0, -1, "WITHSCORES")
        ages = {member: (now_ms - score) / 1000 for member, score in _pairs(members).items()}
        active = await self.active()
        leases: dict[str, int] = {}
        for key in active:
            holder = await self.holder(key)
            if holder is not None:
                worker = holder.rsplit("|", 1)[0]
                leases[worker] = leases.get(worker, 0) + 1
        stream = self.redis_key("stream")
        length = int(await self._link.execute("XLEN", stream))
        pending = 0
        consumers: dict[str, int] = {}
        if length or await self._link.execute("EXISTS", stream):
            try:
                summary = await self._link.execute("XPENDING", stream, GROUP)
            except ProtocolError:
                summary = None
            pending, consumers = _pending_summary(summary)
        return ClusterState(
            members=ages,
            active=len(active),
            leases=leases,
            stream_length=length,
            pending=pending,
            consumers=consumers,
            counters=await self.counters(),
        )

    def _entries(self, raw: Any) -> list[StreamEntry]:
        entries: list[StreamEntry] = []
        for item in raw or ():
            entry_id, fields = item[0], item[1]
            if fields is None:
                continue  # deleted while pending
            if not isinstance(fields, Mapping):
                fields = dict(_chunks(fields))
            values = {_text(k): _text(v) for k, v in fields.items()}
            try:
                message = Message.from_api(_json(values["m"]), chat_id=values["chat"])
                entries.append(
                    StreamEntry(
                        entry_id=_text(entry_id),
                        key=values["key"],
                        chat_id=values["chat"],
                        message=message,
                    )
                )
            except (KeyError, ProtocolError, ValueError):
                raise ProtocolError(f"malformed delivery stream entry {_text(entry_id)}") from None
        return entries


def _json(text: str) -> Any:
    import json

    return json.loads(text)


def _chunks(flat: Any) -> list[tuple[Any, Any]]:
    items = list(flat or ())
    return list(zip(items[0::2], items[1::2], strict=True))


def _pairs(reply: Any) -> dict[str, float]:
    if not reply:
        return {}
    first = reply[0]
    if isinstance(first, list | tuple):  # redis-py parsed WITHSCORES into pairs
        return {_text(member): float(score) for member, score in reply}
    return {_text(member): float(_text(score)) for member, score in _chunks(reply)}


def _info(group: Any) -> dict[str, Any]:
    if isinstance(group, Mapping):
        return {_text(k): _text(v) if isinstance(v, bytes) else v for k, v in group.items()}
    return {_text(k): _text(v) if isinstance(v, bytes) else v for k, v in _chunks(group)}


def _pending_min(summary: Any) -> str | None:
    if isinstance(summary, Mapping):
        value = summary.get("min") or summary.get(b"min")
        pending = summary.get("pending") or summary.get(b"pending") or 0
        return _text(value) if value and int(pending) else None
    if summary and int(summary[0]) and summary[1] is not None:
        return _text(summary[1])
    return None


def _pending_summary(summary: Any) -> tuple[int, dict[str, int]]:
    if not summary:
        return 0, {}
    if isinstance(summary, Mapping):
        pending = int(summary.get("pending") or summary.get(b"pending") or 0)
        raw = summary.get("consumers") or summary.get(b"consumers") or []
        consumers: dict[str, int] = {}
        for consumer in raw:
            if isinstance(consumer, Mapping):
                name = consumer.get("name") or consumer.get(b"name")
                count = consumer.get("pending") or consumer.get(b"pending") or 0
                consumers[_text(name)] = int(_text(count) if isinstance(count, bytes) else count)
            else:
                consumers[_text(consumer[0])] = int(_text(consumer[1]))
        return pending, consumers
    pending = int(summary[0])
    return pending, {_text(name): int(_text(count)) for name, count in summary[3] or ()}


def _id_key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)
