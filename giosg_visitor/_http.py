"""The HTTP edge: error mapping, trusted URLs and the shared client settings.

This is one of the two places where third-party exceptions are translated (the other is
``realtime/_transport.py``). Everything here is about *where* a credential may go and
*what* a response means; the renewal logic lives in ``_auth.py``.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import math
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from typing import Any, Final
from urllib.parse import urlsplit

import anyio
import attrs
import httpx

from . import _facts
from ._clock import Clock
from ._renewal import RetryPolicy, parse_retry_after
from .errors import (
    APIError,
    AuthenticationError,
    GiosgError,
    NotFoundError,
    PermissionDeniedError,
    ProtocolError,
    RateLimitError,
    ServerError,
    TransportError,
    TransportTimeoutError,
    UntrustedEndpointError,
)


__all__ = [
    "DEFAULT_BASE_URL",
    "ResponseLimits",
    "Retries",
    "Timeouts",
    "api_error",
    "check_credential_url",
    "is_loopback_host",
    "map_http_errors",
    "read_body",
    "send_bounded",
    "send_bounded_sync",
    "response_body",
    "retry_delay",
    "server_wait",
]

logger = logging.getLogger("giosg_visitor")

DEFAULT_BASE_URL: Final = _facts.DEFAULT_BASE_URL
USER_AGENT: Final = "giosg-visitor-python"

#: The least a retry gets when little of the retry deadline is left: an attempt with
#: less time than this could hardly succeed, and the deadline is a plan, not a promise.
MIN_ATTEMPT_SECONDS: Final = 1.0

# Stopping a body midway: how long closing may take, and how many pieces a transport
# that ignores the close may still hand over before the SDK stops asking.
_ABANDON_SECONDS: Final = 5.0
_ABANDON_STEPS: Final = 64


@attrs.frozen(kw_only=True)
class Timeouts:
    """Transport limits in seconds, forwarded to httpx and websockets.

    Public coroutines take no ``timeout=``; wrap calls in ``anyio.fail_after`` instead.

    Attributes:
        connect: TCP/TLS connect.
        read: Waiting for response bytes (each read: a server that trickles a byte at a
            time never trips it; ``request`` does).
        write: Sending request bytes.
        pool: Waiting for a pooled connection.
        request: One HTTP attempt from start to the last byte of its response (waiting
            for a token renewal in progress included). Passing it raises
            :class:`~giosg_visitor.TransportTimeoutError`, which idempotent calls retry
            within their :class:`~giosg_visitor.RetryPolicy` deadline; a retry gets
            what is left of that deadline (at least 1 s).
        socket_open: WebSocket opening handshake.
        close: Graceful shutdown (close frames, final saves).
    """

    connect: float = 10.0
    read: float = 30.0
    write: float = 30.0
    pool: float = 10.0
    request: float = attrs.field(default=60.0)
    socket_open: float = 10.0
    close: float = 5.0

    @request.validator
    def _check_request(self, _attribute: object, value: float) -> None:
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
            raise ValueError("Timeouts.request must be a positive number of seconds")

    def httpx_timeout(self) -> httpx.Timeout:
        """The matching :class:`httpx.Timeout`."""
        return httpx.Timeout(connect=self.connect, read=self.read, write=self.write, pool=self.pool)


def _positive_size(_instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"ResponseLimits.{attribute.name} must be a positive number of bytes")


@attrs.frozen(kw_only=True)
class ResponseLimits:
    """How much of the server's answers the SDK reads and keeps, in bytes.

    A body is read in pieces and the read stops as soon as it passes its limit (counted
    after decompression), raising :class:`~giosg_visitor.ProtocolError`: a broken or
    hostile server cannot make the SDK hold a huge body in memory. A declared
    ``Content-Length`` over the limit is refused before reading.

    Attributes:
        auth: A visitor auth response body; 1 MiB.
        api: Any other response body of the visitor's REST calls (pages of chats and
            messages included); 16 MiB.
        stored_extra: The fields of an auth response the SDK does not know are stored
            with the session (they are re-read on every load) while their JSON stays
            within this size, in the order the server sent them; the rest are dropped.
            4 KiB.
    """

    auth: int = attrs.field(default=1 << 20, validator=_positive_size)
    api: int = attrs.field(default=16 << 20, validator=_positive_size)
    stored_extra: int = attrs.field(default=4 << 10, validator=_positive_size)


async def read_body(response: httpx.Response, *, limit: int, what: str) -> bytes:
    """Read a streamed response's body, at most ``limit`` bytes (decoded).

    The read stops at the first piece that passes ``limit`` (the connection is closed,
    not drained). The bytes read are kept where ``Response.aread`` keeps them, so the
    response then behaves like a fully read one (``.content``, ``.text``, and httpx's own
    ``aread`` in an auth flow return them without reading again).

    Raises:
        ProtocolError: The body is larger than ``limit``.
        TransportError: The connection failed while reading.
    """
    if hasattr(response, "_content"):
        body: bytes = response.content
        if len(body) > limit:
            raise _too_large(what, limit)
        return body
    if _declared_too_large(response, limit):
        await response.aclose()
        raise _too_large(what, limit)
    chunks: list[bytes] = []
    size = 0
    pieces = response.aiter_bytes()
    complete = False
    try:
        with map_http_errors(what):
            async for chunk in pieces:
                size += len(chunk)
                if size > limit:
                    raise _too_large(what, limit)
                chunks.append(chunk)
        complete = True
    finally:
        if not complete:
            await _abandon(response, pieces)
    body = b"".join(chunks)
    # httpx has no public way to hand over a body read elsewhere; this is where its own
    # aread() puts it, and where .content and a later aread() look for it.
    response._content = body
    return body


async def _abandon(response: httpx.Response, pieces: AsyncIterator[bytes]) -> None:
    """Stop reading a body midway: close the connection, then finish the iterators.

    httpx's body iterators are nested async generators; one left suspended would only
    be finalised by the garbage collector (trio warns about each). Once the connection
    is closed, one more step makes the innermost fail, which ends every level in order.
    """
    with anyio.move_on_after(_ABANDON_SECONDS, shield=True):
        await response.aclose()
        with contextlib.suppress(Exception):
            # Bounded: a transport that ignores the close (in-memory ones) gets cut off.
            steps = 0
            async for _ in pieces:
                steps += 1
                if steps >= _ABANDON_STEPS:
                    break
    if isinstance(pieces, AsyncGenerator):
        with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
            await pieces.aclose()


def _declared_too_large(response: httpx.Response, limit: int) -> bool:
    """Whether the response's plain ``Content-Length`` already says it is over ``limit``."""
    declared = response.headers.get("content-length", "")
    plain = "content-encoding" not in response.headers
    return plain and declared.isascii() and declared.isdigit() and int(declared) > limit


