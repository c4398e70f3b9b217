"""Pure reconnect maths: when to retry, and whether to retry at all.

No I/O, no clock reads, no hidden randomness: "now" and every random draw are arguments.
The numbers:

* first retry after an unexpected drop in U(0, 1 s); then full jitter
  U(0, min(30 s, 1 s * 2**n)); the counter resets after 60 s of stable connection;
* after 120 s without a connection the client is *suspended*: it retries every
  30 s +-20 %;
* :func:`classify_close` and :func:`classify_handshake` map a close code or a refused
  handshake to ``reconnect``, ``renew_then_reconnect`` or ``fail``;
  :class:`ReconnectTracker` escalates repeated auth and protocol failures to ``fail``;
* :meth:`Drop.from_error` applies the same table to an error that ended a socket.
"""

from __future__ import annotations

import enum
import math
from typing import Final, final

import attrs

from giosg_visitor import _facts
from giosg_visitor._redact import redact
from giosg_visitor.errors import (
    ConnectionClosedError,
    GiosgError,
    SessionError,
    UntrustedEndpointError,
)

from ._transport import HandshakeRejectedError


__all__ = [
    "AUTH_CLOSE_CODES",
    "PROTOCOL_CLOSE_CODES",
    "CloseAction",
    "Decision",
    "Drop",
    "FailureKind",
    "ReconnectPolicy",
    "ReconnectTracker",
    "Verdict",
    "classify_close",
    "classify_handshake",
]

#: Close codes that mean "your credential was rejected" (see :mod:`giosg_visitor._facts`).
AUTH_CLOSE_CODES: Final[frozenset[int]] = _facts.AUTH_CLOSE_CODES

#: Close codes that mean "one side broke the protocol" (RFC 6455).
PROTOCOL_CLOSE_CODES: Final[frozenset[int]] = _facts.PROTOCOL_CLOSE_CODES

#: HTTP statuses of a refused handshake that are worth retrying with backoff.
_RETRYABLE_STATUSES: Final[frozenset[int]] = _facts.RETRYABLE_HANDSHAKE_STATUSES


class CloseAction(enum.Enum):
    """What to do after a drop or a failed attempt."""

    RECONNECT = "reconnect"
    RENEW_THEN_RECONNECT = "renew_then_reconnect"
    FAIL = "fail"


class FailureKind(enum.Enum):
    """Which escalation counter a failure feeds."""

    TRANSIENT = "transient"
    AUTH = "auth"
    PROTOCOL = "protocol"
    FATAL = "fatal"


@final
@attrs.frozen(kw_only=True)
class Verdict:
    """The classification of one failure.

    Attributes:
        kind: Which escalation rule applies.
        retry_after: A server-imposed wait (``Retry-After``), seconds, if any.
    """

    kind: FailureKind
    retry_after: float | None = None

    @property
    def action(self) -> CloseAction:
        """The action for a first occurrence (before any escalation)."""
        if self.kind is FailureKind.FATAL:
            return CloseAction.FAIL
        if self.kind is FailureKind.AUTH:
            return CloseAction.RENEW_THEN_RECONNECT
        return CloseAction.RECONNECT


def classify_close(code: int | None) -> Verdict:
    """Classify a close code (``None``: the TCP connection died without a close frame).

    1000/1001/1006/1011/1012/1013/1014, SockJS's 3000 and every unknown code reconnect;
    :data:`AUTH_CLOSE_CODES` renew the token first; :data:`PROTOCOL_CLOSE_CODES`
    reconnect but count towards failing.

    Args:
        code: The close code.
    """
    if code in AUTH_CLOSE_CODES:
        return Verdict(kind=FailureKind.AUTH)
    if code in PROTOCOL_CLOSE_CODES:
        return Verdict(kind=FailureKind.PROTOCOL)
    return Verdict(kind=FailureKind.TRANSIENT)


