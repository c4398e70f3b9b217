"""Shared test helpers: a virtual-time fake Giosg, a visitor factory, an ASGI server."""

from __future__ import annotations

import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import anyio
import attrs
import httpx

from giosg_visitor import RetryPolicy, Store, Visitor
from giosg_visitor.stores import VisitorRecord
from giosg_visitor.testing import FakeClock, FakeGiosg, LoopThread


ORG_ID = "e6a08f51-c250-4074-847b-58d444dbbeb1"
OTHER_ORG_ID = "b3b8cbd6-3a7e-4f6b-9d0b-6c1f0d2f6a11"
#: The room the tests chat in; the fakes they build register it (unknown rooms get 404).
ROOM_ID = "9926bdfa-56e0-11e5-b98c-6c4008c08dfe"

#: Fast retries for tests over real sockets (real time).
FAST_RETRY = RetryPolicy(first_delay=0.01, max_delay=0.05, deadline=5.0)


@attrs.define
class VirtualWorld:
    """A fake Giosg served in-process on a virtual clock."""

    giosg: FakeGiosg
    clock: FakeClock
    client: httpx.AsyncClient

    def visitor(self, **kwargs: Any) -> Visitor:
        """A visitor of this world (virtual clock, in-process client, no socket)."""
        kwargs.setdefault("clock", self.clock)
        kwargs.setdefault("http_client", self.client)
        # In-process (ASGI) mode has no message router to connect to.
        kwargs.setdefault("realtime", False)
        return Visitor(ORG_ID, base_url=self.giosg.base_url, **kwargs)

    async def get_chats(self, visitor: Visitor) -> httpx.Response:
        """GET the visitor's chat list with the visitor's auth."""
        url = f"{self.giosg.base_url}/api/v5/public/visitors/{visitor.visitor_id}/chats"
        return await self.client.get(url, auth=visitor.auth)


@asynccontextmanager
async def virtual_world(
    *,
    lifetime: float = 1800.0,
    clock: Callable[[], FakeClock] = FakeClock,
    wrap: Callable[[httpx.AsyncBaseTransport, FakeClock], httpx.AsyncBaseTransport] | None = None,
    **kwargs: Any,
) -> AsyncIterator[VirtualWorld]:
    """A FakeGiosg on a virtual clock, reached through an in-process transport.

    Args:
        lifetime: The fake's token lifetime, seconds.
        clock: Makes the clock (a ``FakeClock`` with another settle step, say).
        wrap: Wraps the in-process transport (a fault-injecting layer, say).
        kwargs: More ``FakeGiosg`` options (``rooms`` defaults to ``[ROOM_ID]``).
    """
    fake_clock = clock()
    kwargs.setdefault("rooms", [ROOM_ID])
    giosg = FakeGiosg(token_lifetime=lifetime, clock=fake_clock, **kwargs)
    transport = giosg.transport()
    if wrap is not None:
        transport = wrap(transport, fake_clock)
    async with httpx.AsyncClient(transport=transport) as client:
        yield VirtualWorld(giosg, fake_clock, client)


async def get_chats(giosg: FakeGiosg, visitor: Visitor) -> httpx.Response:
    """GET the visitor's chat list with the visitor's auth (over real sockets)."""
    url = f"{giosg.base_url}/api/v5/public/visitors/{visitor.visitor_id}/chats"
    return await visitor.http_client.get(url, auth=visitor.auth)


async def wait_until(predicate: Callable[[], bool], *, seconds: float = 10.0) -> None:
    """Poll ``predicate`` until true (for state owned by the fake's own thread)."""
    with anyio.fail_after(seconds):
        while not predicate():  # noqa: ASYNC110 - no event can cross the fake's thread
            await anyio.sleep(0.02)


async def forget_stored_token(store: Store, key: str = "default") -> VisitorRecord:
    """Keep only the stored secret, so the next start must post it; return the old record."""
    record = await store.load(key)
    assert record is not None
    await store.save(key, VisitorRecord(visitor_secret_id=record.visitor_secret_id))
    return record


@contextmanager
def serve_asgi(app: Any, **config: Any) -> Iterator[int]:
    """Serve ``app`` with uvicorn on a free port of 127.0.0.1 on a LoopThread; yield the port.

    ``config`` goes to ``uvicorn.Config`` (defaults: warnings only, no access log). The
    listening socket has TCP_NODELAY, inherited by accepted sockets: without it uvicorn's
    separate header and body writes meet the client's delayed ACK, ~40 ms a response.
    """
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(
        uvicorn.Config(app, **{"log_level": "warning", "access_log": False, **config})
    )
    with sock, LoopThread("uvicorn", timeout=30) as thread:
        served = thread.submit(server.serve(sockets=[sock]))
        try:
            deadline = time.monotonic() + 30
            while not server.started:
                if served.done():
                    served.result()  # raises what stopped it
                    raise RuntimeError("uvicorn stopped before it started")
                if time.monotonic() > deadline:
                    raise RuntimeError("uvicorn did not start within 30 s")
                time.sleep(0.005)
            yield sock.getsockname()[1]
        finally:
            server.should_exit = True
            served.result(timeout=30)