def _too_large(what: str, limit: int) -> ProtocolError:
    return ProtocolError(f"{what}: the response body is larger than {limit:,} bytes; not read")


async def send_bounded(
    client: httpx.AsyncClient,
    request: httpx.Request,
    *,
    auth: httpx.Auth | None,
    limit: int,
    deadline: float,
    what: str,
) -> httpx.Response:
    """Send ``request`` and read its whole response within ``deadline`` seconds.

    The body is read with :func:`read_body` (at most ``limit`` bytes). httpx's timeouts
    are per network operation; this bounds the attempt as a whole, so a server that
    sends a byte a second cannot hold a call for minutes.

    Raises:
        TransportTimeoutError: The response was not complete within ``deadline``.
        ProtocolError: The body is larger than ``limit``.
        TransportError: The network failed.
    """
    with anyio.move_on_after(deadline) as scope:
        with map_http_errors(what):
            response = await client.send(request, auth=auth, stream=True, follow_redirects=False)
        try:
            await read_body(response, limit=limit, what=what)
        finally:
            with anyio.CancelScope(shield=True):
                await response.aclose()
        return response
    assert scope.cancelled_caught
    raise TransportTimeoutError(
        f"{what}: no complete response within {deadline:g} s (Timeouts.request)"
    )


def send_bounded_sync(
    client: httpx.Client,
    request: httpx.Request,
    *,
    limit: int,
    deadline: float,
    what: str,
) -> httpx.Response:
    """The blocking twin of :func:`send_bounded` (no auth, no redirects).

    A thread cannot be cancelled, so the deadline is kept in two ways: every network
    operation's own timeout is capped at ``deadline``, and the body read stops with
    :class:`~giosg_visitor.TransportTimeoutError` at the first piece that arrives after
    it (a server that sends a byte a second is cut off there).

    Raises:
        TransportTimeoutError: The response was not complete within ``deadline``.
        ProtocolError: The body is larger than ``limit``.
        TransportError: The network failed.
    """
    # Real time on purpose: this bounds the network, which the injected clock does not move.
    give_up = time.monotonic() + deadline
    timeouts = dict(request.extensions.get("timeout") or {})
    request.extensions["timeout"] = {
        name: deadline if timeouts.get(name) is None else min(deadline, timeouts[name])
        for name in ("connect", "read", "write", "pool")
    }
    with map_http_errors(what):
        response = client.send(request, auth=None, stream=True, follow_redirects=False)
        try:
            if _declared_too_large(response, limit):
                raise _too_large(what, limit)
            chunks: list[bytes] = []
            size = 0
            for chunk in response.iter_bytes():
                size += len(chunk)
                if size > limit:
                    raise _too_large(what, limit)
                if time.monotonic() > give_up:
                    raise TransportTimeoutError(
                        f"{what}: no complete response within {deadline:g} s (Timeouts.request)"
                    )
                chunks.append(chunk)
            # Where httpx's own read() keeps the body (see read_body).
            response._content = b"".join(chunks)
        finally:
            response.close()
    return response


