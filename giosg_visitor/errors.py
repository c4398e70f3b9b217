"""The exception tree of giosg_visitor.

Every error the SDK raises on purpose derives from :class:`GiosgError`. httpx and
websockets exceptions are translated at the edges and never reach users untranslated;
the original is kept as ``__cause__``.

Misuse of the API (wrong argument types) raises the builtin ``TypeError`` or
``ValueError`` instead. Using a visitor or pool after it was closed raises
:class:`ClosedError`, which is also a ``RuntimeError``.

No exception message or attribute ever contains a secret (visitor secret, access token,
client secret, refresh token): URLs carried here are the request URLs, which never hold
credentials, and what a server sends back (an error body, a close reason) is masked for
every live secret when the error is made, because servers echo rejected values.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ._redact import redact, redact_json


__all__ = [
    "APIError",
    "AuthenticationError",
    "BinaryFrameError",
    "ChatEndedError",
    "ClosedError",
    "ConnectionClosedError",
    "DeliveryUnknownError",
    "GiosgError",
    "HandshakeRejectedError",
    "InvalidClientError",
    "InvalidGrantError",
    "InvalidScopeError",
    "InvalidSecretError",
    "MessageTooLongError",
    "NotChoosableError",
    "NotFoundError",
    "OAuthError",
    "PermissionDeniedError",
    "ProtocolError",
    "RateLimitError",
    "RealtimeError",
    "RenewalFailedError",
    "ServerError",
    "SessionError",
    "SessionExpiredError",
    "StoreConnectionError",
    "StoreCorruptError",
    "StoreError",
    "StoreProtocolError",
    "StoreTimeoutError",
    "StoreUnavailableError",
    "SubscriptionError",
    "TransportError",
    "TransportTimeoutError",
    "UnauthorizedClientError",
    "UnsupportedGrantTypeError",
    "UntrustedEndpointError",
]


class GiosgError(Exception):
    """Base class of every error raised by giosg_visitor."""


# Transport ---------------------------------------------------------------------------


class ClosedError(GiosgError, RuntimeError):
    """A visitor, its chats or a pool were used after being closed.

    Calls work only while the object is open: inside ``async with Visitor(...)`` (or
    between ``start()`` and ``aclose()``), inside ``async with VisitorPool(...)``. Not
    retryable: open a new one. Also a ``RuntimeError``, which such misuse raised before.
    """


class TransportError(GiosgError):
    """The network failed (connect, read, write, TLS). Retryable by default."""


class TransportTimeoutError(TransportError, TimeoutError):
    """A transport-level timeout (connect, read, write or pool) expired."""


class DeliveryUnknownError(TransportError):
    """A message send lost its response, and reading the chat back failed too.

    The message may or may not have arrived; the SDK does not resend it (that could
    post it twice). Look at :meth:`~giosg_visitor.Chat.history` once the server answers
    again. ``__cause__`` is the read-back's error, ``__context__`` the lost send's.

    Attributes:
        chat_id: The chat the message was sent to.
    """

    def __init__(self, message: str, *, chat_id: str) -> None:
        super().__init__(message)
        self.chat_id = chat_id


class UntrustedEndpointError(GiosgError):
    """A URL that would carry a credential is not trusted.

    Raised before any byte is sent: plain ``http``/``ws`` to a non-loopback host, a
    ``socket_url`` host that is not on the allowlist, userinfo in a URL, or a redirect
    from a credentialed request.
    """

    def __init__(self, message: str, *, url: str | None = None) -> None:
        super().__init__(message)
        self.url = url


class ProtocolError(GiosgError):
    """The server sent something malformed or unexpected.

    Used for HTTP bodies (invalid JSON, missing or mistyped fields) and for socket frames
    alike. The message names the problem (for example the missing field) but never quotes
    a secret.
    """


class BinaryFrameError(ProtocolError):
    """A binary frame arrived on the text-only message-router protocol (it is skipped)."""


# HTTP status errors --------------------------------------------------------------------


class APIError(GiosgError):
    """The server answered with a non-2xx status.

    Attributes:
        status_code: The HTTP status.
        method: The request method.
        url: The request URL (never contains a credential).
        body: The parsed JSON body (DRF style: ``{"detail": ...}`` or ``{field: [msgs]}``),
            the text when it was not JSON, or ``None``.
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        method: str = "",
        url: str = "",
        body: Any = None,
    ) -> None:
        super().__init__(redact(message))
        self.status_code = status_code
        self.method = method
        self.url = url
        self.body = redact_json(body)

    @property
    def detail(self) -> str | None:
        """The DRF ``detail`` string of the body, if any."""
        if isinstance(self.body, Mapping):
            detail = self.body.get("detail")
            if isinstance(detail, str):
                return detail
        return None


class AuthenticationError(APIError):
    """401: the credential was missing, expired or rejected."""


class PermissionDeniedError(APIError):
    """403: authenticated, but not allowed."""


class NotFoundError(APIError):
    """404: the resource does not exist (or is not this visitor's)."""


class RateLimitError(APIError):
    """429: throttled. ``retry_after`` is the server's wait in seconds, if it gave one."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int = 429,
        method: str = "",
        url: str = "",
        body: Any = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, status_code=status_code, method=method, url=url, body=body)
        self.retry_after = retry_after


class ServerError(APIError):
    """5xx: the server failed. Retryable for idempotent calls.

    ``retry_after`` is the server's wait in seconds when it sent ``Retry-After`` (RFC 9110
    allows it on 503); retries wait at least that long.
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int = 500,
        method: str = "",
        url: str = "",
        body: Any = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, status_code=status_code, method=method, url=url, body=body)
        self.retry_after = retry_after


class ChatEndedError(APIError):
    """The chat has ended: it accepts no more messages."""


