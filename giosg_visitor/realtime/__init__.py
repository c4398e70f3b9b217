"""Real-time channels: the message-router protocol and a self-healing connection.

* :class:`RealtimeProtocol`: the sans-I/O protocol (frames in, events out).
* :class:`RealtimeConnection`: one socket, kept alive, reconnected and resubscribed;
  :class:`Subscription` streams a channel's notifications; a :class:`TokenSource` gives
  it tokens.
* Events: :class:`Change` (a notification), the markers :class:`Resubscribed` and
  :class:`Gap` (backfill from REST after either), and the connection events
  :class:`Connected`, :class:`Disconnected`, :class:`Reconnected`.
"""

from __future__ import annotations

from .._compat import moved_names as _moved_names
from ..errors import HandshakeRejectedError as HandshakeRejectedError
from ._backoff import ReconnectPolicy as ReconnectPolicy
from ._tokens import TokenSource as TokenSource
from ._urls import DEFAULT_ALLOWED_HOSTS as DEFAULT_ALLOWED_HOSTS
from .connection import (
    ConnectionState as ConnectionState,
    ConnectionStats as ConnectionStats,
    RealtimeConnection as RealtimeConnection,
    StrategyRefusal as StrategyRefusal,
)
from .events import (
    Change as Change,
    Closed as Closed,
    Connected as Connected,
    ConnectionEvent as ConnectionEvent,
    Disconnected as Disconnected,
    Gap as Gap,
    Heartbeat as Heartbeat,
    Opened as Opened,
    ProtocolEvent as ProtocolEvent,
    Reconnected as Reconnected,
    Resubscribed as Resubscribed,
    SubscribeAck as SubscribeAck,
    SubscribeFailed as SubscribeFailed,
    SubscriptionEvent as SubscriptionEvent,
    UnsubscribeAck as UnsubscribeAck,
)
from .protocol import (
    Framing as Framing,
    ProtocolStats as ProtocolStats,
    RealtimeProtocol as RealtimeProtocol,
)
from .streams import ConnectionEvents as ConnectionEvents, Subscription as Subscription


__all__ = [
    "Change",
    "Closed",
    "Connected",
    "ConnectionEvent",
    "ConnectionEvents",
    "ConnectionState",
    "ConnectionStats",
    "DEFAULT_ALLOWED_HOSTS",
    "Disconnected",
    "Framing",
    "Gap",
    "HandshakeRejectedError",
    "Heartbeat",
    "Opened",
    "ProtocolEvent",
    "ProtocolStats",
    "RealtimeConnection",
    "StrategyRefusal",
    "RealtimeProtocol",
    "ReconnectPolicy",
    "Reconnected",
    "Resubscribed",
    "SubscribeAck",
    "SubscribeFailed",
    "Subscription",
    "SubscriptionEvent",
    "TokenSource",
    "UnsubscribeAck",
]


#: Names this package exported before they became private: connection policy (how a close
#: code or a handshake status is handled, how a socket URL is checked), not API. Old
#: imports keep working, with a DeprecationWarning.
__getattr__ = _moved_names(
    __name__,
    {
        "CloseAction": f"{__name__}._backoff",
        "classify_close": f"{__name__}._backoff",
        "classify_handshake": f"{__name__}._backoff",
        "socket_endpoint": f"{__name__}._urls",
    },
)
