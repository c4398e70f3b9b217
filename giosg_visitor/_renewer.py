"""A visitor's background renewal: renew before the token expires, save what the store missed.

It runs as calls on the event loop's shared :class:`~giosg_visitor._timers.Timers` (one
task for every visitor), and borrows a short-lived task of the visitor's only while it
renews or saves: an idle visitor has no renewal task.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from typing import Final, final

import anyio.abc

from ._auth import VisitorSession
from ._clock import Clock
from ._renewal import RenewalPolicy, RetryPolicy
from ._timers import Timer, Timers
from .errors import GiosgError, RenewalFailedError


__all__ = ["ScheduledRenewal"]

logger = logging.getLogger("giosg_visitor.visitor")

#: Failed background renewals (and saves) back off at most this long.
_MAX_BACKOFF: Final = 30.0


@final
class ScheduledRenewal:
    """Renews a session's token at its renewal point; failures become state, not crashes.

    After every renewal (its own, or one made on demand meanwhile) it hands the new token
    to the socket through ``reauthorize``. A token the store could not take (down,
    locked, read-only) is saved again on a backoff schedule between renewals; the store
    being down never ends the visitor. It stops for good when the session fails
    (a :class:`~giosg_visitor.errors.SessionError` is terminal) or is :meth:`cancel`\\ ed.

    Args:
        session: The visitor's session.
        timers: Where the schedule lives.
        group: Runs each renewal or save (a task only while it works).
        clock: The session's clock.
        policy: When tokens are renewed.
        retry: How failed renewals back off.
        rng: Random draws in ``[0, 1)`` for jitter.
        reauthorize: Hands the current token to the socket (a no-op when it has it).
    """

    __slots__ = (
        "_clock",
        "_failures",
        "_group",
        "_policy",
        "_reauthorize",
        "_retry",
        "_rng",
        "_save_at",
        "_save_failures",
        "_session",
        "_stopped",
        "_timer",
        "_timers",
    )

    def __init__(
        self,
        session: VisitorSession,
        *,
        timers: Timers,
        group: anyio.abc.TaskGroup,
        clock: Clock,
        policy: RenewalPolicy,
        retry: RetryPolicy,
        rng: Callable[[], float],
        reauthorize: Callable[[], Awaitable[None]],
    ) -> None:
        self._session = session
        self._timers = timers
        self._group = group
        self._clock = clock
        self._policy = policy
        self._retry = retry
        self._rng = rng
        self._reauthorize = reauthorize
        self._failures = 0
        self._save_failures = 0
        self._save_at: float | None = None
        self._timer: Timer | None = None
        self._stopped = False
        self._arm()

    def __repr__(self) -> str:
        return f"<ScheduledRenewal failures={self._failures}>"

    def cancel(self) -> None:
        """Stop scheduling (a renewal already running is cancelled with its task group)."""
        self._stopped = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _arm(self) -> None:
        """Schedule the next step: the renewal point, or an earlier save attempt."""
        if self._stopped:
            return
        session, now = self._session, self._clock.monotonic()
        wait = session.seconds_until_renewal()
        if session.has_unsaved:
            if self._save_at is None:
                self._save_at = now + self._save_backoff(self._save_failures + 1)
            wait = min(wait, max(0.0, self._save_at - now))
        else:
            self._save_at, self._save_failures = None, 0
        self._timer = self._timers.call_later(wait, self._due)

    def _due(self) -> None:
        self._timer = None
        if self._stopped:
            return
        self._group.start_soon(self._step, name="giosg_visitor renewal")

    async def _step(self) -> None:
        session, clock = self._session, self._clock
        if self._save_at is not None and clock.monotonic() >= self._save_at:
            if await session.save_unsaved():
                self._save_at, self._save_failures = None, 0
            else:
                self._save_failures += 1
                self._save_at = clock.monotonic() + self._save_backoff(self._save_failures + 1)
            if session.seconds_until_renewal() > 0:
                self._arm()
                return
        token = session.current
        if token is not None and not token.times.needs_renewal(clock.monotonic(), self._policy):
            # Renewed on demand meanwhile: the socket's subscriptions still need it.
            await self._reauthorize()
            self._arm()
            return
        try:
            await session.renew(stale=token, background=True)
            await self._reauthorize()
        except RenewalFailedError as exc:
            logger.warning("background renewal failed: %s", exc)
        except GiosgError as exc:
            if session.failure is not None:
                logger.error("visitor session failed: %s", type(exc).__name__)
                return
            logger.warning("background renewal failed: %s", type(exc).__name__)
        else:
            self._failures = 0
            self._arm()
            return
        self._failures += 1
        delay = min(_MAX_BACKOFF, self._retry.delay(self._failures, self._rng() or 0.5))
        delay = max(delay, 0.1) if math.isfinite(delay) else 1.0
        if not self._stopped:
            self._timer = self._timers.call_later(delay, self._arm)

    def _save_backoff(self, attempt: int) -> float:
        """Seconds before save attempt ``attempt`` of an unsaved token: capped, jittered."""
        # The retry policy's schedule, as for a failed call.
        retry = self._retry
        ceiling = min(
            retry.max_delay,
            _MAX_BACKOFF,
            retry.first_delay * retry.factor ** min(max(0, attempt - 1), 32),
        )
        # Half fixed, half random: spread out, yet never a tight loop against the store.
        delay = ceiling * (0.5 + 0.5 * self._rng())
        return delay if math.isfinite(delay) and delay > 0 else 1.0
