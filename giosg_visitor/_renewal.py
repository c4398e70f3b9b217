"""Pure renewal and retry maths: no I/O, no clock reads, no hidden randomness.

Every function takes "now" and any random draw as arguments so that it can be tested
exhaustively. The numbers (when to renew, how long a request may wait for a renewal,
how retries back off) live in :class:`RenewalPolicy` and :class:`RetryPolicy` so there
is one place to change them; ``tests/reliability/README.md`` lists the tests that hold
them to account.
"""

from __future__ import annotations

import email.utils
import math
import re
from datetime import UTC, datetime
from typing import Any, Final

import attrs

from ._budget import PROCESS_RETRY_BUDGET, RetryBudget


__all__ = [
    "RenewalPolicy",
    "Renewals",
    "RetryPolicy",
    "TokenTimes",
    "normalise_lifetime",
    "parse_retry_after",
]

# ASCII digits only: str.isdigit() also accepts "²" and other digits int() refuses.
_INTEGER: Final = re.compile(r"-?[0-9]+")

#: Used when the server sends no usable ``expires_in`` and no usable ``expires_at``.
DEFAULT_LIFETIME: Final = 600.0


@attrs.frozen(kw_only=True)
class RenewalPolicy:
    """When to renew a token that lives ``lifetime`` seconds.

    * Soft point (background renewal): ``lifetime - min(max_lead, lifetime * lead_fraction)``
      minus a per-visitor jitter of up to ``min(max_jitter, lifetime * jitter_fraction)``.
    * The first renewal after a start (a fresh auth or a token restored from the store)
      is spread wider: up to ``min(max_first_spread, lifetime * first_spread_fraction)``
      before the latest soft point (and never before the start itself). A fleet started
      at once (a restart) then renews its first wave over that span, about ``N / spread``
      per second, instead of in one burst. Later renewals keep the narrow jitter: a fleet
      once spread stays spread, and a token is renewed late in its life (1800 s tokens:
      1440-1500 s after issue), so the wide spread costs one early renewal per start, not
      one in six for good.
    * Hard window: in the last ``min(max_hard_window, lifetime * hard_fraction)`` seconds a
      request waits for the one renewal instead of sending the old token.
    * Lifetimes are clamped into ``[min_lifetime, max_lifetime]``.
    * Successive renewals are at least ``min(min_spacing, lifetime / 4)`` apart, so a server
      that keeps answering tiny lifetimes cannot make a renew loop.
    * A stored token is reused at start-up only with ``min(restore_margin, lifetime *
      restore_fraction)`` seconds left (:meth:`restore_margin_for`): a fixed 10 minutes
      would never let a short OAuth token be reused, and half the lifetime keeps a
      restored token clear of the hard window. Visitor tokens and OAuth client tokens
      follow this one rule.

    Attributes:
        max_lead: Upper bound of how early the soft point is before expiry.
        lead_fraction: The soft point is at most this fraction of the lifetime early.
        max_jitter: Upper bound of the per-visitor jitter of later renewals, seconds.
        jitter_fraction: That jitter as a fraction of the lifetime.
        max_first_spread: Upper bound of the spread of the first renewal after a start.
        first_spread_fraction: That spread as a fraction of the lifetime.
        max_hard_window: Upper bound of the hard window, seconds.
        hard_fraction: Hard window as a fraction of the lifetime.
        min_lifetime: Smallest lifetime believed.
        max_lifetime: Largest lifetime believed.
        min_spacing: Minimum seconds between two renewals.
        restore_margin: Upper bound of the seconds a stored token must have left to be
            reused.
        restore_fraction: The same as a fraction of the lifetime.
    """

    max_lead: float = 300.0
    lead_fraction: float = 0.5
    max_jitter: float = 60.0
    jitter_fraction: float = 0.1
    max_first_spread: float = 600.0
    first_spread_fraction: float = 0.25
    max_hard_window: float = 30.0
    hard_fraction: float = 0.25
    min_lifetime: float = 1.0
    max_lifetime: float = 86_400.0
    min_spacing: float = 5.0
    restore_margin: float = 600.0
    restore_fraction: float = 0.5

    def soft_offset(self, lifetime: float, jitter: float, *, spread: float | None = None) -> float:
        """Seconds after issue at which to renew in the background.

        Args:
            lifetime: The normalised lifetime.
            jitter: A draw in ``[0, 1)``, fixed per visitor so renewals spread out.
            spread: The span the jitter covers (default: :meth:`jitter_span`; the first
                renewal after a start passes :meth:`first_spread`).
        """
        lead = min(self.max_lead, lifetime * self.lead_fraction)
        if spread is None:
            spread = self.jitter_span(lifetime)
        # Never negative; never after the hard point (lead >= hard window by construction).
        return max(0.0, lifetime - lead - max(0.0, spread) * _unit(jitter))

    def first_offset(self, lifetime: float, jitter: float) -> float:
        """Seconds after issue of the first renewal after a start (a freshly issued token).

        ``soft_offset(lifetime, jitter, spread=first_spread(lifetime))``.
        """
        return self.soft_offset(lifetime, jitter, spread=self.first_spread(lifetime))

    def jitter_span(self, lifetime: float) -> float:
        """The span of the per-visitor jitter of a renewal after the first one."""
        return min(self.max_jitter, lifetime * self.jitter_fraction)

    def first_spread(self, lifetime: float, *, age: float = 0.0) -> float:
        """The span of the jitter of the first renewal after a start.

        Wide, so that a fleet started (or restored) at once renews spread out; but for a
        token that is ``age`` seconds old already (restored from the store) at most the
        time left until its latest soft point, so that none is due at the start itself.
        Never narrower than :meth:`jitter_span`.

        Args:
            lifetime: The normalised lifetime.
            age: How long ago the token was issued when the visitor started.
        """
        lead = min(self.max_lead, lifetime * self.lead_fraction)
        wide = min(self.max_first_spread, lifetime * self.first_spread_fraction)
        left = lifetime - lead - max(0.0, age)
        return max(self.jitter_span(lifetime), min(wide, left))

    def hard_offset(self, lifetime: float) -> float:
        """Seconds after issue from which requests wait for the renewal."""
        return lifetime - min(self.max_hard_window, lifetime * self.hard_fraction)

    def spacing(self, lifetime: float) -> float:
        """Minimum seconds between two renewals for tokens of this lifetime."""
        return min(self.min_spacing, lifetime / 4)

    def restore_margin_for(self, lifetime: float) -> float:
        """Seconds a stored token of this lifetime must have left to be reused."""
        return min(self.restore_margin, lifetime * self.restore_fraction)


