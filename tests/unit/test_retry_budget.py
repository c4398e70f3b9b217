"""RetryBudget: retries at most ``reserve + ratio * calls``, shared safely across threads."""

from __future__ import annotations

import random
import threading

import pytest

from giosg_visitor import RetryBudget, RetryPolicy
from giosg_visitor._budget import PROCESS_RETRY_BUDGET


def test_a_fresh_budget_allows_the_reserve_then_ratio_of_the_calls() -> None:
    budget = RetryBudget(reserve=5, ratio=0.25, success_ratio=0)
    assert [budget.try_retry() for _ in range(6)] == [True] * 5 + [False]
    for _ in range(8):
        budget.record_call()
    assert [budget.try_retry() for _ in range(3)] == [True, True, False]
    assert (budget.calls, budget.retries, budget.refused) == (8, 7, 2)


def test_savings_never_exceed_the_reserve() -> None:
    budget = RetryBudget(reserve=3, ratio=1.0)
    for _ in range(1000):
        budget.record_call()
    assert budget.balance == 3
    assert sum(budget.try_retry() for _ in range(10)) == 3


def test_the_bound_holds_under_threads() -> None:
    """8 threads, each call followed by as many retries as allowed: <= reserve + ratio*calls."""
    budget = RetryBudget(reserve=20, ratio=0.1)

    def worker() -> None:
        for _ in range(5000):
            budget.record_call()
            while budget.try_retry():
                pass

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert budget.calls == 40_000
    assert budget.retries <= 20 + 0.1 * budget.calls + 1e-6
    assert budget.retries >= 0.1 * budget.calls - 1


@pytest.mark.parametrize(
    ("reserve", "ratio", "success_ratio"),
    [(0, 0.1, 0.1), (20, -0.1, 0.1), (20, 1.5, 0.1), (20, 0.1, -1), (20, 0.1, 2)],
)
def test_invalid_settings_are_refused(reserve: float, ratio: float, success_ratio: float) -> None:
    with pytest.raises(ValueError, match=r"reserve|ratio"):
        RetryBudget(reserve=reserve, ratio=ratio, success_ratio=success_ratio)


def _simulate(budget: RetryBudget, failure_rate: float, calls: int, seed: int) -> int:
    """Calls with up to 3 retries against a server failing at ``failure_rate``: failed calls."""
    rng = random.Random(seed)
    failed = 0
    for _ in range(calls):
        budget.record_call()
        for attempt in range(4):
            if rng.random() >= failure_rate:
                budget.record_success()
                break
            if attempt == 3 or not budget.try_retry():
                failed += 1
                break
    return failed


def test_a_dead_server_gets_the_reserve_and_a_tenth_of_the_calls() -> None:
    budget = RetryBudget()
    assert _simulate(budget, 1.0, 10_000, seed=1) == 10_000
    assert budget.retries <= 20 + 0.1 * budget.calls
    assert budget.retries >= 0.1 * budget.calls - 1


def test_ordinary_flakiness_is_still_retried_away() -> None:
    """10 % of requests failing: the successes pay for the retries (no call fails for
    want of budget; a call fails only when all four attempts fail, about 1 in 10,000)."""
    budget = RetryBudget()
    failed = _simulate(budget, 0.1, 100_000, seed=2)
    assert budget.refused == 0
    assert failed <= 30


def test_policies_share_the_process_budget_unless_given_one() -> None:
    assert RetryPolicy().budget is PROCESS_RETRY_BUDGET
    own = RetryBudget()
    assert RetryPolicy(budget=own).budget is own
    assert RetryPolicy(budget=own) == RetryPolicy()  # the budget is state, not policy
    budget = RetryBudget(reserve=2)
    budget.try_retry()
    assert repr(budget) == (
        "<RetryBudget balance=1.0/2 ratio=0.1 success_ratio=0.1 calls=0 successes=0"
        " retries=1 refused=0>"
    )
