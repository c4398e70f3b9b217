"""ClientCredentials: token responses are bounded in size and time, on both drivers.

The sync driver runs the same renewal flow as the async one, so its retries wait on the
injected clock (a FakeClock moves, real time does not).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import httpx
import pytest

from giosg_visitor import ResponseLimits, RetryPolicy, Timeouts
from giosg_visitor.credentials import ClientCredentials
from giosg_visitor.errors import ProtocolError, RenewalFailedError, TransportTimeoutError
from giosg_visitor.testing import FakeClock


TOKEN_URL = "https://auth.example/oauth/token"
CLIENT_ID = "bot-client"
CLIENT_SECRET = "CANARY-client-secret-limits"
TOKEN_BODY = b'{"access_token": "tok-1", "token_type": "Bearer", "expires_in": 3600}'
ONE_TRY = RetryPolicy(max_attempts=1)


def _credentials(
    transport: httpx.MockTransport, *, sync: bool = False, **kwargs: Any
) -> ClientCredentials:
    # A MockTransport serves both client kinds: say which driver the test is about.
    if sync:
        kwargs["sync_http_client"] = httpx.Client(transport=transport)
    else:
        kwargs["http_client"] = httpx.AsyncClient(transport=transport)
    kwargs.setdefault("retry", ONE_TRY)
    return ClientCredentials(TOKEN_URL, CLIENT_ID, CLIENT_SECRET, **kwargs)


def _large(request: httpx.Request) -> httpx.Response:
    # No Content-Length: the cap must hold while reading, not only on a declared size.
    return httpx.Response(200, content=iter([b"x" * 1024] * 8))


async def _large_async(request: httpx.Request) -> httpx.Response:
    async def body() -> AsyncIterator[bytes]:
        for _ in range(8):
            yield b"x" * 1024

    return httpx.Response(200, content=body())


@pytest.mark.anyio
async def test_async_token_body_is_capped() -> None:
    credentials = _credentials(httpx.MockTransport(_large_async), limits=ResponseLimits(auth=4096))
    with pytest.raises(ProtocolError, match="larger than 4,096 bytes"):
        await credentials.access_token()
    await credentials.aclose()


@pytest.mark.anyio
async def test_async_token_request_has_a_total_deadline() -> None:
    async def trickle(request: httpx.Request) -> httpx.Response:
        async def body() -> AsyncIterator[bytes]:
            for byte in TOKEN_BODY:
                await anyio.sleep(0.05)
                yield bytes([byte])

        return httpx.Response(200, content=body())

    credentials = _credentials(httpx.MockTransport(trickle), timeouts=Timeouts(request=0.3))
    started = time.monotonic()
    with pytest.raises(TransportTimeoutError, match=r"Timeouts\.request"):
        await credentials.access_token()
    assert time.monotonic() - started < 2.0
    await credentials.aclose()


@pytest.mark.anyio
async def test_async_small_token_within_the_limits() -> None:
    credentials = _credentials(
        httpx.MockTransport(lambda request: httpx.Response(200, content=TOKEN_BODY)),
        limits=ResponseLimits(auth=len(TOKEN_BODY)),
        timeouts=Timeouts(request=5.0),
    )
    assert (await credentials.access_token()).reveal() == "tok-1"
    await credentials.aclose()


def test_sync_token_body_is_capped() -> None:
    credentials = _credentials(
        httpx.MockTransport(_large), sync=True, limits=ResponseLimits(auth=4096)
    )
    with (
        httpx.Client(transport=httpx.MockTransport(lambda r: httpx.Response(200))) as api,
        pytest.raises(ProtocolError, match="larger than 4,096 bytes"),
    ):
        api.get("https://api.example/x", auth=credentials)
    credentials.close()


def test_sync_token_request_has_a_total_deadline() -> None:
    def trickle(request: httpx.Request) -> httpx.Response:
        def body() -> Iterator[bytes]:
            for byte in TOKEN_BODY:
                time.sleep(0.05)
                yield bytes([byte])

        return httpx.Response(200, content=body())

    credentials = _credentials(
        httpx.MockTransport(trickle), sync=True, timeouts=Timeouts(request=0.3)
    )
    started = time.monotonic()
    with (
        httpx.Client(transport=httpx.MockTransport(lambda r: httpx.Response(200))) as api,
        pytest.raises(TransportTimeoutError, match=r"Timeouts\.request"),
    ):
        api.get("https://api.example/x", auth=credentials)
    assert time.monotonic() - started < 2.0
    credentials.close()


def test_sync_retries_wait_on_the_injected_clock() -> None:
    """503, 503, then a token: the two backoffs pass on the FakeClock, not in real time."""
    answers = [httpx.Response(503), httpx.Response(503)]

    def handler(request: httpx.Request) -> httpx.Response:
        return answers.pop(0) if answers else httpx.Response(200, content=TOKEN_BODY)

    clock = FakeClock()
    retry = RetryPolicy(first_delay=20.0, max_delay=20.0, deadline=100.0)
    credentials = _credentials(
        httpx.MockTransport(handler), sync=True, clock=clock, retry=retry, rng=lambda: 0.5
    )
    before = clock.monotonic()
    started = time.monotonic()
    with httpx.Client(transport=httpx.MockTransport(lambda r: httpx.Response(200))) as api:
        assert api.get("https://api.example/x", auth=credentials).status_code == 200
    # Full jitter at draw 0.5 of a 20 s cap, twice.
    assert clock.monotonic() - before == pytest.approx(10.0 + 10.0)
    assert time.monotonic() - started < 5.0
    credentials.close()


def test_sync_renewal_gives_up_like_the_async_one() -> None:
    """With a token held, exhausted retries raise RenewalFailedError on the sync path too."""
    clock = FakeClock()
    answers = [httpx.Response(200, content=TOKEN_BODY)]

    def handler(request: httpx.Request) -> httpx.Response:
        return answers.pop(0) if answers else httpx.Response(503)

    retry = RetryPolicy(first_delay=1.0, max_attempts=2)
    credentials = _credentials(httpx.MockTransport(handler), sync=True, clock=clock, retry=retry)
    with httpx.Client(transport=httpx.MockTransport(lambda r: httpx.Response(200))) as api:
        api.get("https://api.example/x", auth=credentials)
        clock.blocking_sleep(3600)  # past expiry: the next request must renew
        with pytest.raises(RenewalFailedError):
            api.get("https://api.example/x", auth=credentials)
    credentials.close()