@attrs.frozen(kw_only=True)
class TokenTimes:
    """When a token was obtained and when it must be renewed, on the monotonic clock.

    ``issued_at`` is taken *before* the auth request was sent, so every deadline is early
    by the request's latency, never late. ``spread`` is the jitter span of this token's
    renewal when it is the first after a start (:meth:`RenewalPolicy.first_spread`);
    ``None`` for the narrow jitter of every later renewal.
    """

    issued_at: float
    lifetime: float
    jitter: float
    spread: float | None = None

    def renew_at(self, policy: RenewalPolicy) -> float:
        """Monotonic time of the background renewal."""
        return self.issued_at + policy.soft_offset(self.lifetime, self.jitter, spread=self.spread)

    def hard_at(self, policy: RenewalPolicy) -> float:
        """Monotonic time from which the token is not handed out any more."""
        return self.issued_at + policy.hard_offset(self.lifetime)

    @property
    def expires_at(self) -> float:
        """Monotonic time of expiry."""
        return self.issued_at + self.lifetime

    def is_usable(self, now: float, policy: RenewalPolicy) -> bool:
        """Whether a request may carry this token at ``now``."""
        return now < self.hard_at(policy)

    def needs_renewal(self, now: float, policy: RenewalPolicy) -> bool:
        """Whether the background renewal point has passed."""
        return now >= self.renew_at(policy)


