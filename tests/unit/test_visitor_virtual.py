"""Auth, renewal and the 401 path on virtual time (the fake app in-process, FakeClock)."""

from __future__ import annotations

import itertools

import anyio
import pytest

from giosg_visitor import (
    AuthenticationError,
    InvalidSecretError,
    MemoryStore,
    RateLimitError,
    RenewalPolicy,
    RetryPolicy,
    SessionState,
)
from giosg_visitor.testing import Fault

from .._helpers import virtual_world


LIFETIMES = [2, 5, 30, 300, 1800]


@pytest.mark.parametrize("lifetime", LIFETIMES, ids=[f"{x}s" for x in LIFETIMES])
async def test_zero_expired_token_requests_over_ten_lifetimes(lifetime: int) -> None:
    """Steady traffic over ten lifetimes never sends an expired token; one renewal per token."""
    async with virtual_world(lifetime=lifetime) as world:
        async with world.visitor() as visitor:
            statuses: list[int] = []

            async def traffic() -> None:
                while True:
                    statuses.append((await world.get_chats(visitor)).status_code)
                    await world.clock.sleep(lifetime / 20)

            async with anyio.create_task_group() as tg:
                tg.start_soon(traffic)
                await world.clock.advance(10 * lifetime)
                tg.cancel_scope.cancel()
        giosg = world.giosg
        assert giosg.expired_token_requests == []
        assert set(statuses) == {200}
        assert len(statuses) >= 190
        policy = RenewalPolicy()
        auth_times = [r.at for r in giosg.auth_requests]
        gaps = [b - a for a, b in itertools.pairwise(auth_times)]
        # Each token is renewed once, at its soft point (never early, never twice): the
        # first after the start within the wide spread, every later one the narrow one.
        assert gaps[0] >= policy.first_offset(lifetime, 1.0) - 1e-6
        assert min(gaps[1:]) >= policy.soft_offset(lifetime, 1.0) - 1e-6
        assert len(auth_times) <= 10 * lifetime / policy.soft_offset(lifetime, 1.0) + 2


async def test_thousand_concurrent_calls_in_the_hard_window_cause_one_auth() -> None:
    """1,000 calls that all need a fresh token share one renewal."""
    async with virtual_world(lifetime=1800) as world, world.visitor() as visitor:
        # Up to just before the earliest background renewal point any jitter can give.
        earliest = RenewalPolicy().first_offset(1800, 1.0)
        world.giosg.state.faults.add(Fault(endpoint="auth", latency=2.0))
        await world.clock.run_until(world.clock.monotonic() + earliest - 1)
        assert len(world.giosg.auth_requests) == 1
        results: list[int] = []

        async def call() -> None:
            results.append((await world.get_chats(visitor)).status_code)

        async with anyio.create_task_group() as tg:
            # Jump straight into the hard window: the background task and 1,000 callers race.
            world.clock._now += (1800 - 10) - (earliest - 1)
            for _ in range(1000):
                tg.start_soon(call)
            await world.clock.advance(5)
        assert results == [200] * 1000
        assert len(world.giosg.auth_requests) == 2
        assert world.giosg.expired_token_requests == []


async def test_stored_valid_token_skips_the_auth_call() -> None:
    """A second start with a fresh stored token makes no auth request."""
    async with virtual_world() as world:
        store = MemoryStore()
        async with world.visitor(store=store) as first:
            visitor_id = first.visitor_id
        async with world.visitor(store=store) as second:
            assert second.visitor_id == visitor_id
            assert (await world.get_chats(second)).status_code == 200
        assert len(world.giosg.auth_requests) == 1


async def test_stored_token_without_margin_is_renewed_with_the_secret() -> None:
    """A stored token close to expiry is not reused: the secret is posted instead."""
    async with virtual_world(lifetime=1800) as world:
        store = MemoryStore()
        async with world.visitor(store=store) as first:
            visitor_id = first.visitor_id
        await world.clock.advance(1300)  # 500 s left < the 600 s restore margin
        async with world.visitor(store=store) as second:
            assert second.visitor_id == visitor_id
        auths = world.giosg.auth_requests
        assert [r.sent_secret for r in auths] == [False, True]


