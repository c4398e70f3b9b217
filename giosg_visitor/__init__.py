"""giosg_visitor: be a visitor in Giosg live chat from async Python (asyncio or trio)."""

from __future__ import annotations

from typing import Any as _Any

from ._auth import SessionState as SessionState
from ._budget import RetryBudget as RetryBudget
from ._clock import Clock as Clock, SystemClock as SystemClock
from ._compat import STORE_RECORDS as _STORE_RECORDS, moved_names as _moved_names
from ._http import ResponseLimits as ResponseLimits, Timeouts as Timeouts
from ._renewal import RenewalPolicy as RenewalPolicy, RetryPolicy as RetryPolicy
from ._secret import Secret as Secret
from .chat import Chat as Chat, MemberStream as MemberStream, MessageStream as MessageStream
from .cluster import (
    ClusterStats as ClusterStats,
    Delivery as Delivery,
    DeliveryLostError as DeliveryLostError,
    LeaseLostError as LeaseLostError,
    RedisCoordinator as RedisCoordinator,
)
from .credentials import (
    BearerAuth as BearerAuth,
    ClientCredentials as ClientCredentials,
    TokenAuth as TokenAuth,
)
from .errors import (
    APIError as APIError,
    AuthenticationError as AuthenticationError,
    ChatEndedError as ChatEndedError,
    ClosedError as ClosedError,
    ConnectionClosedError as ConnectionClosedError,
    DeliveryUnknownError as DeliveryUnknownError,
    GiosgError as GiosgError,
    HandshakeRejectedError as HandshakeRejectedError,
    InvalidClientError as InvalidClientError,
    InvalidGrantError as InvalidGrantError,
    InvalidScopeError as InvalidScopeError,
    InvalidSecretError as InvalidSecretError,
    MessageTooLongError as MessageTooLongError,
    NotChoosableError as NotChoosableError,
    NotFoundError as NotFoundError,
    OAuthError as OAuthError,
    PermissionDeniedError as PermissionDeniedError,
    ProtocolError as ProtocolError,
    RateLimitError as RateLimitError,
    RealtimeError as RealtimeError,
    RenewalFailedError as RenewalFailedError,
    ServerError as ServerError,
    SessionError as SessionError,
    SessionExpiredError as SessionExpiredError,
    StoreConnectionError as StoreConnectionError,
    StoreCorruptError as StoreCorruptError,
    StoreError as StoreError,
    StoreProtocolError as StoreProtocolError,
    StoreTimeoutError as StoreTimeoutError,
    StoreUnavailableError as StoreUnavailableError,
    SubscriptionError as SubscriptionError,
    TransportError as TransportError,
    TransportTimeoutError as TransportTimeoutError,
    UnauthorizedClientError as UnauthorizedClientError,
    UnsupportedGrantTypeError as UnsupportedGrantTypeError,
    UntrustedEndpointError as UntrustedEndpointError,
)
from .models import (
    Action as Action,
    ActionReply as ActionReply,
    ActionType as ActionType,
    Attachment as Attachment,
    ChatInfo as ChatInfo,
    IdentityChange as IdentityChange,
    Membership as Membership,
    Message as Message,
    MessageType as MessageType,
    OnlineUser as OnlineUser,
    Room as Room,
    SenderType as SenderType,
    Unrecognized as Unrecognized,
    choosable_actions as choosable_actions,
)
from .pool import (
    PoolStats as PoolStats,
    VisitorOptions as VisitorOptions,
    VisitorPool as VisitorPool,
)
from .realtime import (
    Change as Change,
    ConnectionState as ConnectionState,
    Gap as Gap,
    ReconnectPolicy as ReconnectPolicy,
    Resubscribed as Resubscribed,
    Subscription as Subscription,
)
from .rooms import OnlineOperators as OnlineOperators
from .stores import (
    FileStore as FileStore,
    MemoryStore as MemoryStore,
    RedisStore as RedisStore,
    SQLiteStore as SQLiteStore,
    Store as Store,
)
from .visitor import Visitor as Visitor


__all__ = [
    "APIError",
    "Action",
    "ActionReply",
    "ActionType",
    "Attachment",
    "AuthenticationError",
    "BearerAuth",
    "Change",
    "Chat",
    "ChatEndedError",
    "ChatInfo",
    "ClientCredentials",
    "Clock",
    "ClosedError",
    "ClusterStats",
    "ConnectionClosedError",
    "ConnectionState",
    "Delivery",
    "DeliveryLostError",
    "DeliveryUnknownError",
    "FileStore",
    "Gap",
    "GiosgError",
    "HandshakeRejectedError",
    "IdentityChange",
    "InvalidClientError",
    "InvalidGrantError",
    "InvalidScopeError",
    "InvalidSecretError",
    "LeaseLostError",
    "MemberStream",
    "Membership",
    "MemoryStore",
    "Message",
    "MessageStream",
    "MessageTooLongError",
    "MessageType",
    "NotChoosableError",
    "NotFoundError",
    "OAuthError",
    "OnlineOperators",
    "OnlineUser",
    "PermissionDeniedError",
    "PoolStats",
    "ProtocolError",
    "RateLimitError",
    "RealtimeError",
    "ReconnectPolicy",
    "RedisCoordinator",
    "RedisStore",
    "RenewalFailedError",
    "RenewalPolicy",
    "ResponseLimits",
    "Resubscribed",
    "RetryBudget",
    "RetryPolicy",
    "Room",
    "SQLiteStore",
    "Secret",
    "SenderType",
    "ServerError",
    "SessionError",
    "SessionExpiredError",
    "SessionState",
    "Store",
    "StoreConnectionError",
    "StoreCorruptError",
    "StoreError",
    "StoreProtocolError",
    "StoreTimeoutError",
    "StoreUnavailableError",
    "Subscription",
    "SubscriptionError",
    "SystemClock",
    "Timeouts",
    "TokenAuth",
    "TransportError",
    "TransportTimeoutError",
    "UnauthorizedClientError",
    "Unrecognized",
    "UnsupportedGrantTypeError",
    "UntrustedEndpointError",
    "Visitor",
    "VisitorOptions",
    "VisitorPool",
    "__version__",
    "choosable_actions",
]


#: Store records were exported here; they belong to giosg_visitor.stores (with the Store
#: protocol). The old imports keep working, silently for now: code that still uses them
#: would fail under ``-W error`` otherwise.
_moved = _moved_names(__name__, _STORE_RECORDS, deprecated=False)


def __getattr__(name: str) -> _Any:
    # The version is read lazily: importlib.metadata is slow to import.
    if name == "__version__":
        from importlib.metadata import version

        return version("giosg-visitor")
    return _moved(name)