@attrs.define
class Renewals:
    """Single-flight bookkeeping shared by every token renewal (visitor and OAuth).

    One renewal sequence runs at a time, under the owner's lock. A caller takes a
    :meth:`ticket` before waiting for that lock; once it holds it, a sequence that
    finished meanwhile (:meth:`ran_since`) is shared: its failure is raised to the
    caller, or its token used, instead of starting another sequence.

    Attributes:
        finished: Renewal sequences finished so far.
        last_failure: How the last one failed (``None``: it succeeded).
    """

    finished: int = 0
    last_failure: Exception | None = None

    def ticket(self) -> int:
        """Taken before waiting for the renewal lock."""
        return self.finished

    def ran_since(self, ticket: int) -> bool:
        """Whether a sequence finished after ``ticket`` was taken."""
        return self.finished != ticket

    def record(self, failure: Exception | None) -> None:
        """A sequence finished (``failure`` is ``None`` when it succeeded)."""
        self.finished += 1
        self.last_failure = failure


def normalise_lifetime(
    expires_in: Any,
    *,
    expires_at: datetime | None = None,
    server_now: float | None = None,
    policy: RenewalPolicy,
) -> float:
    """Turn the server's ``expires_in`` into a lifetime the SDK can plan with.

    Missing or unusable values never crash and never cause a renew loop:

    * an int/float/digit string is used as is, then clamped into the policy's range;
    * ``None``, non-numeric, NaN or infinite: ``expires_at - server_now`` when both are
      known, else :data:`DEFAULT_LIFETIME`;
    * zero or negative: the policy minimum (the spacing guard then bounds renewals).

    Args:
        expires_in: The raw ``expires_in`` value from the response.
        expires_at: The parsed ``expires_at``, if any.
        server_now: The server's current UNIX time (its ``Date`` header), if known.
        policy: Supplies the clamp range.
    """
    value: float | None = None
    if isinstance(expires_in, bool):
        value = None
    elif isinstance(expires_in, int | float):
        value = _to_float(expires_in)
    elif isinstance(expires_in, str) and _INTEGER.fullmatch(expires_in.strip()):
        value = _to_float(expires_in.strip())
    if value is None or math.isnan(value) or math.isinf(value):
        if expires_at is not None and server_now is not None:
            value = expires_at.timestamp() - server_now
        else:
            value = DEFAULT_LIFETIME
    return min(policy.max_lifetime, max(policy.min_lifetime, value))


@attrs.frozen(kw_only=True)
class RetryPolicy:
    """Full-jitter exponential backoff with a cap, an attempt limit and a deadline.

    Attributes:
        first_delay: Upper bound of the first delay, seconds.
        factor: Growth per attempt.
        max_delay: Cap of any single delay.
        max_attempts: Attempts in all (the first try included).
        deadline: Seconds a whole call may spend retrying.
        max_retry_after: A ``Retry-After`` longer than this is not waited for in a call.
        budget: The :class:`~giosg_visitor.RetryBudget` every retry draws on: the
            process-wide one unless given another (a server that fails everything gets
            at most 20 retries plus 10 % of the calls, not ``max_attempts`` per call).
    """

    first_delay: float = 0.5
    factor: float = 2.0
    max_delay: float = 8.0
    max_attempts: int = 4
    deadline: float = 30.0
    max_retry_after: float = 60.0
    budget: RetryBudget = attrs.field(default=PROCESS_RETRY_BUDGET, eq=False, repr=False)

    def delay(self, attempt: int, draw: float) -> float:
        """Seconds to wait before retry number ``attempt`` (1-based), full jitter.

        Args:
            attempt: 1 for the first retry.
            draw: A random number in ``[0, 1)``.
        """
        ceiling = min(self.max_delay, self.first_delay * self.factor ** max(0, attempt - 1))
        return ceiling * _unit(draw)


def parse_retry_after(value: str | None, *, now: float) -> float | None:
    """Parse an HTTP ``Retry-After`` (delay-seconds or HTTP-date) into seconds from ``now``.

    Negative results are clamped to 0; garbage gives ``None`` (use the default backoff).

    Args:
        value: The header value.
        now: The current UNIX time (only used for the HTTP-date form).
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    if _INTEGER.fullmatch(text):
        return max(0.0, _to_float(text))
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now)


def _to_float(value: str | int | float) -> float:
    """``float()`` that turns values beyond float range into infinity instead of raising."""
    try:
        return float(int(value)) if isinstance(value, str) else float(value)
    except OverflowError:
        return math.inf


def _unit(draw: float) -> float:
    """Clamp a random draw into ``[0, 1]`` (robust against a careless injected RNG)."""
    if not math.isfinite(draw):
        return 0.0
    return min(1.0, max(0.0, draw))
