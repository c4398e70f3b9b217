"""The renewal and retry maths: pure functions first, then the schedule a fleet follows.

The fleet tests run visitors against the fake's app in-process on a ``FakeClock``: the
first renewal after a start is spread wide (a fleet started or restored at once does not
renew in one burst), every later one keeps the narrow jitter (one renewal per token).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from datetime import UTC, datetime

import pytest
from hypothesis import given, strategies as st

from giosg_visitor import MemoryStore, Visitor, VisitorRecord
from giosg_visitor._renewal import (
    DEFAULT_LIFETIME,
    RenewalPolicy,
    RetryPolicy,
    TokenTimes,
    normalise_lifetime,
    parse_retry_after,
)
from giosg_visitor.testing import FakeClock

from .._helpers import VirtualWorld, virtual_world


POLICY = RenewalPolicy()


@given(
    lifetime=st.floats(min_value=POLICY.min_lifetime, max_value=POLICY.max_lifetime),
    jitter=st.floats(min_value=0, max_value=1),
)
def test_soft_point_precedes_hard_point_precedes_expiry(lifetime: float, jitter: float) -> None:
    """Background renewal comes before the hard window, which comes before expiry."""
    lead = min(300, lifetime / 2)
    for spread, width in (
        (None, min(60, lifetime / 10)),
        (POLICY.first_spread(lifetime), min(600, lifetime / 4)),
    ):
        soft = POLICY.soft_offset(lifetime, jitter, spread=spread)
        hard = POLICY.hard_offset(lifetime)
        assert 0 <= soft <= hard < lifetime
        assert lifetime - lead - width - 1e-9 <= soft <= lifetime - lead + 1e-9


def test_giosg_example_lifetime_renews_late_in_its_life() -> None:
    """A 1800 s token renews 24-25 minutes in (the first after a start 17.5-25 minutes in);
    requests block only in the last 30 s."""
    assert POLICY.soft_offset(1800, 0.0) == 1500
    assert POLICY.soft_offset(1800, 1.0) == 1440
    assert POLICY.first_offset(1800, 0.0) == 1500
    assert POLICY.first_offset(1800, 1.0) == 1050
    assert POLICY.hard_offset(1800) == 1770


@given(st.floats(min_value=POLICY.min_lifetime, max_value=POLICY.max_lifetime))
def test_the_first_renewal_spreads_over_a_quarter_of_the_lifetime(lifetime: float) -> None:
    """Visitors started together renew first over min(600 s, lifetime / 4), later renewals
    over min(60 s, lifetime / 10)."""
    first = POLICY.first_offset(lifetime, 0.0) - POLICY.first_offset(lifetime, 1.0)
    assert first == pytest.approx(min(600.0, lifetime / 4))
    later = POLICY.soft_offset(lifetime, 0.0) - POLICY.soft_offset(lifetime, 1.0)
    assert later == pytest.approx(min(60.0, lifetime / 10))
    assert POLICY.first_offset(lifetime, 1.0) >= lifetime / 4 - 1e-9


@given(
    lifetime=st.floats(min_value=POLICY.min_lifetime, max_value=POLICY.max_lifetime),
    age_fraction=st.floats(min_value=0, max_value=1),
    jitter=st.floats(min_value=0, max_value=1),
)
def test_a_restored_token_is_never_due_at_the_start(
    lifetime: float, age_fraction: float, jitter: float
) -> None:
    """A token restored ``age`` seconds after issue renews first between the start and
    its latest soft point (spread as wide as that allows), not at the start itself."""
    lead = min(300, lifetime / 2)
    age = age_fraction * (lifetime - lead)
    spread = POLICY.first_spread(lifetime, age=age)
    times = TokenTimes(issued_at=-age, lifetime=lifetime, jitter=jitter, spread=spread)
    renew_at = times.renew_at(POLICY)  # the start is at 0
    assert renew_at <= lifetime - lead - age + 1e-9
    if lifetime - lead - age >= POLICY.jitter_span(lifetime):
        assert renew_at >= -1e-9
        assert spread == pytest.approx(min(600, lifetime / 4, lifetime - lead - age))
    else:
        # So close to renewal that the narrow jitter alone may reach back past the start.
        assert spread == POLICY.jitter_span(lifetime)


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
    assert TokenTimes(issued_at=100.0, lifetime=1800.0, jitter=1.0).renew_at(POLICY) == 1540.0
    first = TokenTimes(issued_at=100.0, lifetime=1800.0, jitter=1.0, spread=450.0)
    assert first.renew_at(POLICY) == 1150.0
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


# The schedule a fleet follows (FakeClock, the fake's app in-process) ---------------------


class _RecordingStore:
    """A MemoryStore that notes the virtual time of every save (= every token obtained)."""

    def __init__(self, clock: FakeClock) -> None:
        self._inner = MemoryStore()
        self._clock = clock
        self.saves: dict[str, list[float]] = {}

    async def load(self, key: str) -> VisitorRecord | None:
        return await self._inner.load(key)

    async def save(self, key: str, record: VisitorRecord) -> None:
        self.saves.setdefault(key, []).append(self._clock.monotonic())
        await self._inner.save(key, record)

    async def delete(self, key: str) -> None:
        await self._inner.delete(key)

    def lock(self, key: str) -> AbstractAsyncContextManager[None]:
        return self._inner.lock(key)


FLEET = 24
LIFETIME = 1800


def _draw(i: int) -> Callable[[], float]:
    """Visitor i's jitter draw: the fleet's draws evenly cover [0, 1)."""
    return lambda: (i + 0.5) / FLEET


async def _start_fleet(
    world: VirtualWorld, store: _RecordingStore, stack: AsyncExitStack
) -> list[Visitor]:
    return [
        await stack.enter_async_context(world.visitor(store=store, key=f"user-{i}", rng=_draw(i)))
        for i in range(FLEET)
    ]


def _most_in_window(times: list[float], window: float) -> int:
    times = sorted(times)
    best = start = 0
    for end, t in enumerate(times):
        while t - times[start] >= window:
            start += 1
        best = max(best, end - start + 1)
    return best


async def test_a_fleet_started_at_once_renews_first_spread_wide_then_once_per_token() -> None:
    """24 visitors started at one instant, four lifetimes of 1800 s on virtual time.

    The first renewals spread over the wide span (450 s: none closer than the draws allow,
    at most 2 x N / spread in any tenth of it); every later renewal comes at the narrow
    soft point (1440-1500 s after the token it replaces): one renewal per token.
    """
    async with virtual_world(lifetime=LIFETIME) as world, AsyncExitStack() as stack:
        store = _RecordingStore(world.clock)
        started = world.clock.monotonic()
        await _start_fleet(world, store, stack)
        await world.clock.advance(4 * LIFETIME)
        saves = dict(store.saves)
    spread = POLICY.first_spread(LIFETIME)
    assert spread == 450
    firsts = []
    total = 0
    for i in range(FLEET):
        times = saves[f"user-{i}"]
        jitter = (i + 0.5) / FLEET
        assert times[0] == pytest.approx(started)
        renewals = [b - a for a, b in itertools.pairwise(times)]
        assert renewals[0] == pytest.approx(POLICY.first_offset(LIFETIME, jitter), abs=0.5)
        for gap in renewals[1:]:
            assert gap == pytest.approx(POLICY.soft_offset(LIFETIME, jitter), abs=0.5)
            assert 1440 - 0.5 <= gap <= 1500 + 0.5
        firsts.append(times[1])
        total += len(renewals)
    assert max(firsts) - min(firsts) >= 0.95 * spread
    window = spread / 10
    assert _most_in_window(firsts, window) <= 2 * FLEET / spread * window
    # 7,200 s: the first renewal after 1050-1500 s, then one every 1440-1500 s.
    assert total == sum(
        1
        + int(
            (4 * LIFETIME - POLICY.first_offset(LIFETIME, (i + 0.5) / FLEET))
            // POLICY.soft_offset(LIFETIME, (i + 0.5) / FLEET)
        )
        for i in range(FLEET)
    )
    assert total <= 5 * FLEET


async def test_a_fleet_restored_at_once_is_spread_from_the_restart_on() -> None:
    """Tokens issued together and restored together 1150 s later (350 s before their
    latest soft point): no auth at the restart, no renewal at the restart instant, and the
    first renewals spread over the 350 s left instead of a quarter of them due at once."""
    async with virtual_world(lifetime=LIFETIME) as world:
        store = _RecordingStore(world.clock)
        async with AsyncExitStack() as stack:
            await _start_fleet(world, store, stack)
            await world.clock.advance(1000)  # before the earliest first renewal (1050 s)
        assert sum(len(times) for times in store.saves.values()) == FLEET
        await world.clock.advance(150)  # the fleet is down meanwhile
        auths = len(world.giosg.auth_requests)
        restart = world.clock.monotonic()
        async with AsyncExitStack() as stack:
            await _start_fleet(world, store, stack)
            assert len(world.giosg.auth_requests) == auths  # every token restored
            await world.clock.advance(1)
            assert len(world.giosg.auth_requests) == auths  # none due at the restart
            await world.clock.advance(400)
        renewals = [times[1] - restart for times in store.saves.values()]
    assert len(renewals) == FLEET
    left = POLICY.soft_offset(LIFETIME, 0.0) - 1150  # to the latest soft point: 350 s
    assert min(renewals) >= 1
    assert max(renewals) <= left + 1
    assert max(renewals) - min(renewals) >= 0.9 * left
    window = left / 10
    assert _most_in_window(renewals, window) <= 2 * FLEET / left * window