def classify_handshake(status: int, retry_after: float | None = None) -> Verdict:
    """Classify an HTTP status that refused the WebSocket handshake.

    401/403 renew then reconnect; 408, 425, 429 and 5xx reconnect (honouring
    ``Retry-After`` for 429 and 503); a 3xx (redirects are never followed), 404 and other
    4xx fail; anything else (1xx, 2xx) is a protocol failure.

    Args:
        status: The HTTP status.
        retry_after: The parsed ``Retry-After``, seconds, if the response had one.
    """
    if status in _facts.AUTH_HANDSHAKE_STATUSES:
        return Verdict(kind=FailureKind.AUTH)
    if status in _RETRYABLE_STATUSES or 500 <= status < 600:
        wait = retry_after if status in (429, 503) else None
        return Verdict(kind=FailureKind.TRANSIENT, retry_after=wait)
    if 300 <= status < 500:
        return Verdict(kind=FailureKind.FATAL)
    return Verdict(kind=FailureKind.PROTOCOL)


@final
@attrs.frozen(kw_only=True)
class ReconnectPolicy:
    """How the real-time connection retries.

    Attributes:
        first_delay: Upper bound of the first retry's delay (U(0, first_delay)).
        max_delay: Cap of the full-jitter exponential delays.
        stable_after: Seconds a connection must stay up for the counters to reset.
        suspend_after: Seconds without a connection after which the client is suspended.
        suspended_delay: Retry period while suspended.
        suspended_jitter: Relative jitter of the suspended period (0.2 = +-20 %).
        max_retry_after: Longest server ``Retry-After`` honoured; longer ones are capped.
        max_auth_failures: Auth rejections renewed and retried before failing.
        max_protocol_failures: Consecutive protocol failures that make the client fail.
    """

    first_delay: float = 1.0
    max_delay: float = 30.0
    stable_after: float = 60.0
    suspend_after: float = 120.0
    suspended_delay: float = 30.0
    suspended_jitter: float = 0.2
    max_retry_after: float = 600.0
    max_auth_failures: int = 1
    max_protocol_failures: int = 3

    def delay(self, attempt: int, draw: float) -> float:
        """Seconds before retry number ``attempt`` (0-based) while not suspended.

        Retry 0 waits U(0, first_delay); retry n waits U(0, min(max_delay,
        first_delay * 2**n)).

        Args:
            attempt: 0 for the first retry after a drop.
            draw: A random number in ``[0, 1)``.
        """
        exponent = min(max(0, attempt), 64)
        ceiling = min(self.max_delay, self.first_delay * 2.0**exponent)
        return ceiling * _unit(draw)

    def suspended(self, draw: float) -> float:
        """Seconds before the next retry while suspended: ``suspended_delay`` +- jitter.

        Args:
            draw: A random number in ``[0, 1)``.
        """
        return self.suspended_delay * (1.0 + self.suspended_jitter * (2.0 * _unit(draw) - 1.0))


@final
@attrs.frozen(kw_only=True)
class Decision:
    """What the connection does after a failure.

    Attributes:
        action: Reconnect, renew the token then reconnect, or fail.
        delay: Seconds to wait before the next attempt (0 when failing).
        suspended: Whether the client has been without a connection for so long that it
            is suspended.
    """

    action: CloseAction
    delay: float
    suspended: bool = False


