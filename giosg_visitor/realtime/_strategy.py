"""Which socket strategy (URL derivation) and framing to use, and what ``"auto"`` learnt.

No I/O and no clock reads ("now" is an argument). The connection asks
:class:`StrategyChooser` for the derivation of each attempt, tells it when the socket
opened and when the server spoke the protocol on it, and hands it each drop: while
``"auto"`` probes, a drop that says "not this endpoint" moves on to the next derivation
at once; when every one was refused, the drop becomes fatal and names each refusal. What
worked is remembered per socket host for the process.
"""

from __future__ import annotations

import logging
from typing import Final, Literal, final

import attrs

from giosg_visitor._facts import (
    AUTH_HANDSHAKE_STATUSES,
    RETRYABLE_HANDSHAKE_STATUSES,
    URL_DERIVATIONS,
    RefusalKind,
    SocketStrategy,
    UrlDerivation,
)
from giosg_visitor.errors import ConnectionClosedError, GiosgError, UntrustedEndpointError

from ._backoff import Drop, FailureKind, Verdict
from ._transport import HandshakeRejectedError, RedirectRefusedError
from .protocol import Framing


__all__ = ["Attempt", "StrategyChooser", "StrategyRefusal", "forget_discovered_strategies"]

logger = logging.getLogger("giosg_visitor.realtime")

_ABNORMAL_CLOSURE: Final = 1006
#: In "auto", a socket closed this soon after opening, before the server said anything
#: in the protocol, refuses the strategy.
_CLOSED_AFTER_OPEN: Final = 2.0
#: What "auto" found working, per socket host, for this process.
_DISCOVERED: dict[str, UrlDerivation] = {}


def forget_discovered_strategies() -> None:
    """Forget which strategy worked for which socket host (the next "auto" probes again)."""
    _DISCOVERED.clear()


@final
@attrs.frozen(kw_only=True)
class StrategyRefusal:
    """One socket strategy the ``"auto"`` strategy tried and the server refused.

    Attributes:
        strategy: ``"raw"``, ``"sockjs"`` or ``"as_is"``.
        kind: ``"http_status"`` (an HTTP status instead of 101), ``"no_upgrade"`` (a 2xx
            without upgrade), ``"redirect"`` (never followed), ``"closed_after_open"``
            (closed before the server said anything), ``"no_sockjs_open"`` (SockJS framing
            without an ``o`` frame).
        status: The HTTP status, for the handshake refusals.
        code: The close code, for the refusals after open.
    """

    strategy: str
    kind: RefusalKind
    status: int | None = None
    code: int | None = None

    def describe(self) -> str:
        """A short human-readable account, e.g. ``"HTTP 404"``."""
        if self.kind == "http_status":
            return f"HTTP {self.status}"
        if self.kind == "no_upgrade":
            return f"HTTP {self.status} without upgrade"
        if self.kind == "redirect":
            return f"redirect (HTTP {self.status}), not followed"
        if self.kind == "no_sockjs_open":
            return "no SockJS open frame"
        return f"closed right after open (code {self.code})"


@attrs.define(kw_only=True)
class Attempt:
    """One connection attempt: its strategy and what it has shown."""

    strategy: UrlDerivation
    framing: Framing
    host: str
    #: Trying the strategy without knowing it works ("auto" and nothing remembered).
    probing: bool = False
    opened_at: float | None = None
    alive: bool = False


