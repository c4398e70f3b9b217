"""A chat's backfill retries on the visitor's RetryPolicy backoff and clock (virtual time).

It used to sleep a hard-coded 0.2/0.4/0.8/1.6 s in real time, which virtual-time tests
could not see and which no RetryPolicy tuned.
"""

from __future__ import annotations

import anyio
import httpx
import pytest

from giosg_visitor import RetryPolicy
from giosg_visitor._api import VisitorAPI
from giosg_visitor._dedupe import SeenWindow
from giosg_visitor.chat import Chat
from giosg_visitor.models import ChatInfo
from giosg_visitor.testing import FakeClock


pytestmark = pytest.mark.anyio

BASE = "https://service.giosg.com"
CHAT_ID = "c0ffee00c0ffee00c0ffee00c0ffee00"
# One attempt per REST call: every retry seen here is the backfill's own.
ONE_TRY = RetryPolicy(max_attempts=1, first_delay=4.0, max_delay=100.0)


async def test_backfill_waits_on_the_visitor_clock() -> None:
    failures = 2
    calls: list[float] = []
    clock = FakeClock()

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal failures
        calls.append(clock.monotonic())
        if failures:
            failures -= 1
            return httpx.Response(503)
        return httpx.Response(200, json={"results": [], "next": None})

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        api = VisitorAPI(
            client=client,
            auth=httpx.Auth(),
            base_url=httpx.URL(BASE),
            organization_id="org",
            visitor_id=lambda: "v" * 32,
            clock=clock,
            retry=ONE_TRY,
            rng=lambda: 0.5,
        )
        chat = Chat(ChatInfo.from_api({"id": CHAT_ID}), api=api, realtime=lambda: None)  # type: ignore[arg-type,return-value]
        done = anyio.Event()

        async def backfill() -> None:
            assert await chat._backfill(SeenWindow()) == []
            done.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(backfill)
            await clock.advance(1.99)  # first backoff: 0.5 x 4 s
            assert len(calls) == 1
            assert not done.is_set()
            await clock.advance(0.01)
            assert len(calls) == 2
            await clock.advance(3.99)  # second backoff: 0.5 x 8 s
            assert len(calls) == 2
            assert not done.is_set()
            await clock.advance(0.01)
            await done.wait()
    assert calls == [clock.monotonic() - 6.0, clock.monotonic() - 4.0, clock.monotonic()]
