"""The keepalive on virtual time, over in-memory sockets (issue #14).

A socket that can send a ping without waiting (``send_ping``) is pinged every
``ping_interval`` with no task, task group or event per ping: the keepalive sleeps
through the timeout and then looks at what came back. A link that is silent (no pong, no
frame) is still dropped ``ping_timeout`` after the ping, a link that sends frames but
never answers pings is kept, and sockets without ``send_ping`` race ``ping()`` against
the timeout as before.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from websockets.protocol import State

from giosg_visitor import Secret
from giosg_visitor.errors import ConnectionClosedError
from giosg_visitor.realtime import ConnectionState, Disconnected, RealtimeConnection
from giosg_visitor.realtime._transport import _WebSocket
from giosg_visitor.testing import FakeClock


pytestmark = pytest.mark.anyio

SOCKET_URL = "https://messagerouter.giosg.com/003/2/router"
#: A well-formed notification for a channel nobody subscribed: a frame, nothing else.
FRAME = '["changed", ["/api/v5/public/nobody", {"action": "added", "resourceId": "r1"}]]'
#: Where the connection's keepalive code lives (events made there are counted).
_KEEPALIVE_MODULES = frozenset(
    {
        "giosg_visitor.realtime.connection",
        "giosg_visitor.realtime._keepalive",
        "giosg_visitor._timers",
    }
)


class Link:
    """An in-memory socket without ``send_ping``: pinged with ``ping()``.

    Args:
        clock: Where ping times are read.
        answers: Whether pings get their pong (otherwise ``ping()`` never returns).
    """

    def __init__(self, clock: FakeClock, *, answers: bool) -> None:
        self.clock = clock
        self.answers = answers
        #: Virtual times of the pings sent.
        self.pings: list[float] = []
        self.ended_by: str | None = None
        self._send, self._receive = anyio.create_memory_object_stream[str](100)

    def frame(self) -> None:
        """The server sends one data frame."""
        self._send.send_nowait(FRAME)

    async def send(self, text: str) -> None:
        await anyio.lowlevel.checkpoint()

    async def recv(self) -> str:
        return await self._receive.receive()

    async def ping(self) -> None:
        self.pings.append(self.clock.monotonic())
        if self.answers:
            await anyio.lowlevel.checkpoint()
        else:
            await anyio.sleep_forever()

    async def close(self, code: int = 1000, reason: str = "") -> None:
        await anyio.lowlevel.checkpoint()
        self.ended_by = self.ended_by or "close"

    async def abort(self) -> None:
        await anyio.lowlevel.checkpoint()
        self.ended_by = self.ended_by or "abort"

    def release(self) -> None:
        self._send.close()
        self._receive.close()


class QuickLink(Link):
    """A socket that sends a ping without waiting for its pong (``send_ping``).

    Args:
        backed_up: ``send_ping`` answers ``None`` (its send buffer is full), so the
            connection falls back to ``ping()``.
        fail: ``send_ping`` raises this instead of sending.
    """

    def __init__(
        self,
        clock: FakeClock,
        *,
        answers: bool,
        backed_up: bool = False,
        fail: Exception | None = None,
    ) -> None:
        super().__init__(clock, answers=answers)
        self.backed_up = backed_up
        self.fail = fail
        self.quick_pings = 0

    async def send_ping(self) -> Callable[[], bool] | None:
        await anyio.lowlevel.checkpoint()
        if self.fail is not None:
            raise self.fail
        if self.backed_up:
            return None
        self.pings.append(self.clock.monotonic())
        self.quick_pings += 1
        return self._answered

    def _answered(self) -> bool:
        return self.answers


class Transport:
    """Hands out the links ``make`` builds, one per connection attempt."""

    def __init__(self, make: Callable[[], Link]) -> None:
        self._make = make
        self.links: list[Link] = []

    @asynccontextmanager
    async def connect(self, url: str, **options: Any) -> AsyncIterator[Link]:
        await anyio.lowlevel.checkpoint()
        link = self._make()
        self.links.append(link)
        try:
            yield link
        finally:
            link.release()


async def _no_token() -> Secret:
    raise AssertionError("no channel is subscribed: no token is needed")


def _connection(
    clock: FakeClock, transport: Transport, *, interval: float, timeout: float
) -> RealtimeConnection:
    return RealtimeConnection(
        socket_url=SOCKET_URL,
        token_provider=_no_token,
        clock=clock,
        transport=transport,
        ping_interval=interval,
        ping_timeout=timeout,
        idle_timeout=None,  # the keepalive alone watches the link
    )


@contextmanager
def counting_concurrency(monkeypatch: pytest.MonkeyPatch) -> Iterator[Counter[str]]:
    """Count task groups and tasks started anywhere, and events made by the connection."""
    counts: Counter[str] = Counter()
    group_class = type(anyio.create_task_group())
    create_task_group, start_soon, start = (
        anyio.create_task_group,
        group_class.start_soon,
        group_class.start,
    )
    make_event = anyio.Event

    def counting_create_task_group() -> Any:
        counts["task groups"] += 1
        return create_task_group()

    def counting_start_soon(self: Any, *args: Any, **kwargs: Any) -> Any:
        counts["tasks"] += 1
        return start_soon(self, *args, **kwargs)

    async def counting_start(self: Any, *args: Any, **kwargs: Any) -> Any:
        counts["tasks"] += 1
        return await start(self, *args, **kwargs)

    def counting_event() -> Any:
        # Only the keepalive's own events: FakeClock makes one per sleep.
        if sys._getframe(1).f_globals.get("__name__") in _KEEPALIVE_MODULES:
            counts["events"] += 1
        return make_event()

    with monkeypatch.context() as patch:
        patch.setattr(anyio, "create_task_group", counting_create_task_group)
        patch.setattr(group_class, "start_soon", counting_start_soon)
        patch.setattr(group_class, "start", counting_start)
        patch.setattr(anyio, "Event", counting_event)
        yield counts


@pytest.mark.parametrize(("interval", "pong_wait"), [(10.0, 4.0), (10.0, 10.0), (4.0, 10.0)])
async def test_pings_cost_no_task_group_task_or_event(
    monkeypatch: pytest.MonkeyPatch, interval: float, pong_wait: float
) -> None:
    """Twenty answered pings, one every interval: no task group, task or event for any."""
    clock = FakeClock()
    transport = Transport(lambda: QuickLink(clock, answers=True))
    async with _connection(clock, transport, interval=interval, timeout=pong_wait) as connection:
        await connection.wait_connected()
        start = clock.monotonic()
        with counting_concurrency(monkeypatch) as counts:
            await clock.advance(20 * interval)
            spent = dict(counts)
        (link,) = transport.links
        assert isinstance(link, QuickLink)
        assert link.quick_pings == 20
        assert [t - start for t in link.pings] == [interval * n for n in range(1, 21)]
        assert spent == {}
        assert connection.stats.drops == 0
        assert connection.state is ConnectionState.OPEN


async def test_the_racing_path_is_what_the_counter_sees(monkeypatch: pytest.MonkeyPatch) -> None:
    """A socket without ``send_ping`` is pinged as before: a task group per ping."""
    clock = FakeClock()
    transport = Transport(lambda: Link(clock, answers=True))
    async with _connection(clock, transport, interval=10.0, timeout=4.0) as connection:
        await connection.wait_connected()
        with counting_concurrency(monkeypatch) as counts:
            await clock.advance(50.0)
            spent = dict(counts)
        (link,) = transport.links
        assert len(link.pings) == 5
        assert spent["task groups"] == 5
        assert spent["tasks"] == 10
        assert spent["events"] == 5
        assert connection.stats.drops == 0


@pytest.mark.parametrize("quick", [True, False], ids=["send_ping", "ping"])
@pytest.mark.parametrize(("interval", "pong_wait"), [(10.0, 4.0), (10.0, 10.0), (4.0, 10.0)])
async def test_a_silent_link_is_dropped_ping_timeout_after_the_ping(
    quick: bool, interval: float, pong_wait: float
) -> None:
    """No pong and no frame: the socket is aborted ``ping_timeout`` after the ping."""
    clock = FakeClock()
    make = QuickLink if quick else Link
    transport = Transport(lambda: make(clock, answers=False))
    async with _connection(clock, transport, interval=interval, timeout=pong_wait) as connection:
        events = connection.events()
        await connection.wait_connected()
        await clock.advance(interval + pong_wait - 0.5)
        assert connection.stats.drops == 0
        await clock.advance(0.5)
        assert connection.stats.drops == 1
        link = transport.links[0]
        assert len(link.pings) == 1
        assert link.ended_by == "abort"
        assert connection.state is not ConnectionState.OPEN
        with anyio.fail_after(5):  # a hang guard: the events are already queued
            event = await anext(events)
            while not isinstance(event, Disconnected):
                event = await anext(events)
        assert (event.code, event.reason) == (1011, "keepalive ping timeout")
        await events.aclose()


@pytest.mark.parametrize("quick", [True, False], ids=["send_ping", "ping"])
async def test_a_link_with_frames_but_no_pongs_is_kept(quick: bool) -> None:
    """A server that never answers pings but sends a frame every 3 s keeps its socket."""
    clock = FakeClock()
    make = QuickLink if quick else Link
    transport = Transport(lambda: make(clock, answers=False))
    async with _connection(clock, transport, interval=10.0, timeout=4.0) as connection:
        await connection.wait_connected()
        (link,) = transport.links
        for _ in range(20):
            await clock.advance(3.0)
            link.frame()
        # Every 10 s; the racing path pings 10 s after the frame that answered.
        assert len(link.pings) == (6 if quick else 5)
        assert connection.stats.drops == 0
        assert connection.state is ConnectionState.OPEN


async def test_a_failed_ping_send_drops_the_socket_at_once() -> None:
    """``send_ping`` raising a close error ends the socket with that close's code."""
    clock = FakeClock()
    gone = ConnectionClosedError("the server went away", code=1001, reason="restart")
    transport = Transport(lambda: QuickLink(clock, answers=True, fail=gone))
    async with _connection(clock, transport, interval=10.0, timeout=4.0) as connection:
        events = connection.events()
        await connection.wait_connected()
        await clock.advance(10.0)
        assert connection.stats.drops == 1
        assert transport.links[0].ended_by == "abort"
        with anyio.fail_after(5):  # a hang guard: the events are already queued
            event = await anext(events)
            while not isinstance(event, Disconnected):
                event = await anext(events)
        assert event.code == 1001
        await events.aclose()


