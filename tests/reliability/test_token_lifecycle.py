"""The token lifecycle on virtual time (the fake app in-process, FakeClock).

Already covered elsewhere (see README.md): 1,000 callers in the hard window share one
renewal (``tests/unit/test_visitor_virtual.py``), the always-401 server is bounded, a revoked
secret stops all auth calls, static-token 401s are terminal (``tests/unit/test_credentials.py``).
"""

from __future__ import annotations

import itertools
import random
from typing import Any

import anyio
import httpx
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from giosg_visitor import (
    APIError,
    AuthenticationError,
    GiosgError,
    InvalidSecretError,
    PermissionDeniedError,
    RenewalPolicy,
    SessionState,
    Visitor,
)
from giosg_visitor.testing import FakeClock, FakeGiosg

from ._support import FaultOdds, FlakyTransport, World, virtual_fake
from .figures import Figures


POLICY = RenewalPolicy()
CALLS = 1000


async def _calls(world: World, visitor: Visitor, count: int) -> list[tuple[int, float]]:
    """``count`` concurrent GETs; returns (status, virtual completion time) of each."""
    results: list[tuple[int, float]] = []

    async def call() -> None:
        response = await world.get_chats(visitor)
        results.append((response.status_code, world.clock.monotonic()))

    async with anyio.create_task_group() as tg:
        for _ in range(count):
            tg.start_soon(call)
        # Up to 5 s of spacing after the previous attempt, plus 2 s of auth latency.
        await world.clock.advance(15)
    return results


class TestSingleFlight:
    """One renewal per state transition, however many callers need it."""

    async def test_soft_window_callers_use_the_old_token_during_the_one_renewal(
        self, figures: Figures
    ) -> None:
        """1,000 calls while the background renewal is in flight: none waits, one auth."""
        async with virtual_fake(lifetime=1800) as world, world.visitor(rng=lambda: 0.5) as v:
            issued = world.giosg.auth_requests[0].at
            soft = issued + POLICY.first_offset(1800, 0.5)
            world.giosg.inject(endpoint="auth", latency=2.0)
            await world.clock.run_until(soft + 1)  # the renewal is now in flight for 2 s
            assert v.state is SessionState.RENEWING
            results = await _calls(world, v, CALLS)
            figures.add("trials.concurrent_calls", CALLS)
        assert [status for status, _ in results] == [200] * CALLS
        # Every call finished before the renewal did: they all carried the old token.
        assert {at for _, at in results} == {soft + 1}
        assert len(world.giosg.auth_requests) == 2
        assert world.giosg.state.max_auth_in_flight == 1
        assert world.giosg.expired_token_requests == []

    async def test_callers_of_an_expired_token_share_one_renewal(self, figures: Figures) -> None:
        """After the token expired (auth was down), 1,000 calls cause exactly one auth."""
        async with virtual_fake(lifetime=1800) as world, world.visitor(rng=lambda: 0.5) as v:
            issued = world.giosg.auth_requests[0].at
            outage = world.giosg.inject(endpoint="auth", status=503, times=10_000)
            await world.clock.run_until(issued + 1810)
            assert v.state in (SessionState.EXPIRED, SessionState.RENEWING)
            outage.times = 0
            world.giosg.inject(endpoint="auth", latency=2.0)
            before = len(world.giosg.auth_requests)
            results = await _calls(world, v, CALLS)
            figures.add("trials.concurrent_calls", CALLS)
        assert [status for status, _ in results] == [200] * CALLS
        assert len(world.giosg.auth_requests) == before + 1
        assert world.giosg.state.max_auth_in_flight == 1
        assert world.giosg.expired_token_requests == []

    async def test_a_renewal_that_fails_once_still_has_one_auth_in_flight(
        self, figures: Figures
    ) -> None:
        """Hard window, first attempt 503: callers share one sequence, never two auths at once."""
        async with virtual_fake(lifetime=1800) as world, world.visitor(rng=lambda: 0.5) as v:
            issued = world.giosg.auth_requests[0].at
            outage = world.giosg.inject(endpoint="auth", status=503, times=10_000)
            await world.clock.run_until(issued + POLICY.hard_offset(1800) + 5)
            outage.times = 0
            world.giosg.inject(endpoint="auth", status=503, latency=2.0)
            world.giosg.inject(endpoint="auth", latency=2.0)
            before = len(world.giosg.auth_requests)
            results = await _calls(world, v, CALLS)
            figures.add("trials.concurrent_calls", CALLS)
            figures.add("faults.auth_503", 1)
        assert [status for status, _ in results] == [200] * CALLS
        assert [r.status for r in world.giosg.auth_requests[before:]] == [503, 200]
        assert world.giosg.state.max_auth_in_flight == 1
        assert world.giosg.expired_token_requests == []


