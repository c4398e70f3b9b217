"""The channel table: which channels are wanted, what the server answered, what to send next.

Sans-I/O and clock-free, like :mod:`giosg_visitor.realtime.protocol`: events go in
(``opened``, ``socket_ended``, an ack, a refusal, a notification), decisions come out
(work for the writer, frames written into a :class:`RealtimeProtocol`, calls on the
subscribers' delivery buffers). The connection shell feeds it from its read loop and
writer; tests step it by hand.

The rules it keeps:

* **Pipelined subscribe.** A new channel queues one ``sub`` while a socket is open; a
  second subscriber to a wanted channel sends nothing (and is confirmed at once when the
  channel already is).
* **Acks count only for the current socket's queries.** An answer to a query of an earlier
  socket, or of a channel given up since, changes nothing.
* **Retry once on refusal.** A refused ``sub`` is like an HTTP 401: the token expired in
  flight, was revoked, or the server's clock runs ahead. The channel is queued for one
  ``retry`` carrying the refused token; the writer renews that token before sending (one
  renewal serves every refused channel). A second refusal on the same socket, a refusal
  of a token the owner calls fresh, or a retry that could only resend the refused token
  ends the channel's subscribers with a :class:`~giosg_visitor.errors.SubscriptionError`.
* **Reauthorize.** Every wanted channel is sent again with the freshest token; the
  reauthorization is done when every ``sub`` was answered (or the socket ended).
* **Resubscribe on open.** A new socket has no subscriptions: every wanted channel is
  queued in one batch; a channel confirmed on an earlier socket gets a
  :class:`~giosg_visitor.realtime.events.Resubscribed` marker when confirmed again.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Iterable
from typing import Final, Literal, Protocol, final

import attrs

from giosg_visitor._redact import redact
from giosg_visitor._secret import Secret
from giosg_visitor.errors import SubscriptionError

from .events import Change, Gap, Resubscribed, SubscribeAck, SubscribeFailed
from .protocol import ProtocolStats, RealtimeProtocol


__all__ = ["ChannelTable", "ConnectionStats", "Delivery", "Op", "Reauth", "Sink"]

logger = logging.getLogger("giosg_visitor.realtime")


class Delivery(enum.Enum):
    """What a subscriber's buffer did with one notification."""

    DELIVERED = "delivered"
    DROPPED = "dropped"
    #: Dropped, and a new Gap marker was queued.
    GAP = "gap"


DELIVERED: Final = Delivery.DELIVERED


class Sink(Protocol):
    """A subscriber's delivery buffer, as the table drives it (never blocks)."""

    def _deliver(self, event: Change) -> Delivery: ...

    def _mark(self, marker: Resubscribed | Gap) -> None: ...

    def _set_subscribed(self, value: bool) -> None: ...

    def _finish(self, error: BaseException | None) -> None: ...

    def _close(self) -> None: ...


@final
@attrs.define(kw_only=True)
class ConnectionStats:
    """Counters of one :class:`~giosg_visitor.realtime.RealtimeConnection` (all its sockets).

    Attributes:
        opens: Sockets opened.
        drops: Sockets lost or attempts failed.
        binary_frames: Binary frames skipped.
        dropped_notifications: Notifications dropped because a subscription's buffer was full.
        refusals: ``sub`` messages the server refused.
        refusals_recovered: Refused channels confirmed again after a token renewal.
        unrouted: Notifications for channels nobody is subscribed to.
        protocol: The protocol's parse counters.
    """

    opens: int = 0
    drops: int = 0
    binary_frames: int = 0
    dropped_notifications: int = 0
    refusals: int = 0
    refusals_recovered: int = 0
    unrouted: int = 0
    protocol: ProtocolStats = attrs.field(factory=ProtocolStats)


@attrs.define(kw_only=True)
class Channel:
    """Server-side subscription state of one channel (shared by its subscribers)."""

    name: str
    subscribers: list[Sink] = attrs.field(factory=list)
    #: Query ids of the ``sub`` messages sent for this channel on the current socket.
    queries: set[int] = attrs.field(factory=set)
    acked: bool = False
    confirmed_before: bool = False
    #: A refused ``sub`` was retried (with a renewed token) on this socket.
    retried: bool = False
    #: Refusals since the channel was last confirmed (recovered by the next confirmation).
    pending_refusals: int = 0


@attrs.define(kw_only=True, eq=False)
class Reauth:
    """One reauthorization waiting for its answers; ``on_done`` is called once."""

    unsent: int
    on_done: Callable[[], None]
    pending: set[int] = attrs.field(factory=set)
    done: bool = False

    def check(self) -> bool:
        """Whether every ``sub`` was sent and answered (calls ``on_done`` the first time)."""
        if not self.done and self.unsent <= 0 and not self.pending:
            self.finish()
        return self.done

    def finish(self) -> None:
        """Done now, answered or not (the socket ended, the connection closed)."""
        if not self.done:
            self.done = True
            self.on_done()


