"""giosg_visitor: be a visitor in Giosg live chat from async Python (asyncio or trio)."""

from __future__ import annotations

from ._auth import SessionState as SessionState
from ._budget import RetryBudget as RetryBudget
from ._clock import Clock as Clock, SystemClock as SystemClock
from ._http import Timeouts as Timeouts
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
    ConnectionClosedError as ConnectionClosedError,
    DeliveryUnknownError as DeliveryUnknownError,
    GiosgError as GiosgError,
    InvalidClientError as InvalidClientError,
    InvalidGrantError as InvalidGrantError,
    InvalidScopeError as InvalidScopeError,
    InvalidSecretError as InvalidSecretError,
    MessageTooLongError as MessageTooLongError,
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
    SubscriptionError as SubscriptionError,
    TransportError as TransportError,
    TransportTimeoutError as TransportTimeoutError,
    UnauthorizedClientError as UnauthorizedClientError,
    UnsupportedGrantTypeError as UnsupportedGrantTypeError,
    UntrustedEndpointError as UntrustedEndpointError,
)
from .models import (
    AuthSession as AuthSession,
    ChatInfo as ChatInfo,
    IdentityChange as IdentityChange,
    Membership as Membership,
    Message as Message,
    OnlineUser as OnlineUser,
    OrganizationSession as OrganizationSession,
    Room as Room,
    StoredToken as StoredToken,
    VisitorRecord as VisitorRecord,
)
from .pool import PoolStats as PoolStats, VisitorPool as VisitorPool
from .realtime import (
    Change as Change,
    ConnectionState as ConnectionState,
    Gap as Gap,
    HandshakeRejectedError as HandshakeRejectedError,
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
    "AuthSession",
    "AuthenticationError",
    "BearerAuth",
    "Change",
    "Chat",
    "ChatEndedError",
    "ChatInfo",
    "ClientCredentials",
    "Clock",
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
    "NotFoundError",
    "OAuthError",
    "OnlineOperators",
    "OnlineUser",
    "OrganizationSession",
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
    "Resubscribed",
    "RetryBudget",
    "RetryPolicy",
    "Room",
    "SQLiteStore",
    "Secret",
    "ServerError",
    "SessionError",
    "SessionExpiredError",
    "SessionState",
    "Store",
    "StoredToken",
    "Subscription",
    "SubscriptionError",
    "SystemClock",
    "Timeouts",
    "TokenAuth",
    "TransportError",
    "TransportTimeoutError",
    "UnauthorizedClientError",
    "UnsupportedGrantTypeError",
    "UntrustedEndpointError",
    "Visitor",
    "VisitorPool",
    "VisitorRecord",
    "__version__",
]


def __getattr__(name: str) -> str:
    # The version is read lazily: importlib.metadata is slow to import.
    if name == "__version__":
        from importlib.metadata import version

        return version("giosg-visitor")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
