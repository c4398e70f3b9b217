"""Retry-After in both forms, bounded jittered retries, and a retry budget.

Virtual time, the fake app in-process. Already covered elsewhere (README.md): the
Retry-After parser (both forms, negative, garbage), seconds-form end to end on the API and
on auth, a Retry-After beyond the policy's patience raising at once, bounded 5xx retries.
"""

from __future__ import annotations

import email.utils
import itertools
import math
import random
from datetime import UTC, datetime

import anyio
import pytest

from giosg_visitor import RateLimitError, RetryBudget, RetryPolicy, ServerError, SessionState

from ._support import World, virtual_fake
from .figures import Figures


ROOM_ID = "9926bdfa-56e0-11e5-b98c-6c4008c08dfe"
POLICY = RetryPolicy()


def http_date(world: World, seconds: float) -> tuple[str, float]:
    """An HTTP-date about ``seconds`` ahead (whole seconds) and the exact delay it means."""
    now = world.clock.time()
    target = math.ceil(now) + seconds
    return email.utils.format_datetime(datetime.fromtimestamp(target, UTC), usegmt=True), (
        target - now
    )


def _gaps(world: World, path_part: str) -> list[float]:
    times = [r.at for r in world.giosg.requests if path_part in r.path and r.method == "GET"]
    return [b - a for a, b in itertools.pairwise(times)]


async def test_an_http_date_retry_after_on_the_api_is_honoured(figures: Figures) -> None:
    """A 429 whose Retry-After is an HTTP-date 20 s ahead: retried 20 s later (+-10 %)."""
    async with virtual_fake() as world, world.visitor() as visitor:
        date, expected = http_date(world, 20)
        world.giosg.inject(endpoint="api", status=429, retry_after=date, path_contains="/chats")
        async with world.clock.autojump():
            chats = [chat async for chat in visitor.chats()]
        figures.add("faults.retry_after", 1)
    assert chats == []
    [gap] = _gaps(world, "/chats")
    assert expected * 0.9 <= gap <= expected * 1.1


async def test_an_http_date_retry_after_on_auth_is_honoured() -> None:
    """The auth endpoint's 429 with an HTTP-date delays the start by that long."""
    async with virtual_fake() as world:
        date, expected = http_date(world, 12)
        world.giosg.inject(endpoint="auth", status=429, retry_after=date)
        async with world.clock.autojump(), world.visitor() as visitor:
            assert visitor.state is SessionState.AUTHENTICATED
    first, second = world.giosg.auth_requests
    assert expected * 0.9 <= second.at - first.at <= expected * 1.1


@pytest.mark.parametrize("endpoint", ["api", "auth"])
async def test_a_retry_after_on_a_503_is_honoured(endpoint: str) -> None:
    """RFC 9110 lets 503 carry Retry-After too; the retry waits for it."""
    async with virtual_fake() as world:
        if endpoint == "auth":
            world.giosg.inject(endpoint="auth", status=503, retry_after="7")
            async with world.clock.autojump(), world.visitor():
                pass
            first, second = world.giosg.auth_requests
            gap = second.at - first.at
        else:
            async with world.visitor() as visitor:
                world.giosg.inject(
                    endpoint="api", status=503, retry_after="7", path_contains="/chats"
                )
                async with world.clock.autojump():
                    [chat async for chat in visitor.chats()]
            [gap] = _gaps(world, "/chats")
    assert gap >= 7 * 0.9


@pytest.mark.parametrize("value", ["-5", "soon", "", "Wed, 31 Feb 2024 25:61:61 GMT"])
async def test_negative_or_garbage_retry_after_falls_back_to_the_backoff(value: str) -> None:
    """A negative or unreadable Retry-After: the normal first backoff (at most 0.5 s)."""
    async with virtual_fake() as world, world.visitor() as visitor:
        world.giosg.inject(endpoint="api", status=429, retry_after=value, path_contains="/chats")
        async with world.clock.autojump():
            [chat async for chat in visitor.chats()]
    [gap] = _gaps(world, "/chats")
    assert 0 <= gap <= POLICY.first_delay


async def test_a_retry_after_beyond_the_call_deadline_raises_at_once() -> None:
    """Retry-After 45 s (patience 60 s, deadline 30 s): RateLimitError without waiting."""
    async with virtual_fake() as world, world.visitor() as visitor:
        world.giosg.inject(endpoint="api", status=429, retry_after="45", path_contains="/chats")
        started = world.clock.monotonic()
        with pytest.raises(RateLimitError) as info:
            async with world.clock.autojump():
                [chat async for chat in visitor.chats()]
        waited = world.clock.monotonic() - started
    assert info.value.retry_after == 45
    assert waited == 0
    assert len(_gaps(world, "/chats")) == 0


async def test_idempotent_retries_are_bounded_jittered_and_within_the_deadline(
    figures: Figures,
) -> None:
    """40 visitors against a dead endpoint: <= 3 retries each, full-jitter gaps under
    min(8 s, 0.5 s x 2^n), done within 30 s, and the gaps differ between visitors."""
    first_gaps = []
    for seed in range(40):
        async with virtual_fake() as world:
            own_budget = RetryPolicy(budget=RetryBudget())  # not the process's: 40 outages
            async with world.visitor(rng=random.Random(seed).random, retry=own_budget) as visitor:
                world.giosg.inject(endpoint="api", status=503, times=1000, path_contains="/chats")
                started = world.clock.monotonic()
                with pytest.raises(ServerError):
                    async with world.clock.autojump():
                        [chat async for chat in visitor.chats()]
                elapsed = world.clock.monotonic() - started
            gaps = _gaps(world, "/chats")
        assert len(gaps) == POLICY.max_attempts - 1
        for n, gap in enumerate(gaps, 1):
            assert 0 <= gap <= min(POLICY.max_delay, POLICY.first_delay * 2 ** (n - 1))
        assert elapsed <= POLICY.deadline
        first_gaps.append(round(gaps[0], 6))
    figures.add("trials.retry_sequences", 40)
    figures.add("faults.api_503", 40 * POLICY.max_attempts)
    assert len(set(first_gaps)) >= 35  # jittered: no two visitors retry in lockstep


async def test_a_dead_server_gets_a_bounded_share_of_retries() -> None:
    """100 calls against a server failing 100 %: retries <= 20 + 10 % of requests."""
    calls = 100
    async with virtual_fake() as world, world.visitor() as visitor:
        world.giosg.inject(endpoint="api", status=503, times=100_000, path_contains="/chats")
        failures = 0

        async def call() -> None:
            nonlocal failures
            try:
                [chat async for chat in visitor.chats()]
            except ServerError:
                failures += 1

        async with world.clock.autojump(), anyio.create_task_group() as tg:
            for _ in range(calls):
                tg.start_soon(call)
    requests = len([r for r in world.giosg.requests if r.path.endswith("/chats")])
    retries = requests - calls
    assert failures == calls
    assert retries <= 20 + 0.1 * requests, f"{retries} retries for {calls} calls"
