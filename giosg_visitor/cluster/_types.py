"""Values of the cluster mode: leases, deliveries, counters, and its two errors."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, final

import attrs

from giosg_visitor.errors import GiosgError
from giosg_visitor.models import Message


__all__ = ["ClusterStats", "Delivery", "DeliveryLostError", "Lease", "LeaseLostError"]


class LeaseLostError(GiosgError):
    """This worker no longer owns the visitor: its fencing token was refused.

    Raised inside the cluster machinery when a worker that lost its lease (it paused past
    it, or could not reach Redis to renew it) tries to act as the visitor's owner. The
    worker then drops the visitor's socket; the new owner carries on.
    """


class DeliveryLostError(GiosgError):
    """An acknowledgement was refused: another worker took over this delivery.

    The worker that received the delivery held it longer than the redelivery threshold
    (or was presumed dead), so another worker claimed it and handles it; or the message
    was already acknowledged. Either way the message counts as acknowledged once, by
    the other worker. Do not forward it again.
    """


@attrs.frozen(kw_only=True)
class Lease:
    """Ownership of one visitor: ``token`` is ``<worker id>|<fencing number>``."""

    key: str
    token: str

    @property
    def fence(self) -> int:
        """The fencing number: every new lease of a visitor gets a larger one."""
        return int(self.token.rsplit("|", 1)[1])


@final
class Delivery:
    """One operator message for the app, to be settled with :meth:`ack`.

    Attributes:
        key: The visitor's key (the app's own id of its end user).
        chat_id: The chat the message belongs to.
        message: The message.
        entry_id: Its id in the delivery stream.
        redelivered: Whether another worker received it before (and died or stalled
            before acknowledging it).
    """

    __slots__ = ("_ack", "_acked", "chat_id", "entry_id", "key", "message", "redelivered")

    def __init__(
        self,
        *,
        key: str,
        chat_id: str,
        message: Message,
        entry_id: str,
        redelivered: bool,
        ack: Callable[[Delivery], Awaitable[None]],
    ) -> None:
        self.key = key
        self.chat_id = chat_id
        self.message = message
        self.entry_id = entry_id
        self.redelivered = redelivered
        self._ack = ack
        self._acked = False

    @property
    def is_acked(self) -> bool:
        """Whether :meth:`ack` succeeded."""
        return self._acked

    async def ack(self) -> None:
        """Acknowledge it: it is then never delivered again, to any worker.

        Idempotent for this object.

        Raises:
            DeliveryLostError: Another worker took this delivery over (it counts as
                acknowledged by that worker), or the message was acknowledged before.
            TransportError: Redis could not be reached; the delivery stays pending and
                is redelivered (to this or another worker) unless a retry succeeds.
        """
        if self._acked:
            return
        await self._ack(self)
        self._acked = True

    def __repr__(self) -> str:
        flag = " redelivered" if self.redelivered else ""
        return f"<Delivery key={self.key!r} chat={self.chat_id} message={self.message.id}{flag}>"


@attrs.define(kw_only=True)
class ClusterStats:
    """What this worker did in the cluster since it started.

    Attributes:
        worker_id: This worker's id in the membership set.
        members: Live workers seen at the last heartbeat.
        owned: Visitors whose socket this worker holds now.
        leases_taken: Leases this worker took.
        leases_lost: Leases it lost (renewal refused or too late, or a fenced write).
        leases_handed_over: Leases it gave back on purpose (placement moved, shutdown).
        published: Operator messages it put into the delivery stream.
        duplicates: Messages it found already published (skipped).
        delivered: Deliveries handed to the app here (redeliveries included).
        redelivered: Deliveries this worker claimed from a dead or stalled worker.
        acked: Acknowledgements that succeeded here.
        ack_refused: Acknowledgements refused (another worker took the delivery over).
        pending: Deliveries handed to the app here and not settled yet.
    """

    worker_id: str
    members: int = 0
    owned: int = 0
    leases_taken: int = 0
    leases_lost: int = 0
    leases_handed_over: int = 0
    published: int = 0
    duplicates: int = 0
    delivered: int = 0
    redelivered: int = 0
    acked: int = 0
    ack_refused: int = 0
    pending: int = 0


def message_to_json(message: Message) -> str:
    """The message as the API's JSON object (``Message.from_api`` reads it back)."""
    data: dict[str, Any] = dict(message.extra)
    data.update(
        id=message.id,
        type=message.type,
        chat_id=message.chat_id,
        created_at=_iso(message.created_at),
        sender_type=message.sender_type,
        sender_id=message.sender_id,
        sender_public_name=message.sender_public_name,
        message=message.message,
    )
    return json.dumps(data, separators=(",", ":"), default=str)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None