@final
@attrs.define(kw_only=True)
class ReconnectTracker:
    """The reconnect state of one connection: a pure state machine fed with "now".

    Call :meth:`connected` when a socket opens, :meth:`authorized` when the server accepted
    a token on it, and :meth:`failed` for each drop or failed attempt.

    Attributes:
        policy: The numbers.
        attempt: Retries since the last stable connection.
        auth_failures: Auth rejections since a token was last accepted.
        protocol_failures: Protocol failures since the last stable connection.
        connected_at: When the current connection opened, if one is open.
        disconnected_since: When the client lost (or never had) a connection.
    """

    policy: ReconnectPolicy = attrs.field(factory=ReconnectPolicy)
    attempt: int = 0
    auth_failures: int = 0
    protocol_failures: int = 0
    connected_at: float | None = None
    disconnected_since: float | None = None

    def connected(self, now: float) -> None:
        """A socket opened at ``now``."""
        self.connected_at = now
        self.disconnected_since = None

    def authorized(self) -> None:
        """The server accepted our token on the current socket."""
        self.auth_failures = 0

    def failed(self, now: float, verdict: Verdict, draw: float) -> Decision:
        """Decide what to do after a drop or a failed attempt at ``now``.

        Args:
            now: The current monotonic time.
            verdict: The failure's classification.
            draw: A random number in ``[0, 1)`` for the jitter.
        """
        policy = self.policy
        if self.connected_at is not None and now - self.connected_at >= policy.stable_after:
            self.attempt = 0
            self.protocol_failures = 0
        self.connected_at = None
        if self.disconnected_since is None:
            self.disconnected_since = now

        action = verdict.action
        if verdict.kind is FailureKind.AUTH:
            self.auth_failures += 1
            if self.auth_failures > policy.max_auth_failures:
                action = CloseAction.FAIL
        elif verdict.kind is FailureKind.PROTOCOL:
            self.protocol_failures += 1
            if self.protocol_failures >= policy.max_protocol_failures:
                action = CloseAction.FAIL
        if action is CloseAction.FAIL:
            return Decision(action=action, delay=0.0)

        suspended = now - self.disconnected_since >= policy.suspend_after
        if verdict.retry_after is not None and math.isfinite(verdict.retry_after):
            delay = min(policy.max_retry_after, max(0.0, verdict.retry_after))
        elif suspended:
            delay = policy.suspended(draw)
        else:
            delay = policy.delay(self.attempt, draw)
        self.attempt += 1
        return Decision(action=action, delay=delay, suspended=suspended)


def _unit(draw: float) -> float:
    """Clamp a random draw into ``[0, 1]`` (robust against a careless injected RNG)."""
    if not math.isfinite(draw):
        return 0.0
    return min(1.0, max(0.0, draw))


@attrs.frozen(kw_only=True)
class Drop:
    """Why a socket ended (or an attempt failed), and what the close-code table says of it."""

    code: int | None
    reason: str
    verdict: Verdict
    error: BaseException | None = None
    #: Drop the TCP connection instead of a closing handshake (the link is dead).
    abort: bool = False
    #: A normal shutdown: the owner is leaving.
    closing: bool = False

    @classmethod
    def from_error(cls, exc: BaseException) -> Drop:
        """Classify an error that ended a socket or an attempt (see the module's table)."""
        if isinstance(exc, ConnectionClosedError):
            return cls(
                code=exc.code,
                reason=redact(exc.reason) or str(exc),
                verdict=classify_close(exc.code),
                error=exc,
                abort=True,
            )
        if isinstance(exc, HandshakeRejectedError):
            return cls(
                code=None,
                reason=f"handshake refused with HTTP {exc.status_code}",
                verdict=classify_handshake(exc.status_code, exc.retry_after),
                error=exc,
                abort=True,
            )
        if isinstance(exc, UntrustedEndpointError | SessionError):
            return cls(
                code=None,
                reason=type(exc).__name__,
                verdict=Verdict(kind=FailureKind.FATAL),
                error=exc,
                abort=True,
            )
        if isinstance(exc, GiosgError | OSError):
            return cls(
                code=None,
                reason=str(exc),
                verdict=Verdict(kind=FailureKind.TRANSIENT),
                error=exc,
                abort=True,
            )
        return cls(
            code=None,
            reason=f"unexpected error: {type(exc).__name__}",
            verdict=Verdict(kind=FailureKind.FATAL),
            error=exc,
            abort=True,
        )