@attrs.frozen(kw_only=True)
class Op:
    """Work for the writer."""

    kind: Literal["sub", "unsub", "reauth", "retry"]
    channel: str
    reauth: Reauth | None = attrs.field(default=None, eq=False)
    #: The refused token a retry replaces.
    old_token: Secret | None = attrs.field(default=None, eq=False, repr=False)
    #: The server's reason for the refusal a retry answers.
    reason: str | None = attrs.field(default=None, eq=False, repr=False)


@final
class ChannelTable:
    """Channels, query ids and the subscribe rules of one connection (see the module).

    Args:
        stats: Where the counters go (the connection's).
    """

    __slots__ = ("_channels", "_is_open", "_outbox", "_query_tokens", "_reauths", "_stats")

    def __init__(self, *, stats: ConnectionStats | None = None) -> None:
        self._stats = stats if stats is not None else ConnectionStats()
        self._channels: dict[str, Channel] = {}
        self._outbox: list[Op] = []
        self._reauths: list[Reauth] = []
        self._query_tokens: dict[int, Secret] = {}
        self._is_open = False

    def __len__(self) -> int:
        return len(self._channels)

    def __repr__(self) -> str:
        return f"<ChannelTable channels={len(self._channels)} open={self._is_open}>"

    @property
    def is_open(self) -> bool:
        """Whether a socket is open (work is queued only then)."""
        return self._is_open

    def names(self) -> list[str]:
        """The wanted channels, in subscription order."""
        return list(self._channels)

    def get(self, name: str) -> Channel | None:
        """The channel's state, if it is wanted."""
        return self._channels.get(name)

    @property
    def has_work(self) -> bool:
        """Whether the writer has something to send."""
        return self._is_open and bool(self._outbox)

    # Consumers.

    def add(self, name: str, sink: Sink) -> None:
        """A subscriber wants ``name``: queue a ``sub`` when the channel is new."""
        channel = self._channels.get(name)
        if channel is None:
            channel = self._channels[name] = Channel(name=name)
            if self._is_open:
                self._outbox.append(Op(kind="sub", channel=name))
        elif channel.acked:
            sink._set_subscribed(True)
        channel.subscribers.append(sink)

    def remove(self, name: str, sink: Sink) -> None:
        """A subscriber left: queue an ``unsub`` when it was the channel's last one."""
        channel = self._channels.get(name)
        if channel is None or sink not in channel.subscribers:
            return
        channel.subscribers.remove(sink)
        if channel.subscribers:
            return
        del self._channels[name]
        if self._is_open and channel.queries:
            self._outbox.append(Op(kind="unsub", channel=name))

    def reauthorize(self, on_done: Callable[[], None]) -> Reauth | None:
        """Queue a ``reauth`` of every channel; ``None`` when there is nothing to do."""
        if not self._is_open or not self._channels:
            return None
        reauth = Reauth(unsent=len(self._channels), on_done=on_done)
        self._reauths.append(reauth)
        self._outbox.extend(
            Op(kind="reauth", channel=name, reauth=reauth) for name in self._channels
        )
        return reauth

    # The writer.

    def take(self) -> list[Op]:
        """Everything queued for the writer (the queue is then empty)."""
        ops, self._outbox = self._outbox, []
        return ops

    @staticmethod
    def needs_token(ops: Iterable[Op]) -> bool:
        """Whether writing ``ops`` needs a token (anything but ``unsub``)."""
        return any(op.kind != "unsub" for op in ops)

    @staticmethod
    def refused_tokens(ops: Iterable[Op]) -> set[Secret]:
        """The tokens the server refused, which the retries among ``ops`` replace."""
        return {op.old_token for op in ops if op.kind == "retry" and op.old_token is not None}

    def write(self, ops: Iterable[Op], token: Secret | None, protocol: RealtimeProtocol) -> None:
        """Write ``ops`` into ``protocol`` with ``token`` (needed unless all are ``unsub``)."""
        for op in ops:
            channel = self._channels.get(op.channel)
            if op.kind == "unsub":
                if channel is None:
                    protocol.send_unsubscribe(op.channel)
                continue
            if token is None:
                raise ValueError("a token is needed to write a sub")
            if channel is None:
                if op.reauth is not None:
                    op.reauth.unsent -= 1
                    self._check_reauth(op.reauth)
                continue
            if op.kind == "retry" and op.old_token == token:
                # Same token as the refused sub (no renewal could replace it): retrying
                # cannot help.
                self._refuse(channel, op.reason)
                continue
            [query] = protocol.send_subscribe([op.channel], token.reveal())
            channel.queries.add(query)
            self._query_tokens[query] = token
            if op.reauth is not None:
                op.reauth.unsent -= 1
                op.reauth.pending.add(query)

    # The read loop.

    def route(self, change: Change) -> Gap | None:
        """Deliver a notification to its channel's subscribers.

        Returns:
            A ``Gap`` for the connection's event stream when a full buffer started one.
        """
        channel = self._channels.get(change.channel)
        if channel is None:
            self._stats.unrouted += 1
            return None
        gap = None
        for subscriber in channel.subscribers:
            outcome = subscriber._deliver(change)
            if outcome is not DELIVERED:
                self._stats.dropped_notifications += 1
                if outcome is Delivery.GAP:
                    gap = Gap(channel=channel.name, reason="overflow")
        return gap

    def acked(self, event: SubscribeAck) -> bool:
        """The server confirmed a ``sub``; whether it was one of this socket's for the channel."""
        self._query_tokens.pop(event.query, None)
        self._answer_reauth(event.query)
        channel = self._channels.get(event.channel)
        if channel is None or event.query not in channel.queries:
            return False
        if channel.pending_refusals:
            self._stats.refusals_recovered += channel.pending_refusals
            channel.pending_refusals = 0
            logger.info("subscription to %r recovered with a renewed token", channel.name)
        if channel.acked:
            return True
        channel.acked = True
        channel.retried = False
        for subscriber in channel.subscribers:
            if channel.confirmed_before:
                subscriber._mark(Resubscribed(channel=channel.name))
            subscriber._set_subscribed(True)
        channel.confirmed_before = True
        return True

    def refused(self, event: SubscribeFailed, is_fresh: Callable[[Secret], bool]) -> bool:
        """The server refused a ``sub``: retry once or give the channel up.

        Args:
            event: The refusal.
            is_fresh: Whether a token was issued too recently for a renewal to help.

        Returns:
            Whether a retry was queued (the writer has work).
        """
        token = self._query_tokens.pop(event.query, None)
        self._answer_reauth(event.query)
        channel = self._channels.get(event.channel)
        if channel is None or event.query not in channel.queries:
            return False
        self._stats.refusals += 1
        if not channel.retried and token is not None and not is_fresh(token):
            channel.retried = True
            channel.pending_refusals += 1
            self._outbox.append(
                Op(kind="retry", channel=channel.name, old_token=token, reason=event.reason)
            )
            return True
        self._refuse(channel, event.reason)
        return False

    # Sockets.

    def opened(self) -> int:
        """A socket opened: queue every wanted channel in one batch; how many."""
        self._is_open = True
        self._outbox = [Op(kind="sub", channel=name) for name in self._channels]
        for channel in self._channels.values():
            channel.acked = False
            channel.retried = False
            channel.queries.clear()
        return len(self._outbox)

    def socket_ended(self) -> None:
        """The socket is gone: nothing is confirmed, nothing queued, reauthorizations end."""
        self._is_open = False
        self._outbox = []
        self._query_tokens.clear()
        for channel in self._channels.values():
            channel.acked = False
            channel.queries.clear()
            for subscriber in channel.subscribers:
                subscriber._set_subscribed(False)
        # The next socket subscribes with the freshest token anyway.
        self._end_reauths()

    def close(self, error: BaseException | None, *, consumers_gone: bool = False) -> None:
        """The connection ended: end every subscriber (with ``error``) and forget all.

        Args:
            error: The connection's fatal error, or ``None`` for a normal close.
            consumers_gone: The owner left: also drop what is buffered.
        """
        self._is_open = False
        for channel in self._channels.values():
            for subscriber in channel.subscribers:
                subscriber._finish(error)
                if consumers_gone:
                    subscriber._close()
        self._channels.clear()
        self._outbox = []
        self._end_reauths()

    # Internals.

    def _refuse(self, channel: Channel, reason: str | None) -> None:
        detail = f": {redact(reason)}" if reason else ""
        error = SubscriptionError(
            f"the server refused the subscription to {channel.name!r}{detail}",
            channel=channel.name,
        )
        self._channels.pop(channel.name, None)
        for subscriber in channel.subscribers:
            subscriber._finish(error)
        logger.info("subscription refused for channel %r", channel.name)

    def _answer_reauth(self, query: int) -> None:
        for reauth in list(self._reauths):
            if query in reauth.pending:
                reauth.pending.discard(query)
                self._check_reauth(reauth)

    def _check_reauth(self, reauth: Reauth) -> None:
        if reauth.check() and reauth in self._reauths:
            self._reauths.remove(reauth)

    def _end_reauths(self) -> None:
        reauths, self._reauths = self._reauths, []
        for reauth in reauths:
            reauth.finish()