class TestUnauthorized:
    """A 401 renews once and retries once; never more."""

    async def test_server_side_expiry_recovers_with_one_renewal(self) -> None:
        """A token revoked early by the server costs one renewal and one retry."""
        async with virtual_world() as world:
            async with world.visitor() as visitor:
                await world.clock.advance(10)  # past the minimum spacing between renewals
                await world.giosg.expire_tokens()
                response = await world.get_chats(visitor)
                assert response.status_code == 200
            api = [r for r in world.giosg.requests if r.token_status != "none"]
            assert [r.status for r in api] == [401, 200]
            assert len(world.giosg.auth_requests) == 2

    async def test_always_401_is_bounded(self) -> None:
        """Against a server that 401s everything, each call makes at most two requests."""
        async with virtual_world() as world:
            async with world.visitor() as visitor:
                await world.clock.advance(10)  # past the minimum spacing between renewals
                world.giosg.inject(endpoint="api", status=401, times=10_000)
                results: list[int] = []

                async def call() -> None:
                    results.append((await world.get_chats(visitor)).status_code)

                async with anyio.create_task_group() as tg:
                    for _ in range(50):
                        tg.start_soon(call)
            assert results == [401] * 50
            api = [r for r in world.giosg.requests if r.token_status != "none"]
            assert len(api) == 100
            # One renewal for all 50 concurrent failures.
            assert len(world.giosg.auth_requests) == 2

    async def test_api_layer_maps_second_401_to_authentication_error(self) -> None:
        """The typed error mapping turns the final 401 into AuthenticationError."""
        from giosg_visitor._http import api_error

        async with virtual_world() as world, world.visitor() as visitor:
            await world.clock.advance(10)  # past the minimum spacing between renewals
            world.giosg.inject(endpoint="api", status=401, times=2)
            response = await world.get_chats(visitor)
            error = api_error(response, now=0)
            assert isinstance(error, AuthenticationError)
            assert error.status_code == 401


class TestAuthFaults:
    """Transient auth failures are retried; the rest surface as typed errors."""

    async def test_retry_after_is_honoured(self) -> None:
        """A 429 with Retry-After delays the retry by at least that long."""
        async with virtual_world() as world:
            world.giosg.inject(endpoint="auth", status=429, retry_after="7")
            async with world.clock.autojump(), world.visitor() as visitor:
                assert visitor.state is SessionState.AUTHENTICATED
            first, second = world.giosg.auth_requests
            assert first.status == 429
            assert second.at - first.at >= 7

    async def test_long_retry_after_raises_rate_limit_error(self) -> None:
        """A Retry-After beyond the policy's patience raises RateLimitError at once."""
        async with virtual_world() as world:
            world.giosg.inject(endpoint="auth", status=429, retry_after="3600")
            with pytest.raises(RateLimitError) as info:
                async with world.visitor():
                    pass
            assert info.value.retry_after == 3600
            assert len(world.giosg.auth_requests) == 1

    async def test_background_renewal_survives_a_flaky_auth_endpoint(self) -> None:
        """Failed renewals retry with backoff while the old token is valid: no visible error."""
        async with virtual_world(lifetime=300) as world:
            async with world.visitor() as visitor:
                world.giosg.inject(endpoint="auth", status=503, times=3)
                statuses: list[int] = []

                async def traffic() -> None:
                    while True:
                        statuses.append((await world.get_chats(visitor)).status_code)
                        await world.clock.sleep(5)

                async with anyio.create_task_group() as tg:
                    tg.start_soon(traffic)
                    await world.clock.advance(900)
                    tg.cancel_scope.cancel()
            assert set(statuses) == {200}
            assert world.giosg.expired_token_requests == []
            assert [r.status for r in world.giosg.auth_requests][:5] == [200, 503, 503, 503, 200]

    async def test_terminal_error_stops_all_auth_calls(self) -> None:
        """A revoked secret fails the session; no further auth requests are made."""
        async with virtual_world(lifetime=300) as world, world.visitor() as visitor:
            await world.giosg.revoke_visitor(visitor.visitor_id)
            await world.clock.advance(600)
            assert visitor.state is SessionState.FAILED
            with pytest.raises(InvalidSecretError):
                await world.get_chats(visitor)
            count = len(world.giosg.auth_requests)
            await world.clock.advance(600)
            with pytest.raises(InvalidSecretError):
                await world.get_chats(visitor)
            assert len(world.giosg.auth_requests) == count == 2

    async def test_server_errors_exhaust_the_retry_budget(self) -> None:
        """Persistent 5xx at start-up gives a typed ServerError after max_attempts tries."""
        from giosg_visitor import ServerError

        async with virtual_world() as world:
            world.giosg.inject(endpoint="auth", status=502, times=100)
            with pytest.raises(ServerError):
                async with world.clock.autojump(), world.visitor(retry=RetryPolicy(max_attempts=3)):
                    pass
            assert len(world.giosg.auth_requests) == 3


async def test_concurrent_starts_on_one_store_share_one_auth() -> None:
    """Two visitors starting together on one store and key make one auth call, not two."""
    async with virtual_world() as world:
        store = MemoryStore()
        world.giosg.inject(endpoint="auth", latency=1.0)
        ids: list[str] = []

        async def start() -> None:
            async with world.visitor(store=store) as visitor:
                ids.append(visitor.visitor_id)

        async with world.clock.autojump(), anyio.create_task_group() as tg:
            tg.start_soon(start)
            tg.start_soon(start)
        assert len(ids) == 2
        assert ids[0] == ids[1]
        assert len(world.giosg.auth_requests) == 1