# Proactive refresh --------------------------------------------------------------------------

LIFETIMES = [
    pytest.param(1, id="1s"),
    pytest.param(5, id="5s"),
    pytest.param(30, id="30s"),
    pytest.param(300, id="300s"),
    pytest.param(1800, id="1800s"),
    pytest.param(86_400, id="86400s"),
]


async def _ten_lifetimes(
    lifetime: float, *, draw: float, latency: float, interval: float
) -> tuple[list[int], FakeGiosg]:
    """Run a visitor for ten lifetimes with traffic every ``interval`` and auth ``latency``."""
    async with virtual_fake(lifetime=lifetime) as world:
        async with world.visitor(rng=lambda: draw) as visitor:
            slow = world.giosg.inject(endpoint="auth", latency=latency, times=1_000_000)
            statuses: list[int] = []

            async def traffic() -> None:
                while True:
                    statuses.append((await world.get_chats(visitor)).status_code)
                    await world.clock.sleep(interval)

            async with anyio.create_task_group() as tg:
                tg.start_soon(traffic)
                await world.clock.advance(10 * lifetime)
                tg.cancel_scope.cancel()
            # Let a renewal in flight finish: the SDK shields auth from cancellation (for
            # up to 60 real seconds), and its latency runs on the virtual clock.
            slow.times = 0
            await world.clock.advance(latency + 1)
        return statuses, world.giosg


@pytest.mark.parametrize("draw", [0.0, 0.999], ids=["jitter-0", "jitter-max"])
@pytest.mark.parametrize("lifetime", LIFETIMES)
async def test_proactive_refresh_never_sends_an_expired_token(
    lifetime: int, draw: float, figures: Figures
) -> None:
    """Ten lifetimes, auth latency lifetime/4 (max 20 s): zero expired-token requests."""
    latency = min(20.0, lifetime / 4)
    statuses, giosg = await _ten_lifetimes(
        lifetime, draw=draw, latency=latency, interval=lifetime / 20
    )
    figures.add("trials.token_lifetimes", 10)
    assert giosg.expired_token_requests == []
    assert set(statuses) == {200}
    starts = [r.at for r in giosg.auth_requests]
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    lead = min(300, lifetime / 2)
    for k, gap in enumerate(gaps):
        # Renewal starts in [lifetime - lead - jitter, lifetime - hard window], and never
        # closer together than the policy's spacing. The first renewal after the start
        # has the wide jitter, every later one the narrow one.
        jitter = POLICY.first_spread(lifetime) if k == 0 else POLICY.jitter_span(lifetime)
        assert lifetime - lead - jitter - 1e-6 <= gap <= POLICY.hard_offset(lifetime) + 1e-6
        assert gap >= POLICY.spacing(lifetime) - 1e-6
    # One renewal per token (each gap is at least the soft offset, checked above), and no
    # token outlived its hard point without one.
    assert len(gaps) >= 10 * lifetime / POLICY.hard_offset(lifetime) - 1


async def _property_body(lifetime: int, latency_fraction: float, interval: float, draw: float):
    latency = min(20.0, lifetime / 4) * latency_fraction
    statuses, giosg = await _ten_lifetimes(
        lifetime, draw=draw, latency=latency, interval=max(0.05, lifetime * interval)
    )
    assert giosg.expired_token_requests == []
    assert set(statuses) == {200}