def is_loopback_host(host: str) -> bool:
    """Whether ``host`` is ``localhost``, in 127.0.0.0/8 or ``::1``.

    Loopback is the only place plain http/ws is allowed (tests and the fake), for the API
    and the socket alike. An IPv6 address may come with or without its URL brackets, and
    a name with or without its trailing root dot (``localhost.`` is ``localhost``).
    """
    name = host.strip("[]").lower().rstrip(".")
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def check_credential_url(url: str, *, what: str) -> httpx.URL:
    """Refuse a URL that a credential must not travel to; return it parsed.

    https is required except for loopback hosts (tests and the fake); userinfo is
    refused (it would put a credential in the URL).

    Raises:
        UntrustedEndpointError: Before any I/O.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    host = parts.hostname or ""
    if not host:
        raise UntrustedEndpointError(f"{what}: the URL has no host", url=_safe_url(url))
    if parts.username is not None or parts.password is not None:
        raise UntrustedEndpointError(f"{what}: URLs with userinfo are refused", url=None)
    if scheme == "https" or (scheme == "http" and is_loopback_host(host)):
        return httpx.URL(url)
    raise UntrustedEndpointError(
        f"{what}: {scheme or 'no'} scheme is not allowed for credentials (https only, "
        "plain http only to loopback)",
        url=_safe_url(url),
    )


def _safe_url(url: str) -> str:
    """The URL without userinfo, query and fragment (which could hold secrets)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def same_origin(a: httpx.URL, b: httpx.URL) -> bool:
    """Scheme, host and port all equal (with default ports filled in)."""
    return (a.scheme, a.host, a.port or _default_port(a)) == (
        b.scheme,
        b.host,
        b.port or _default_port(b),
    )


def _default_port(url: httpx.URL) -> int:
    return 443 if url.scheme == "https" else 80


def response_body(response: httpx.Response) -> Any:
    """The decoded JSON body, else the text, else ``None`` (never raises)."""
    if not response.content:
        return None
    try:
        return json.loads(response.content)
    except (ValueError, RecursionError):
        try:
            return response.text[:2000]
        except (UnicodeDecodeError, LookupError):
            return None


def retry_after(response: httpx.Response, *, now: float) -> float | None:
    """Parsed ``Retry-After`` in seconds, if present and sensible."""
    value = parse_retry_after(response.headers.get("retry-after"), now=now)
    if value is None or not math.isfinite(value):
        return None
    return value


def api_error(response: httpx.Response, *, now: float) -> APIError:
    """The typed error for a non-2xx response (most specific class)."""
    request = response.request
    status = response.status_code
    body = response_body(response)
    detail = body.get("detail") if isinstance(body, dict) else None
    method, url = request.method, _safe_url(str(request.url))
    message = f"{method} {url} -> {status}"
    if isinstance(detail, str):
        message += f": {detail[:300]}"
    kwargs: dict[str, Any] = {"status_code": status, "method": method, "url": url, "body": body}
    if status == 401:
        return AuthenticationError(message, **kwargs)
    if status == 403:
        return PermissionDeniedError(message, **kwargs)
    if status == 404:
        return NotFoundError(message, **kwargs)
    if status == 429:
        return RateLimitError(message, retry_after=retry_after(response, now=now), **kwargs)
    if status >= 500:
        return ServerError(message, retry_after=retry_after(response, now=now), **kwargs)
    return APIError(message, **kwargs)


@contextmanager
def map_http_errors(what: str) -> Iterator[None]:
    """Translate httpx exceptions into giosg errors (``raise ... from exc``).

    The message names the operation and the exception class, never the URL's query or
    any header.
    """
    try:
        yield
    except GiosgError:
        raise
    except httpx.TimeoutException as exc:
        raise TransportTimeoutError(f"{what}: timed out ({type(exc).__name__})") from exc
    except httpx.TransportError as exc:
        raise TransportError(f"{what}: {type(exc).__name__}") from exc
    except httpx.InvalidURL as exc:
        raise UntrustedEndpointError(f"{what}: invalid URL") from exc