class OAuthError(APIError):
    """An OAuth2 token endpoint answered with an RFC 6749 §5.2 error.

    Attributes:
        error: The ``error`` code, for example ``"invalid_client"``.
        error_description: The server's ``error_description``, if any.
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        method: str = "",
        url: str = "",
        body: Any = None,
        error: str = "",
        error_description: str | None = None,
    ) -> None:
        super().__init__(message, status_code=status_code, method=method, url=url, body=body)
        self.error = error
        self.error_description = error_description


class InvalidClientError(OAuthError):
    """``invalid_client``: client authentication failed. Terminal."""


class InvalidGrantError(OAuthError):
    """``invalid_grant``: the grant or refresh token is invalid, expired or revoked."""


class InvalidScopeError(OAuthError):
    """``invalid_scope``: the requested scope is invalid or exceeds what was granted."""


class UnauthorizedClientError(OAuthError):
    """``unauthorized_client``: the client may not use this grant type."""


class UnsupportedGrantTypeError(OAuthError):
    """``unsupported_grant_type``: the server does not support this grant type."""


# Client-side validation ------------------------------------------------------------------


class MessageTooLongError(GiosgError, ValueError):
    """A chat message is longer than the server's limit; nothing was sent.

    Attributes:
        length: The message length in characters.
        limit: The largest accepted length.
    """

    def __init__(self, length: int, limit: int) -> None:
        super().__init__(f"message is {length} characters long; the limit is {limit}")
        self.length = length
        self.limit = limit


class NotChoosableError(GiosgError, ValueError):
    """An action cannot be sent as the visitor's choice; nothing was sent.

    ``reason`` says why:

    - ``"link_button"``: a link button only opens :attr:`link_url` in the visitor's
      browser; Giosg receives nothing. Open (or show) the link yourself.
    - ``"unknown_type"``: an action kind the SDK does not know; it is not guessed at.
    - ``"no_id"``: the action lacks the message, attachment or action id a choice
      refers to (an action built by hand, or a server that sent none).

    Attributes:
        reason: ``"link_button"``, ``"unknown_type"`` or ``"no_id"``.
        link_url: For a link button: its link (``None`` otherwise).
    """

    def __init__(self, message: str, *, reason: str, link_url: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.link_url = link_url


# Session ------------------------------------------------------------------------------


class SessionError(GiosgError):
    """The visitor session cannot provide a valid access token."""


class SessionExpiredError(SessionError):
    """There is no valid token and renewal is impossible (closed or failed session)."""


class RenewalFailedError(SessionError):
    """Renewal gave up; ``__cause__`` is the last error."""


class InvalidSecretError(SessionError):
    """The stored ``visitor_secret_id`` was rejected (unknown or revoked).

    Terminal: the SDK stops calling auth for this visitor. Pass
    ``on_invalid_secret="new_visitor"`` to start a new visitor instead.

    Attributes:
        status_code: The status of the auth response.
        body: Its parsed body (DRF style).
    """

    def __init__(self, message: str, *, status_code: int, body: Any = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.body = body


# Real-time ------------------------------------------------------------------------------


class RealtimeError(GiosgError):
    """Base class of real-time socket errors."""


class ConnectionClosedError(RealtimeError):
    """The socket closed and will not be reopened. ``code``/``reason`` are the close frame's."""

    def __init__(self, message: str, *, code: int | None = None, reason: str = "") -> None:
        super().__init__(redact(message))
        self.code = code
        self.reason = redact(reason)


class HandshakeRejectedError(RealtimeError):
    """The server answered the WebSocket handshake with an HTTP status instead of 101.

    Attributes:
        status_code: The HTTP status.
        retry_after: The ``Retry-After`` delay in seconds, if the response had one.
    """

    def __init__(self, message: str, *, status_code: int, retry_after: float | None = None):
        super().__init__(message)
        self.status_code = status_code
        self.retry_after = retry_after


class SubscriptionError(RealtimeError):
    """The server refused a subscription (``__qr__`` with ``fail``). ``channel`` names it."""

    def __init__(self, message: str, *, channel: str) -> None:
        super().__init__(message)
        self.channel = channel


# Stores ----------------------------------------------------------------------------------


class StoreError(GiosgError):
    """A store failed to load, save, delete or lock a record.

    Every built-in store raises a subclass of this for failures of its own storage; the
    original exception (``OSError``, ``sqlite3.Error``, a redis-py error) is kept as
    ``__cause__``. Messages name the store (a path, a Redis host) and the kind of
    failure, never a record's content or a password.

    During background renewal a store error never ends a visitor: the renewed token is
    kept in memory and saved once the store answers again.
    """


class StoreUnavailableError(StoreError, OSError):
    """The store cannot be used right now; trying again later may work.

    Locked by another process (SQLite ``database is locked``), read-only, out of space,
    an I/O error, a Redis server that is down or loading. Also an :class:`OSError`,
    because that is what the file-based stores' callers have always caught.
    """


class StoreConnectionError(StoreUnavailableError, TransportError):
    """A networked store (Redis) could not be reached. Also a :class:`TransportError`."""


class StoreTimeoutError(StoreConnectionError, TransportTimeoutError):
    """A networked store (Redis) did not answer in time."""


class StoreProtocolError(StoreError, ProtocolError):
    """The store's server refused a command, and retrying will not help.

    For example a Redis user without permission for a command. Also a
    :class:`ProtocolError`.
    """


class StoreCorruptError(StoreError, ProtocolError):
    """The store holds content that is not a valid store or record; it was left as is.

    Raised for a JSON file that does not parse, a file that is not a SQLite database, a
    record that does not decode, a Redis key of the wrong type. The message names the
    store and the problem (for example the missing field), never the content itself.
    Also a :class:`ProtocolError`.
    """