_PROPERTY = {
    "lifetime": st.sampled_from([2, 3, 5, 7, 30, 300, 1800]),
    "latency_fraction": st.floats(0, 1),
    "interval": st.floats(0.01, 0.5),
    "draw": st.floats(0, 1, exclude_max=True),
}


@settings(
    max_examples=6,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(**_PROPERTY)
async def test_proactive_refresh_property(
    lifetime: int, latency_fraction: float, interval: float, draw: float, figures: Figures
) -> None:
    """Property: any lifetime, latency, traffic and jitter: no expired-token request."""
    figures.add("trials.token_lifetimes", 10)
    await _property_body(lifetime, latency_fraction, interval, draw)


@pytest.mark.slow
@settings(
    max_examples=300,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(**_PROPERTY)
async def test_proactive_refresh_property_long(
    lifetime: int, latency_fraction: float, interval: float, draw: float, figures: Figures
) -> None:
    """Property, long run: 300 examples of ten lifetimes each."""
    figures.add("trials.token_lifetimes", 10)
    await _property_body(lifetime, latency_fraction, interval, draw)


# A 401 for a superseded token ---------------------------------------------------------------


async def test_a_401_for_a_superseded_token_does_not_renew_again() -> None:
    """A 401 that answers an older token retries with the current one, no renewal."""
    async with virtual_fake() as world, world.visitor() as visitor:
        await world.clock.advance(10)  # past the minimum spacing between renewals
        world.giosg.inject(endpoint="api", status=401, latency=5.0)
        results: list[int] = []

        async def call() -> None:
            results.append((await world.get_chats(visitor)).status_code)

        async with anyio.create_task_group() as tg:
            tg.start_soon(call)
            await anyio.wait_all_tasks_blocked()  # in flight with the first token
            await visitor.renew()  # a second token arrives meanwhile
            await world.clock.advance(6)  # then the 401 for the first token
        assert results == [200]
    api = [r for r in world.giosg.requests if r.token_status != "none"]
    assert [r.status for r in api] == [401, 200]
    assert len(world.giosg.auth_requests) == 2  # start + the explicit renewal only


# A flaky auth endpoint ----------------------------------------------------------------------

FLAKY_AUTH = FaultOdds(
    status_503=0.10,
    status_429=0.05,
    retry_after=(1, 5),
    reset_before=0.015,
    reset_after=0.015,
    latency=(0.05, 0.5),
)


async def _flaky_renewals(visitors: int, hours: float, figures: Figures) -> None:
    lifetime = 300.0
    armed = False
    transports: list[FlakyTransport] = []

    def odds(request: httpx.Request) -> FaultOdds | None:
        return FLAKY_AUTH if armed and request.url.path.endswith("/auth") else None

    def wrap(inner: httpx.AsyncBaseTransport, clock: FakeClock) -> httpx.AsyncBaseTransport:
        rng = random.Random(visitors)
        transports.append(FlakyTransport(inner, clock=clock, rng=rng, odds=odds))
        return transports[0]

    async with virtual_fake(lifetime=lifetime, wrap=wrap) as w:
        failures: list[str] = []
        statuses: list[int] = []
        async with anyio.create_task_group() as tg:

            async def run(index: int, *, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
                rng = random.Random(index)
                async with w.visitor(rng=rng.random) as visitor:
                    task_status.started()
                    await w.clock.sleep(rng.uniform(0, 60))
                    while True:
                        try:
                            statuses.append((await w.get_chats(visitor)).status_code)
                        except GiosgError as exc:
                            failures.append(type(exc).__name__)
                        await w.clock.sleep(60)

            for index in range(visitors):
                await tg.start(run, index)
            armed = True  # the visitors are up: the auth endpoint turns flaky from now on
            flaky = transports[0]
            await w.clock.advance(hours * 3600)
            # Auth is shielded from cancellation: let renewals in flight finish first.
            armed = False
            await w.clock.advance(FLAKY_AUTH.latency[1] + 1)
            tg.cancel_scope.cancel()
        injected = sum(flaky.injected.values())
        figures.add("trials.visitor_hours", int(visitors * hours))
        figures.add("faults.flaky_auth", injected)
        giosg = w.giosg
        renewals = [r for r in giosg.auth_requests if r.sent_secret]
        renewals_ok = flaky.delivered["ok"]
    assert failures == []
    assert set(statuses) == {200}
    assert giosg.expired_token_requests == []
    assert flaky.max_in_flight == 1, "a visitor had two renewals in flight"
    assert injected > visitors  # the endpoint really was flaky
    # Attempts (including the failed ones the server never saw) within 1.5x of the
    # renewals that would have been needed without failures.
    attempts = renewals_ok + injected
    assert attempts <= 1.5 * renewals_ok
    assert len(renewals) <= visitors * (hours * 3600 / POLICY.soft_offset(lifetime, 1.0) + 1)


async def test_renewal_under_a_flaky_auth_endpoint(figures: Figures) -> None:
    """50 visitors, 1 h, auth failing 18 % (503, 429, resets): no visible failure."""
    await _flaky_renewals(visitors=50, hours=1.0, figures=figures)


@pytest.mark.slow
async def test_renewal_under_a_flaky_auth_endpoint_long(figures: Figures) -> None:
    """Long run: 500 visitors, 3 h virtual, the same fault plan."""
    await _flaky_renewals(visitors=500, hours=3.0, figures=figures)


# Terminal errors ----------------------------------------------------------------------------

TERMINAL = [
    pytest.param(400, {"error": "invalid_grant"}, id="400-invalid_grant"),
    pytest.param(400, {"error": "invalid_client"}, id="400-invalid_client"),
    pytest.param(400, {"error": "invalid_request"}, id="400-invalid_request"),
    pytest.param(400, {"visitor_secret_id": ["Invalid visitor secret."]}, id="400-unknown-secret"),
    pytest.param(401, {"detail": "Authentication failed."}, id="401"),
    pytest.param(403, {"detail": "Forbidden."}, id="403"),
    pytest.param(404, {"detail": "Not found."}, id="404"),
    pytest.param(None, None, id="revoked-secret"),
]


@pytest.mark.parametrize(("status", "body"), TERMINAL)
async def test_terminal_renewal_error_stops_every_call(
    status: int | None, body: Any, figures: Figures
) -> None:
    """A terminal auth answer at renewal: one auth request, FAILED, then no I/O at all."""
    async with virtual_fake(lifetime=300) as world, world.visitor(rng=lambda: 0.5) as visitor:
        if status is None:
            await world.giosg.revoke_visitor(visitor.visitor_id)
        else:
            world.giosg.inject(endpoint="auth", status=status, body=body, times=100)
        calls = 0
        errors: list[BaseException] = []
        renewal_at = world.giosg.auth_requests[0].at + POLICY.first_offset(300, 0.5)
        await world.clock.run_until(renewal_at - 1)
        before = len(world.giosg.requests)
        await world.clock.run_until(renewal_at + 1)
        assert visitor.state is SessionState.FAILED
        after_failure = len(world.giosg.requests)
        # The app keeps calling for ten virtual minutes: every call fails without I/O.
        for _ in range(60):
            calls += 1
            try:
                await world.get_chats(visitor)
            except GiosgError as exc:
                errors.append(exc)
            await world.clock.advance(10)
        figures.add("trials.terminal_calls", calls)
    assert after_failure - before == 1
    assert len(world.giosg.requests) == after_failure
    assert len(errors) == calls
    assert all(isinstance(e, InvalidSecretError) for e in errors)
    assert len(world.giosg.auth_requests) == 2


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        pytest.param(400, APIError, id="400"),
        pytest.param(401, AuthenticationError, id="401"),
        pytest.param(403, PermissionDeniedError, id="403"),
    ],
)
async def test_terminal_error_on_the_first_auth_is_typed_and_not_retried(
    status: int, expected: type[GiosgError]
) -> None:
    """A new visitor refused with a 4xx raises the typed error after one request."""
    async with virtual_fake() as world:
        world.giosg.inject(endpoint="auth", status=status, times=100)
        with pytest.raises(expected) as info:
            async with world.clock.autojump(), world.visitor():
                pass
        assert info.value.status_code == status  # type: ignore[attr-defined]
        await world.clock.advance(600)
    assert len(world.giosg.requests) == 1