def server_wait(error: BaseException) -> float | None:
    """The ``Retry-After`` of a 429 or 5xx error in seconds, if the server sent one."""
    if isinstance(error, RateLimitError | ServerError):
        return error.retry_after
    return None


def retry_delay(
    policy: RetryPolicy,
    error: GiosgError,
    *,
    attempt: int,
    draw: float,
    elapsed: float,
    transient: Callable[[BaseException], bool] | None = None,
    keep_trying_for: float | None = None,
) -> float | None:
    """Seconds to wait before retrying a failed call, or ``None`` to raise ``error``.

    The one retry rule of the SDK's request loops (REST calls, visitor auth, OAuth token
    requests, chat backfill): transient errors only, at most ``max_attempts``, a
    full-jitter delay that is never shorter than the server's ``Retry-After`` (and not
    waited for when it is longer than ``max_retry_after``), within the per-call
    ``deadline``, and only while the :class:`~giosg_visitor.RetryBudget` allows (checked
    last, so that a retry refused for another reason spends nothing).

    A background renewal whose old token still works passes ``keep_trying_for`` (the
    seconds that token has left): it retries quietly on the same backoff, a long
    ``Retry-After`` capped at ``max_retry_after``, for as long as the next try starts
    before then, regardless of attempts, deadline and budget (giving up would end a
    session that still has a working token).

    Args:
        policy: The retry policy.
        error: The failure of attempt number ``attempt``.
        attempt: 1 after the first attempt failed.
        draw: A random number in ``[0, 1)`` for the jitter.
        elapsed: Seconds the call has spent so far.
        transient: Which errors are worth retrying (:func:`is_transient` by default;
            token endpoints add their RFC 6749 codes).
        keep_trying_for: Background mode, see above.
    """
    if not (transient or is_transient)(error):
        return None
    delay = policy.delay(attempt, draw)
    wait = server_wait(error)
    if keep_trying_for is not None:
        if wait is not None:
            delay = max(delay, min(wait, policy.max_retry_after))
        return delay if delay < keep_trying_for else None
    if attempt >= policy.max_attempts:
        return None
    if wait is not None:
        if wait > policy.max_retry_after:
            return None
        delay = max(delay, wait)
    if elapsed + delay > policy.deadline:
        return None
    if not policy.budget.try_retry():
        logger.info("retry budget spent; not retrying (%s)", type(error).__name__)
        return None
    return delay


@attrs.define
class Retries:
    """The retry bookkeeping of one call, around :func:`retry_delay` (sans-I/O).

    Created when the call starts (it counts the call in the policy's budget); then, per
    attempt, :meth:`next_attempt`, and :meth:`failed` for the delay before the next one
    (``None``: give up) or :meth:`succeeded`. Elapsed time is read on the given clock.
    The visitor's REST calls, its auth and the OAuth token requests all loop with it.
    """

    policy: RetryPolicy
    clock: Clock
    rng: Callable[[], float]
    transient: Callable[[BaseException], bool] | None = None
    attempt: int = 0
    started: float = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.started = self.clock.monotonic()
        self.policy.budget.record_call()

    def next_attempt(self) -> int:
        """Count the attempt about to start; its number (1 for the first)."""
        self.attempt += 1
        return self.attempt

    def attempt_timeout(self, request_timeout: float) -> float:
        """The deadline of this attempt: a retry never runs past the call's retry deadline."""
        if self.attempt <= 1:
            return request_timeout
        remaining = self.policy.deadline - (self.clock.monotonic() - self.started)
        return min(request_timeout, max(remaining, MIN_ATTEMPT_SECONDS))

    def failed(self, error: GiosgError, *, keep_trying_for: float | None = None) -> float | None:
        """Seconds to wait before the next attempt, or ``None`` to raise ``error``."""
        return retry_delay(
            self.policy,
            error,
            attempt=self.attempt,
            draw=self.rng(),
            elapsed=self.clock.monotonic() - self.started,
            transient=self.transient,
            keep_trying_for=keep_trying_for,
        )

    def succeeded(self) -> None:
        """Tell the budget the call succeeded."""
        self.policy.budget.record_success()


def is_transient(error: BaseException) -> bool:
    """Whether a failed call may succeed when simply tried again later."""
    if isinstance(error, TransportError):
        return True
    if isinstance(error, RateLimitError | ServerError):
        return True
    return isinstance(error, APIError) and error.status_code == 408