@pytest.mark.parametrize("answers", [True, False], ids=["answered", "silent"])
async def test_a_backed_up_socket_is_pinged_the_racing_way(answers: bool) -> None:
    """``send_ping`` returning ``None`` (full send buffer): ``ping()`` races the timeout."""
    clock = FakeClock()
    transport = Transport(lambda: QuickLink(clock, answers=answers, backed_up=True))
    async with _connection(clock, transport, interval=10.0, timeout=4.0) as connection:
        await connection.wait_connected()
        await clock.advance(35.0)
        link = transport.links[0]
        assert isinstance(link, QuickLink)
        assert link.quick_pings == 0
        if answers:
            assert len(link.pings) == 3
            assert connection.stats.drops == 0
        else:
            assert len(link.pings) == 1
            assert connection.stats.drops >= 1
            assert link.ended_by == "abort"


class _Lock:
    def __init__(self, held: bool) -> None:
        self.held = held

    def locked(self) -> bool:
        return self.held


class _BackedUpWs:
    """websockets' connection as the transport reads it; ``ping`` must not be reached."""

    def __init__(self, *, state: State, backed_up: bool) -> None:
        self.state = state
        self.paused = backed_up  # asyncio: the write buffer is above its limit
        self.send_lock = _Lock(backed_up)  # trio: another send holds the stream

    async def ping(self) -> Any:
        raise AssertionError("a ping that would wait was sent")


@pytest.mark.parametrize("websockets_backend", ["asyncio", "trio"])
@pytest.mark.parametrize(
    ("state", "backed_up"),
    [(State.OPEN, True), (State.CLOSING, False), (State.CLOSED, False)],
    ids=["backed-up", "closing", "closed"],
)
async def test_the_transport_sends_no_ping_that_would_wait(
    websockets_backend: str, state: State, backed_up: bool
) -> None:
    """Full send buffer or a socket no longer open: ``None`` (the caller uses ``ping()``)."""
    ws = _BackedUpWs(state=state, backed_up=backed_up)
    socket = _WebSocket(ws, backend=websockets_backend, close_timeout=1.0)
    assert await socket.send_ping() is None