@final
class StrategyChooser:
    """The strategy and framing settings of one connection, and what ``"auto"`` tried.

    Args:
        strategy: ``"raw"``, ``"sockjs"``, ``"as_is"`` or ``"auto"``.
        framing: ``"raw"``, ``"sockjs"`` or ``"auto"`` (follow the derivation).
    """

    __slots__ = ("_attempt", "_candidate", "_framing", "_refusals", "in_use", "setting")

    def __init__(
        self, *, strategy: SocketStrategy, framing: Literal["auto", "raw", "sockjs"]
    ) -> None:
        self.setting: SocketStrategy = strategy
        self._framing: Literal["auto", "raw", "sockjs"] = framing
        #: The URL derivation that worked, once known.
        self.in_use: UrlDerivation | None = None
        # "auto": the candidate being tried, and the refusals seen so far.
        self._candidate = 0
        self._refusals: list[StrategyRefusal] = []
        self._attempt: Attempt | None = None

    @property
    def refusals(self) -> list[StrategyRefusal]:
        """What ``"auto"`` tried and was refused, in order."""
        return list(self._refusals)

    def framing_for(self, derivation: UrlDerivation) -> Framing:
        """The framing a socket of ``derivation`` speaks."""
        if self._framing != "auto":
            return self._framing
        return "sockjs" if derivation == "sockjs" else "raw"

    def pick(self, host: str) -> UrlDerivation:
        """The derivation for the next attempt on ``host``."""
        if self.setting != "auto":
            return self.setting
        known = _DISCOVERED.get(host)
        if known is not None:
            self.in_use = known
            return known
        return URL_DERIVATIONS[self._candidate]

    def begin(self, derivation: UrlDerivation, host: str) -> Attempt:
        """An attempt with ``derivation`` starts."""
        attempt = self._attempt = Attempt(
            strategy=derivation,
            framing=self.framing_for(derivation),
            host=host,
            probing=self.setting == "auto" and host not in _DISCOVERED,
        )
        return attempt

    def opened(self, now: float) -> None:
        """The WebSocket of the current attempt opened."""
        if self._attempt is not None:
            self._attempt.opened_at = now

    def proved(self) -> None:
        """The server spoke the protocol on this socket: the strategy works."""
        attempt = self._attempt
        if attempt is None or attempt.alive:
            return
        attempt.alive = True
        self.in_use = attempt.strategy
        if self.setting == "auto" and attempt.probing:
            _DISCOVERED[attempt.host] = attempt.strategy
            refused = "; ".join(f"{r.strategy}: {r.describe()}" for r in self._refusals)
            logger.info(
                "real-time transport for %s: %s (%s framing)%s",
                attempt.host,
                attempt.strategy,
                attempt.framing,
                f" after refusals ({refused})" if refused else "",
            )

    def dropped(self, drop: Drop, now: float) -> Drop | None:
        """The current attempt ended with ``drop``.

        Returns:
            ``None`` to try the next strategy at once (not a failure of the link), else
            the drop to handle (fatal when every strategy was refused).
        """
        attempt = self._attempt
        if attempt is None or not attempt.probing:
            return drop
        refusal = self._classify(attempt, drop, now)
        if refusal is None:
            return drop
        self._refusals.append(refusal)
        logger.debug("socket strategy %s refused: %s", attempt.strategy, refusal.describe())
        if self._candidate + 1 < len(URL_DERIVATIONS):
            self._candidate += 1
            return None
        return self._all_refused(drop)

    def _classify(self, attempt: Attempt, drop: Drop, now: float) -> StrategyRefusal | None:
        """Whether ``drop`` says "not this endpoint" (try the next strategy), and how."""
        if attempt.alive:
            return None
        error = drop.error
        if isinstance(error, HandshakeRejectedError):
            status = error.status_code
            if (
                status in AUTH_HANDSHAKE_STATUSES
                or status in RETRYABLE_HANDSHAKE_STATUSES
                or 500 <= status < 600
            ):
                return None  # the endpoint exists; the usual reconnect rules apply
            kind: RefusalKind = "no_upgrade" if 200 <= status < 300 else "http_status"
            return StrategyRefusal(strategy=attempt.strategy, kind=kind, status=status)
        if isinstance(error, RedirectRefusedError):
            return StrategyRefusal(
                strategy=attempt.strategy, kind="redirect", status=error.status_code
            )
        if attempt.opened_at is None:
            return None  # network trouble: not an answer about the endpoint
        if attempt.framing == "sockjs":
            return StrategyRefusal(strategy=attempt.strategy, kind="no_sockjs_open", code=drop.code)
        if now - attempt.opened_at < _CLOSED_AFTER_OPEN:
            return StrategyRefusal(
                strategy=attempt.strategy, kind="closed_after_open", code=drop.code
            )
        return None

    def _all_refused(self, drop: Drop) -> Drop:
        """Every strategy was refused: a fatal drop that names each refusal."""
        summary = "; ".join(f"{r.strategy}: {r.describe()}" for r in self._refusals)
        message = f"no socket strategy worked ({summary})"
        last = self._refusals[-1]
        self._candidate = 0
        self._refusals = []
        error: GiosgError
        if last.status is not None and last.kind != "redirect":
            error = HandshakeRejectedError(message, status_code=last.status)
        elif last.kind == "redirect":
            error = UntrustedEndpointError(message)
        else:
            error = ConnectionClosedError(
                message, code=last.code if last.code is not None else _ABNORMAL_CLOSURE
            )
        return Drop(
            code=drop.code,
            reason="no socket strategy worked",
            verdict=Verdict(kind=FailureKind.FATAL),
            error=error,
            abort=True,
        )
