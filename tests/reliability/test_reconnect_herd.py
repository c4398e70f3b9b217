"""The reconnect schedule and herd control after a server outage.

Two levels: the pure :class:`ReconnectTracker` for 1,000 clients and several outage
lengths (milliseconds), and the real connection loop of many ``RealtimeConnection`` objects
on a virtual clock, whose sockets all die at once and whose server refuses connections
until it recovers. The per-client schedule bounds are a property test in
``tests/unit/test_realtime_protocol.py`` and an in-loop test in
``tests/e2e/test_realtime_connection.py`` (README.md).
"""

from __future__ import annotations

import bisect
import math
import random
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any, final

import anyio
import anyio.lowlevel
import pytest

from giosg_visitor import Secret
from giosg_visitor.errors import ConnectionClosedError, TransportError
from giosg_visitor.realtime import RealtimeConnection, ReconnectPolicy
from giosg_visitor.realtime._backoff import FailureKind, ReconnectTracker, Verdict
from giosg_visitor.realtime._transport import SocketConnection
from giosg_visitor.testing import FakeClock

from ._clock import virtual_clock
from .figures import Figures


POLICY = ReconnectPolicy()
TRANSIENT = Verdict(kind=FailureKind.TRANSIENT)


def busiest_second(times: list[float]) -> int:
    """The most attempts in any window ``[t, t + 1 s)``."""
    ordered = sorted(times)
    return max((bisect.bisect_left(ordered, t + 1.0) - i for i, t in enumerate(ordered)), default=0)


#: The last client must be back within this long after recovery: the 30 s cap (36 s while
#: suspended) plus a handshake.
LAST_BACK = 40.0


def simulate(clients: int, outage: float, seed: int) -> list[float]:
    """Each client's first attempt at or after the server's recovery at ``outage``.

    Every client had a stable connection that died at 0; every attempt before ``outage``
    fails.
    """
    rng = random.Random(seed)
    recovered = []
    for _ in range(clients):
        tracker = ReconnectTracker(policy=POLICY)
        tracker.connected(-POLICY.stable_after - 1)
        now = 0.0
        while True:
            decision = tracker.failed(now, TRANSIENT, rng.random())
            now += decision.delay
            if now >= outage:
                recovered.append(now)
                break
    return recovered


@pytest.mark.parametrize("outage", [30.0, 60.0, 150.0, 600.0], ids=lambda s: f"{s:g}s")
def test_a_thousand_clients_come_back_spread_out(outage: float, figures: Figures) -> None:
    """After an outage no 1 s window holds >10 % of 1,000 reconnects; all back in time."""
    clients = 1000
    recovered = simulate(clients, outage, seed=int(outage))
    figures.add("trials.herd_clients", clients)
    assert len(recovered) == clients
    assert busiest_second(recovered) <= clients // 10
    assert max(recovered) - outage <= LAST_BACK


def test_the_attempt_counter_resets_after_a_stable_minute() -> None:
    """A connection that stayed up 60 s starts again from a first delay within 1 s."""
    rng = random.Random(5)
    for _ in range(200):
        tracker = ReconnectTracker(policy=POLICY)
        now = 0.0
        for _ in range(8):  # a long run of failures: delays up to the cap
            now += tracker.failed(now, TRANSIENT, rng.random()).delay
        tracker.connected(now)
        first = tracker.failed(now + POLICY.stable_after + 0.5, TRANSIENT, rng.random())
        assert first.delay <= POLICY.first_delay


# The real connection loop ---------------------------------------------------------------------


@final
class _IdleSocket:
    """An open socket that receives nothing until the server dies."""

    def __init__(self, dead: anyio.Event) -> None:
        self._dead = dead

    async def send(self, text: str) -> None:
        await anyio.lowlevel.checkpoint()

    async def recv(self) -> str:
        await self._dead.wait()
        raise ConnectionClosedError("the server died", code=1006)

    async def ping(self) -> None:
        await anyio.lowlevel.checkpoint()

    async def close(self, code: int = 1000, reason: str = "") -> None:
        await anyio.lowlevel.checkpoint()

    async def abort(self) -> None:
        await anyio.lowlevel.checkpoint()


@final
class _OutageTransport:
    """A server that can die (every socket drops) and refuse connections until a time."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.down_until = -math.inf
        self.attempts: list[float] = []
        self.accepted: list[float] = []
        self._dead = anyio.Event()

    def die(self, seconds: float) -> None:
        """Drop every socket now and refuse connections for ``seconds``."""
        self.down_until = self.clock.monotonic() + seconds
        self._dead.set()
        self._dead = anyio.Event()

    @asynccontextmanager
    async def connect(self, url: str, **options: Any) -> AsyncIterator[SocketConnection]:
        now = self.clock.monotonic()
        self.attempts.append(now)
        await anyio.lowlevel.checkpoint()
        if now < self.down_until:
            raise TransportError("connection refused")
        self.accepted.append(now)
        yield _IdleSocket(self._dead)


async def _token() -> Secret:
    raise AssertionError("no channel is subscribed: no token is needed")


async def _herd(clients: int, outage: float, figures: Figures) -> None:
    clock = virtual_clock()
    transport = _OutageTransport(clock)
    async with AsyncExitStack() as stack:
        for index in range(clients):
            await stack.enter_async_context(
                RealtimeConnection(
                    socket_url="https://messagerouter.giosg.com/003/2/router",
                    token_provider=_token,
                    clock=clock,
                    transport=transport,
                    rng=random.Random(index),
                    ping_interval=None,
                )
            )
        await clock.advance(1)
        assert len(transport.accepted) == clients
        transport.die(outage)
        recovery = transport.down_until
        await clock.advance(outage + POLICY.suspended_delay * 1.2 + 10)
        figures.add("trials.herd_clients", clients)
        figures.add("faults.socket_kills", clients)
    back = transport.accepted[clients:]
    after = [t for t in transport.attempts if t >= recovery]
    assert len(back) == clients
    assert sorted(after) == sorted(back)  # once the server is back, the first try works
    assert busiest_second(back) <= clients // 10
    assert max(back) - recovery <= LAST_BACK


async def test_many_connections_reconnect_spread_out_after_an_outage(figures: Figures) -> None:
    """200 connections lose their sockets together; after 45 s they return spread out."""
    await _herd(clients=200, outage=45.0, figures=figures)


@pytest.mark.slow
@pytest.mark.parametrize("outage", [30.0, 150.0], ids=["30s", "150s"])
async def test_many_connections_reconnect_spread_out_after_an_outage_long(
    outage: float, figures: Figures
) -> None:
    """Long run: 1,000 connections, outages of 30 s and 150 s (suspended)."""
    await _herd(clients=1000, outage=outage, figures=figures)
