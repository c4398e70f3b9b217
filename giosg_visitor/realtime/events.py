"""Events of the real-time layer: what the protocol parses and what the connection reports.

Three families, all frozen attrs values:

* **Protocol events** come out of :meth:`RealtimeProtocol.events_received
  <giosg_visitor.realtime.protocol.RealtimeProtocol.events_received>`: :class:`Opened`,
  :class:`Heartbeat`, :class:`Closed`, :class:`SubscribeAck`, :class:`SubscribeFailed`,
  :class:`UnsubscribeAck` and :class:`Change`.
* **Subscription events** are what ``async for event in subscription`` yields:
  :class:`Change` for each notification, and the markers :class:`Resubscribed` (the
  channel was subscribed again on a new connection; notifications published while the
  socket was down are missing) and :class:`Gap` (the SDK dropped notifications because the
  consumer fell behind). After either marker, backfill the channel from the REST API.
* **Connection events** are what :meth:`RealtimeConnection.events
  <giosg_visitor.realtime.connection.RealtimeConnection.events>` yields:
  :class:`Connected`, :class:`Disconnected`, :class:`Reconnected` and :class:`Gap`.

"Closed" and "disconnected" each name one thing, on one layer:

* :class:`Closed` is the *server's* SockJS close frame on one socket (a protocol event;
  the connection then drops that socket);
* :class:`Disconnected` is the *connection* losing a socket or failing an attempt (it
  retries unless ``retry_in`` is ``None``);
* ``ConnectionState.CLOSED`` is the *connection* being over for good (owner left or a
  fatal error); nothing follows it.

No event ever carries a token.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, TypeAlias, final

import attrs


__all__ = [
    "Action",
    "Change",
    "Closed",
    "Connected",
    "ConnectionEvent",
    "Disconnected",
    "Gap",
    "Heartbeat",
    "Opened",
    "ProtocolEvent",
    "Reconnected",
    "Resubscribed",
    "SubscribeAck",
    "SubscribeFailed",
    "SubscriptionEvent",
    "UnsubscribeAck",
]

#: The three documented notification actions.
Action: TypeAlias = Literal["added", "changed", "removed"]


# Protocol events ------------------------------------------------------------------------


@final
@attrs.frozen(kw_only=True)
class Opened:
    """The SockJS open frame (``o``) arrived: the session is ready."""


@final
@attrs.frozen(kw_only=True)
class Heartbeat:
    """A SockJS heartbeat frame (``h``) arrived. It only proves the link is alive."""


@final
@attrs.frozen(kw_only=True)
class Closed:
    """The server closed the SockJS session with ``c[code, "reason"]``.

    Attributes:
        code: The close code the server gave.
        reason: The close reason the server gave.
    """

    code: int
    reason: str


@final
@attrs.frozen(kw_only=True)
class SubscribeAck:
    """The server confirmed a ``sub`` (``__qr__`` without ``fail``).

    Attributes:
        query: The query id of the ``sub`` message.
        channel: The channel it subscribed to.
    """

    query: int
    channel: str


@final
@attrs.frozen(kw_only=True)
class SubscribeFailed:
    """The server refused a ``sub`` (``__qr__`` with ``"fail": true``).

    Attributes:
        query: The query id of the ``sub`` message.
        channel: The channel it tried to subscribe to.
        reason: The server's explanation when it gave a string, else ``None``.
    """

    query: int
    channel: str
    reason: str | None


@final
@attrs.frozen(kw_only=True)
class UnsubscribeAck:
    """The server answered an ``unsub`` (successfully or not: either way it is gone).

    Attributes:
        query: The query id of the ``unsub`` message.
        channel: The channel it unsubscribed from.
    """

    query: int
    channel: str


@final
@attrs.frozen(kw_only=True)
class Change:
    """A change notification on a channel.

    Attributes:
        channel: The channel (the REST path of the collection or resource).
        action: ``"added"``, ``"changed"`` or ``"removed"``.
        resource_id: The changed resource's identity (``resourceId``/``resource_id``, or the
            resource's ``id`` when neither is given), or ``None`` if the frame had none.
        resource: The resource (``added``), its changed attributes (``changed``), or
            ``None`` (usually for ``removed``).
    """

    channel: str
    action: Action
    resource_id: str | None
    resource: Mapping[str, Any] | None = attrs.field(default=None, hash=False)


#: What :class:`~giosg_visitor.realtime.RealtimeProtocol` emits for received frames.
ProtocolEvent: TypeAlias = (
    Opened | Heartbeat | Closed | SubscribeAck | SubscribeFailed | UnsubscribeAck | Change
)


# Subscription markers --------------------------------------------------------------------


@final
@attrs.frozen(kw_only=True)
class Resubscribed:
    """The channel was subscribed again on a new connection after the socket dropped.

    Notifications published between the previous item of the stream and this marker were
    not received: backfill the channel from the REST API.

    Attributes:
        channel: The channel.
    """

    channel: str


@final
@attrs.frozen(kw_only=True)
class Gap:
    """Notifications were dropped on this channel; backfill it from the REST API.

    In a subscription stream the marker sits exactly where the dropped notifications would
    have been: between the last item delivered before and the first delivered after.

    Attributes:
        channel: The channel.
        reason: Why: ``"overflow"`` (the consumer did not keep up and the subscription's
            buffer was full).
    """

    channel: str
    reason: str


#: What a :class:`~giosg_visitor.realtime.Subscription` yields: notifications and markers.
SubscriptionEvent: TypeAlias = Change | Resubscribed | Gap


# Connection events ------------------------------------------------------------------------


@final
@attrs.frozen(kw_only=True)
class Connected:
    """The first connection opened."""


@final
@attrs.frozen(kw_only=True)
class Reconnected:
    """A new connection opened after a drop. Every channel is being subscribed again."""


@final
@attrs.frozen(kw_only=True)
class Disconnected:
    """The socket dropped or a connection attempt failed.

    Attributes:
        code: The close code (``1006`` when the TCP connection died without one), or
            ``None`` when no WebSocket was established (refused handshake, network error).
        reason: A short, secret-free description.
        retry_in: Seconds until the next attempt, or ``None`` when the connection gives up
            (the error is then raised from subscriptions and ``wait_*`` calls).
    """

    code: int | None
    reason: str
    retry_in: float | None


#: What :class:`~giosg_visitor.realtime.ConnectionEvents` yields: the socket's life.
ConnectionEvent: TypeAlias = Connected | Disconnected | Reconnected | Gap
