"""The pure renewal and retry maths (no I/O, no clock)."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest
from hypothesis import given, strategies as st

from giosg_visitor._renewal import (
    DEFAULT_LIFETIME,
    RenewalPolicy,
    RetryPolicy,
    TokenTimes,
    normalise_lifetime,
    parse_retry_after,
)


POLICY = RenewalPolicy()


@given(
    lifetime=st.floats(min_value=POLICY.min_lifetime, max_value=POLICY.max_lifetime),
    jitter=st.floats(min_value=0, max_value=1),
)
def test_soft_point_precedes_hard_point_precedes_expiry(lifetime: float, jitter: float) -> None:
    """Background renewal comes before the hard window, which comes before expiry."""
    soft = POLICY.soft_offset(lifetime, jitter)
    hard = POLICY.hard_offset(lifetime)
    assert 0 <= soft <= hard < lifetime
    lead = min(300, lifetime / 2)
    spread = min(600, lifetime / 4)
    assert lifetime - lead - spread - 1e-9 <= soft <= lifetime - lead + 1e-9


def test_giosg_example_lifetime_renews_between_17_5_and_25_minutes() -> None:
    """A 1800 s token renews 17.5-25 minutes in; requests block only in the last 30 s."""
    assert POLICY.soft_offset(1800, 0.0) == 1500
    assert POLICY.soft_offset(1800, 1.0) == 1050
    assert POLICY.hard_offset(1800) == 1770


@given(st.floats(min_value=POLICY.min_lifetime, max_value=POLICY.max_lifetime))
def test_a_synchronized_fleet_spreads_over_a_quarter_of_the_lifetime(lifetime: float) -> None:
    """Visitors started together renew over min(600 s, lifetime / 4), not in one burst."""
    spread = POLICY.soft_offset(lifetime, 0.0) - POLICY.soft_offset(lifetime, 1.0)
    assert spread == pytest.approx(min(600.0, lifetime / 4))
    assert POLICY.soft_offset(lifetime, 1.0) >= lifetime / 4 - 1e-9


@given(st.floats(min_value=POLICY.min_lifetime, max_value=POLICY.max_lifetime))
def test_spacing_is_positive_and_at_most_five_seconds(lifetime: float) -> None:
    """Renewals are spaced, so tiny lifetimes cannot make a renew loop."""
    assert 0 < POLICY.spacing(lifetime) <= 5


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param(1800, 1800.0, id="int"),
        pytest.param(2.5, 2.5, id="float"),
        pytest.param("1800", 1800.0, id="digit-string"),
        pytest.param(None, DEFAULT_LIFETIME, id="missing"),
        pytest.param("soon", DEFAULT_LIFETIME, id="garbage"),
        pytest.param(True, DEFAULT_LIFETIME, id="bool"),
        pytest.param(math.nan, DEFAULT_LIFETIME, id="nan"),
        pytest.param(math.inf, DEFAULT_LIFETIME, id="inf"),
        pytest.param(0, POLICY.min_lifetime, id="zero"),
        pytest.param(-30, POLICY.min_lifetime, id="negative"),
        pytest.param("-30", POLICY.min_lifetime, id="negative-string"),
        pytest.param(10**12, POLICY.max_lifetime, id="huge"),
        pytest.param(10**400, DEFAULT_LIFETIME, id="beyond-float"),
        pytest.param("9" * 400, DEFAULT_LIFETIME, id="beyond-float-string"),
        pytest.param("²", DEFAULT_LIFETIME, id="unicode-digit"),
    ],
)
def test_normalise_lifetime(raw: object, expected: float) -> None:
    """Odd ``expires_in`` values are normalised, never a crash."""
    assert normalise_lifetime(raw, policy=POLICY) == expected


def test_missing_expires_in_uses_expires_at_and_server_time() -> None:
    """Without expires_in, expires_at minus the server's now gives the lifetime."""
    at = datetime(2026, 1, 1, 12, 30, tzinfo=UTC)
    now = datetime(2026, 1, 1, 12, 0, tzinfo=UTC).timestamp()
    assert normalise_lifetime(None, expires_at=at, server_now=now, policy=POLICY) == 1800


@given(st.one_of(st.none(), st.integers(), st.floats(), st.text(), st.booleans()))
def test_normalise_lifetime_never_leaves_the_range(raw: object) -> None:
    """Whatever the server sends, the lifetime stays within the policy's range."""
    value = normalise_lifetime(raw, policy=POLICY)
    assert POLICY.min_lifetime <= value <= POLICY.max_lifetime


def test_token_times_windows() -> None:
    """A token is usable until its hard point and due for renewal after its soft point."""
    times = TokenTimes(issued_at=100.0, lifetime=1800.0, jitter=0.0)
    assert times.renew_at(POLICY) == 1600.0
    assert times.is_usable(1869.9, POLICY)
    assert not times.is_usable(1870.0, POLICY)
    assert not times.needs_renewal(1599.9, POLICY)
    assert times.needs_renewal(1600.0, POLICY)
    assert times.expires_at == 1900.0


@given(attempt=st.integers(min_value=1, max_value=50), draw=st.floats(0, 1))
def test_retry_delay_is_full_jitter_within_the_cap(attempt: int, draw: float) -> None:
    """Retry delays lie in [0, min(cap, first * 2**(n-1))]."""
    policy = RetryPolicy()
    delay = policy.delay(attempt, draw)
    assert 0 <= delay <= min(policy.max_delay, policy.first_delay * 2 ** (attempt - 1))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("5", 5.0, id="seconds"),
        pytest.param(" 12 ", 12.0, id="spaces"),
        pytest.param("1.5", 1.5, id="fraction"),
        pytest.param("-3", 0.0, id="negative"),
        pytest.param("Thu, 01 Jan 2026 00:00:30 GMT", 30.0, id="http-date"),
        pytest.param("Wed, 31 Dec 2025 23:59:00 GMT", 0.0, id="http-date-past"),
        pytest.param("soon", None, id="garbage"),
        pytest.param("²", None, id="unicode-digit"),
        pytest.param("", None, id="empty"),
        pytest.param(None, None, id="absent"),
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    """Retry-After is understood as seconds or as an HTTP-date."""
    now = datetime(2026, 1, 1, tzinfo=UTC).timestamp()
    assert parse_retry_after(value, now=now) == expected


@given(st.text())
def test_parse_retry_after_never_raises(value: str) -> None:
    """Any header text gives a non-negative number or None."""
    result = parse_retry_after(value, now=0.0)
    assert result is None or result >= 0
