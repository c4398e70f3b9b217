"""The one retry rule (``retry_delay`` and ``Retries``): foreground calls and background renewals.

REST calls, visitor auth and OAuth token requests all decide with it; these tests pin
the two modes apart from any of them.
"""

from __future__ import annotations

import pytest

from giosg_visitor import RetryBudget, RetryPolicy
from giosg_visitor._http import Retries, retry_delay
from giosg_visitor.errors import APIError, RateLimitError, ServerError, TransportError
from giosg_visitor.testing import FakeClock


def policy(**kwargs: float) -> RetryPolicy:
    # A budget of its own: the process-wide one is shared with every other test.
    return RetryPolicy(budget=RetryBudget(reserve=1), **kwargs)  # type: ignore[arg-type]


def test_foreground_stops_at_max_attempts_and_deadline() -> None:
    rule = policy(max_attempts=3, first_delay=1.0, deadline=30.0)
    error = TransportError("down")
    assert retry_delay(rule, error, attempt=1, draw=0.5, elapsed=0.0) == pytest.approx(0.5)
    assert retry_delay(rule, error, attempt=3, draw=0.5, elapsed=0.0) is None
    assert retry_delay(rule, error, attempt=1, draw=0.5, elapsed=29.9) is None


def test_foreground_draws_on_the_budget() -> None:
    rule = policy(max_attempts=10)
    error = TransportError("down")
    assert retry_delay(rule, error, attempt=1, draw=0.0, elapsed=0.0) is not None
    assert retry_delay(rule, error, attempt=2, draw=0.0, elapsed=0.0) is None  # reserve 1
    assert rule.budget.refused == 1


def test_foreground_refuses_a_long_retry_after() -> None:
    rule = policy(max_retry_after=60.0)
    error = RateLimitError("slow down", retry_after=600.0)
    assert retry_delay(rule, error, attempt=1, draw=0.0, elapsed=0.0) is None
    short = ServerError("busy", status_code=503, retry_after=7.0)
    assert retry_delay(rule, short, attempt=1, draw=0.0, elapsed=0.0) == 7.0


def test_background_keeps_trying_while_the_old_token_works() -> None:
    """Past max_attempts, deadline and budget, as long as the next try is before expiry."""
    rule = policy(max_attempts=2, first_delay=1.0, max_delay=8.0, deadline=5.0)
    error = TransportError("down")
    spent_budget = [retry_delay(rule, error, attempt=1, draw=0.0, elapsed=0.0)]
    assert spent_budget == [0.0]
    delay = retry_delay(rule, error, attempt=9, draw=0.5, elapsed=500.0, keep_trying_for=100.0)
    assert delay == pytest.approx(4.0)
    assert rule.budget.refused == 0
    assert retry_delay(rule, error, attempt=9, draw=0.5, elapsed=0.0, keep_trying_for=4.0) is None


def test_background_caps_a_long_retry_after_instead_of_giving_up() -> None:
    rule = policy(max_retry_after=60.0)
    error = RateLimitError("slow down", retry_after=600.0)
    assert retry_delay(rule, error, attempt=1, draw=0.0, elapsed=0.0, keep_trying_for=900.0) == 60.0


def test_neither_mode_retries_a_terminal_error() -> None:
    rule = policy()
    error = APIError("bad request", status_code=400)
    assert retry_delay(rule, error, attempt=1, draw=0.0, elapsed=0.0) is None
    assert retry_delay(rule, error, attempt=1, draw=0.0, elapsed=0.0, keep_trying_for=1e9) is None


def test_retries_measure_elapsed_time_and_shrink_later_attempts() -> None:
    clock = FakeClock()
    rule = policy(max_attempts=5, first_delay=1.0, deadline=30.0)
    retries = Retries(rule, clock, lambda: 0.5)
    assert rule.budget.calls == 1
    assert retries.next_attempt() == 1
    assert retries.attempt_timeout(60.0) == 60.0  # the first attempt gets the whole timeout
    clock.blocking_sleep(25.0)
    assert retries.failed(TransportError("down")) == pytest.approx(0.5)
    assert retries.next_attempt() == 2
    assert retries.attempt_timeout(60.0) == pytest.approx(5.0)  # what is left of 30 s
    clock.blocking_sleep(10.0)
    assert retries.attempt_timeout(60.0) == 1.0  # never less than a second
    retries.succeeded()
    assert rule.budget.successes == 1
