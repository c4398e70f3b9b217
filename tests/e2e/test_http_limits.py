"""Bounded responses and a total deadline per attempt, against a real hostile server.

A server that streams a 200 MiB body, declares one, trickles a byte at a time or pads
its auth answer with a huge unknown field: the client stops reading as soon as a limit
is passed (the server counts the bytes it managed to send), gives up on an attempt after
``Timeouts.request`` however slowly the bytes come, and stores only small unknown fields.
"""

from __future__ import annotations

import time

import anyio
import pytest

from giosg_visitor import (
    MemoryStore,
    ProtocolError,
    ResponseLimits,
    RetryPolicy,
    Timeouts,
    TransportTimeoutError,
    Visitor,
)

from .._helpers import ORG_ID
from .._hostile_http import HostileServer


MiB = 1 << 20
#: What loopback socket buffers may hold on top of what the client read (sender and
#: receiver side, Linux defaults up to a few MiB each): generous, still far below 200.
BUFFERS = 24 * MiB
FAST = RetryPolicy(first_delay=0.01, max_delay=0.05, deadline=1.5)


@pytest.mark.parametrize("declared", [False, True], ids=["streamed", "content-length"])
async def test_a_huge_auth_body_is_refused_after_one_mib(declared: bool) -> None:
    """A 200 MiB auth answer: ProtocolError, and the client stopped reading at once."""
    with HostileServer(organization_id=ORG_ID, auth="huge", declare_length=declared) as server:
        started = time.monotonic()
        with anyio.fail_after(30), pytest.raises(ProtocolError, match="larger than 1,048,576"):
            async with Visitor(ORG_ID, base_url=server.base_url, realtime=False):
                pass
        elapsed = time.monotonic() - started
        sent = server.body_bytes_sent
    assert sent < BUFFERS, f"the server sent {sent:,} bytes before the client hung up"
    assert elapsed < 10


async def test_a_huge_api_body_is_refused_at_the_configured_limit() -> None:
    """ResponseLimits(api=...) bounds every other call; the read stops at the limit."""
    limits = ResponseLimits(api=256 << 10)
    with HostileServer(organization_id=ORG_ID, api="huge", body_size=200 * MiB) as server:
        async with Visitor(ORG_ID, base_url=server.base_url, realtime=False, limits=limits) as v:
            with anyio.fail_after(30), pytest.raises(ProtocolError, match="larger than 262,144"):
                await v.room("room-1")
        sent = server.body_bytes_sent
    assert sent < BUFFERS, f"the server sent {sent:,} bytes before the client hung up"


async def test_only_small_unknown_auth_fields_are_stored() -> None:
    """A valid auth answer with a 50 KB unknown field: the token works, the field is not stored."""
    extra = {"minimal_bar_version": 3, "huge_unknown": "y" * 50_000, "after": "kept"}
    store = MemoryStore()
    with HostileServer(organization_id=ORG_ID, auth_extra=extra) as server:
        async with Visitor(ORG_ID, base_url=server.base_url, realtime=False, store=store):
            pass
    record = await store.load("default")
    assert record is not None
    stored = record.sessions[ORG_ID].extra
    assert stored == {"minimal_bar_version": 3, "after": "kept"}
    assert len(record.dumps()) < 4096


async def test_a_trickling_api_response_times_out_within_the_retry_deadline() -> None:
    """One byte every 50 ms: each attempt ends after Timeouts.request, the call by the deadline."""
    timeouts = Timeouts(request=0.5, read=5.0)
    with HostileServer(organization_id=ORG_ID, api="trickle", interval=0.05) as server:
        async with Visitor(
            ORG_ID, base_url=server.base_url, realtime=False, timeouts=timeouts, retry=FAST
        ) as visitor:
            started = time.monotonic()
            with (
                anyio.fail_after(8),
                pytest.raises(TransportTimeoutError, match=r"Timeouts\.request"),
            ):
                await visitor.room("room-1")
            elapsed = time.monotonic() - started
        gets = [r for r in server.requests if r.startswith("GET")]
    assert len(gets) >= 2  # the timeout was retried ...
    assert elapsed < FAST.deadline + 1.0  # ... but not past the retry deadline


async def test_a_trickling_auth_response_times_out() -> None:
    """Auth that trickles: TransportTimeoutError after the retries, not minutes later."""
    timeouts = Timeouts(request=0.5, read=5.0)
    with HostileServer(organization_id=ORG_ID, auth="trickle", interval=0.05) as server:
        started = time.monotonic()
        with anyio.fail_after(8), pytest.raises(TransportTimeoutError):
            async with Visitor(
                ORG_ID, base_url=server.base_url, realtime=False, timeouts=timeouts, retry=FAST
            ):
                pass
        elapsed = time.monotonic() - started
    assert elapsed < FAST.deadline + 1.5


def test_limits_are_validated() -> None:
    """Limits and the request deadline must be positive."""
    with pytest.raises(ValueError, match="positive"):
        ResponseLimits(auth=0)
    with pytest.raises(ValueError, match="positive"):
        Timeouts(request=0)
