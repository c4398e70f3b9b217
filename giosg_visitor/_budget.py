"""The process-wide retry budget: a cap on retries, so that a dead server is not stormed.

Per-call retry limits are not enough when the server is down: a thousand visitors each
retrying three times quadruple the load on a server that is already failing. The budget
lets retries through while they are rare and refuses them once they would be more than a
fixed share of the traffic, the way gRPC's retry throttling and Finagle's ``RetryBudget``
do. Refused retries are not errors of their own: the call raises the failure it had.
"""

from __future__ import annotations

import threading
from typing import final


__all__ = ["PROCESS_RETRY_BUDGET", "RetryBudget"]


@final
class RetryBudget:
    """A cap on retries: a reserve, then a share of the calls and of the successes.

    Every call deposits ``ratio`` of a retry, every success another ``success_ratio``
    (up to ``reserve`` in hand), and every retry withdraws one. With a server that fails
    every request there are no successes, so retries stay at or below
    ``reserve + ratio * calls`` (by default 20 + 10 %); with a server that fails one request
    in ten, the successes pay for the retries it needs (about 0.11 per call), so
    ordinary flakiness is still retried away. A healthy process always has ``reserve``
    retries ready. Thread-safe: one budget may serve visitors on several threads and
    event loops.

    Every :class:`~giosg_visitor.RetryPolicy` uses the process-wide
    :data:`PROCESS_RETRY_BUDGET` unless given its own.

    Args:
        reserve: Retries allowed in a row when nothing has been deposited yet (also the
            most that can be saved up).
        ratio: Retries earned per call.
        success_ratio: Retries earned per successful call, on top of ``ratio``.

    Attributes:
        calls: Calls recorded.
        successes: Successful calls recorded.
        retries: Retries allowed.
        refused: Retries refused because the budget was spent.
    """

    __slots__ = (
        "_balance",
        "_lock",
        "calls",
        "ratio",
        "refused",
        "reserve",
        "retries",
        "success_ratio",
        "successes",
    )

    def __init__(
        self, *, reserve: float = 20.0, ratio: float = 0.1, success_ratio: float = 0.1
    ) -> None:
        if not reserve >= 1:
            raise ValueError("reserve must be at least 1")
        if not 0 <= ratio <= 1:
            raise ValueError("ratio must be within [0, 1]")
        if not 0 <= success_ratio <= 1:
            raise ValueError("success_ratio must be within [0, 1]")
        self.reserve = float(reserve)
        self.ratio = float(ratio)
        self.success_ratio = float(success_ratio)
        self._lock = threading.Lock()
        self._balance = self.reserve
        self.calls = 0
        self.successes = 0
        self.retries = 0
        self.refused = 0

    def __repr__(self) -> str:
        return (
            f"<RetryBudget balance={self._balance:.1f}/{self.reserve:g} ratio={self.ratio:g}"
            f" success_ratio={self.success_ratio:g} calls={self.calls}"
            f" successes={self.successes} retries={self.retries} refused={self.refused}>"
        )

    @property
    def balance(self) -> float:
        """Retries that could be made now."""
        return self._balance

    def record_call(self) -> None:
        """Count a call (its first attempt) and deposit ``ratio``."""
        with self._lock:
            self.calls += 1
            self._balance = min(self.reserve, self._balance + self.ratio)

    def record_success(self) -> None:
        """Count a call that succeeded (at any attempt) and deposit ``success_ratio``."""
        with self._lock:
            self.successes += 1
            self._balance = min(self.reserve, self._balance + self.success_ratio)

    def try_retry(self) -> bool:
        """Withdraw one retry; ``False`` (and nothing withdrawn) when the budget is spent."""
        with self._lock:
            if self._balance >= 1:
                self._balance -= 1
                self.retries += 1
                return True
            self.refused += 1
            return False

    def reset(self) -> None:
        """Back to a full reserve and zero counters (for tests and benchmarks)."""
        with self._lock:
            self._balance = self.reserve
            self.calls = self.successes = self.retries = self.refused = 0


#: The budget every :class:`~giosg_visitor.RetryPolicy` shares unless given another.
PROCESS_RETRY_BUDGET = RetryBudget()
