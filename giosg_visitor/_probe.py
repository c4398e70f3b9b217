"""``giosg-visitor probe``: the first contact with an organization, as a pasteable report.

The socket protocol of the Giosg message router is inferred, not documented: which path
to open and which framing to speak are guesses until a real server answers. The probe
asks it. It authenticates a throwaway visitor (kept in memory unless a store is given),
optionally reads a room, then tries each socket strategy in turn: it opens the socket,
subscribes to the visitor's chats channel, listens for a moment and closes. Every step
is timed; every refusal is classified (the HTTP status of the handshake, a 200 without an
upgrade, a redirect, a close right after the socket opened, a refused subscription).

The report holds what a bug report needs and nothing secret: statuses, latencies, the
kinds of frame seen (never their contents), a few response headers (``Server``, ``Date``,
``Via``...). Tokens and the visitor secret never enter it, and every string taken from a
server is masked against the live secrets before it does.

:func:`probe` returns a :class:`ProbeReport`; :func:`run_probe_command` is the command.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from collections import Counter
from collections.abc import Mapping, Sequence
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, Final, Literal, TextIO, final

import anyio
import attrs
import httpx

from ._api import VisitorAPI
from ._auth import SocketTokens
from ._clock import SystemClock
from ._facts import API_PREFIX
from ._http import DEFAULT_BASE_URL, USER_AGENT, Timeouts
from ._redact import redact
from ._renewal import RetryPolicy
from ._secret import Secret
from .errors import (
    APIError,
    BinaryFrameError,
    ConnectionClosedError,
    GiosgError,
    TransportError,
    TransportTimeoutError,
    UntrustedEndpointError,
)
from .realtime import (
    Closed,
    Opened,
    ProtocolEvent,
    RealtimeProtocol,
    SubscribeAck,
    SubscribeFailed,
)
from .realtime._backoff import classify_handshake
from .realtime._inspect import InspectedHandshakeError, InspectedSocket, open_inspected
from .realtime._urls import DEFAULT_ALLOWED_HOSTS, Strategy, check_socket_url, socket_endpoint
from .stores.base import Store
from .stores.file import FileStore
from .stores.memory import MemoryStore
from .visitor import Visitor


__all__ = [
    "PROBED_STRATEGIES",
    "REPORTED_HEADERS",
    "HttpStep",
    "ProbeReport",
    "StrategyResult",
    "add_probe_arguments",
    "probe",
    "run_probe_command",
]

#: The socket strategies tried, in order. Each is a URL derivation plus a framing.
PROBED_STRATEGIES: Final[tuple[Strategy, ...]] = ("raw", "sockjs", "as_is")

#: Response headers copied into the report (case-insensitive). Anything else, cookies
#: above all, is left out.
REPORTED_HEADERS: Final[tuple[str, ...]] = (
    "Server",
    "Date",
    "Via",
    "Content-Type",
    "Upgrade",
    "Connection",
    "Sec-WebSocket-Extensions",
    "Retry-After",
    "Location",
    "X-Request-Id",
    "X-Served-By",
    "X-Cache",
    "CF-Ray",
)

#: Exit statuses of the command.
EXIT_WORKED: Final = 0
EXIT_NO_STRATEGY: Final = 1
EXIT_NOT_STARTED: Final = 2

_HEADER_NAMES: Final = {name.lower(): name for name in REPORTED_HEADERS}
_MAX_HEADER_VALUE: Final = 200
_MAX_REASON: Final = 200
#: A SockJS info answer is a few dozen bytes; anything much longer is something else.
_MAX_INFO_BODY: Final = 4096
#: The SockJS info fields shown (``entropy`` is a random number, left out).
_INFO_KEYS: Final = ("websocket", "cookie_needed", "origins")

Outcome = Literal[
    "subscribed",
    "handshake_refused",
    "no_upgrade",
    "redirect",
    "closed_after_open",
    "subscription_refused",
    "no_answer",
    "timeout",
    "network",
    "untrusted_url",
]


@final
@attrs.frozen(kw_only=True)
class HttpStep:
    """One HTTP step of the probe (auth, the room).

    Attributes:
        name: ``"auth"`` or ``"room"``.
        ok: Whether it succeeded.
        status: The HTTP status, if a response arrived.
        latency_ms: Wall time of the step, milliseconds.
        headers: The reported response headers.
        detail: One line saying what happened.
    """

    name: str
    ok: bool
    status: int | None
    latency_ms: float | None
    headers: tuple[tuple[str, str], ...] = ()
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "name": self.name,
            "ok": self.ok,
            "status": self.status,
            "latency_ms": _ms(self.latency_ms),
            "headers": _headers_json(self.headers),
            "detail": self.detail,
        }


@final
@attrs.frozen(kw_only=True)
class StrategyResult:
    """What one socket strategy did.

    Attributes:
        strategy: The strategy (``"raw"``, ``"sockjs"``, ``"as_is"``).
        framing: The framing spoken on it (``"raw"`` or ``"sockjs"``).
        url: The WebSocket URL opened (it never holds a credential), if one was derived.
        ok: The subscription to the chats channel was acknowledged.
        outcome: What happened, as a word (``"subscribed"``, ``"handshake_refused"``,
            ``"no_upgrade"``, ``"redirect"``, ``"closed_after_open"``,
            ``"subscription_refused"``, ``"no_answer"``, ``"timeout"``, ``"network"``,
            ``"untrusted_url"``).
        detail: One line saying what happened.
        handshake_status: The HTTP status answering the handshake, if any.
        handshake_ms: Time to the handshake's answer (TCP, TLS and HTTP included).
        open_frame_ms: Time from the handshake to the SockJS open frame (SockJS only).
        subscribe_ms: Time from sending ``sub`` to its answer.
        ping_ms: Round trip of one WebSocket ping after subscribing.
        close_code: The close code, when the server closed the socket.
        close_reason: The close reason (masked, shortened).
        frames: How many frames of each kind arrived (``text``, ``sockjs-open``,
            ``sockjs-heartbeat``, ``sockjs-array``, ``sockjs-close``, ``binary``,
            ``ping``, ``pong``, ``close``).
        headers: The reported handshake response headers.
    """

    strategy: str
    framing: str
    url: str | None
    ok: bool
    outcome: Outcome
    detail: str
    handshake_status: int | None = None
    handshake_ms: float | None = None
    open_frame_ms: float | None = None
    subscribe_ms: float | None = None
    ping_ms: float | None = None
    close_code: int | None = None
    close_reason: str | None = None
    frames: Mapping[str, int] = attrs.field(factory=dict)
    headers: tuple[tuple[str, str], ...] = ()

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "strategy": self.strategy,
            "framing": self.framing,
            "url": self.url,
            "ok": self.ok,
            "outcome": self.outcome,
            "detail": self.detail,
            "handshake_status": self.handshake_status,
            "handshake_ms": _ms(self.handshake_ms),
            "open_frame_ms": _ms(self.open_frame_ms),
            "subscribe_ms": _ms(self.subscribe_ms),
            "ping_ms": _ms(self.ping_ms),
            "close_code": self.close_code,
            "close_reason": self.close_reason,
            "frames": dict(self.frames),
            "headers": _headers_json(self.headers),
        }


@final
@attrs.frozen(kw_only=True)
class ProbeReport:
    """Everything the probe found, safe to paste into a bug report.

    Attributes:
        started_at: When the probe started (ISO 8601, UTC).
        versions: Versions of the SDK, Python, httpx and websockets, and the backend.
        base_url: The API origin.
        organization_id: The organization probed.
        visitor_id: The throwaway visitor's public id, if auth worked.
        socket_url: The ``socket_url`` auth returned.
        auth: The auth step.
        room: The room step, if a room was given.
        sockjs_info: ``GET <socket_url>/info``, SockJS's description of itself (sent
            without any credential).
        strategies: One result per strategy tried.
        error: Why the probe stopped before the sockets (auth or network failed).
    """

    started_at: str
    versions: Mapping[str, str]
    base_url: str
    organization_id: str
    visitor_id: str | None
    socket_url: str | None
    auth: HttpStep
    room: HttpStep | None = None
    sockjs_info: HttpStep | None = None
    strategies: tuple[StrategyResult, ...] = ()
    error: str | None = None

    @property
    def worked(self) -> list[str]:
        """The strategies whose subscription was acknowledged, in the order tried."""
        return [result.strategy for result in self.strategies if result.ok]

    @property
    def ok(self) -> bool:
        """At least one strategy worked."""
        return bool(self.worked)

    @property
    def exit_status(self) -> int:
        """0: a strategy worked; 1: none did; 2: the probe could not reach the sockets."""
        if self.error is not None:
            return EXIT_NOT_STARTED
        return EXIT_WORKED if self.ok else EXIT_NO_STRATEGY

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (the ``--json`` output)."""
        return {
            "ok": self.ok,
            "worked": self.worked,
            "error": self.error,
            "started_at": self.started_at,
            "versions": dict(self.versions),
            "base_url": self.base_url,
            "organization_id": self.organization_id,
            "visitor_id": self.visitor_id,
            "socket_url": self.socket_url,
            "auth": self.auth.to_json(),
            "room": self.room.to_json() if self.room is not None else None,
            "sockjs_info": self.sockjs_info.to_json() if self.sockjs_info is not None else None,
            "strategies": [result.to_json() for result in self.strategies],
        }

    def to_text(self) -> str:
        """The human-readable report."""
        lines = [
            "giosg-visitor probe report",
            f"  started   {self.started_at}",
            "  versions  " + ", ".join(f"{k} {v}" for k, v in self.versions.items()),
            f"  api       {self.base_url}",
            f"  org       {self.organization_id}",
        ]
        if self.visitor_id is not None:
            lines.append(f"  visitor   {self.visitor_id} (throwaway; its secret is not shown)")
        if self.socket_url is not None:
            lines.append(f"  socket    {self.socket_url}")
        lines.append("")
        for step in (self.auth, self.room, self.sockjs_info):
            if step is not None:
                lines.extend(_step_lines(step))
        for result in self.strategies:
            lines.extend(_strategy_lines(result))
        lines.append("")
        if self.error is not None:
            lines.append(f"result: FAILED before the sockets: {self.error}")
        elif self.ok:
            lines.append(
                f"result: OK, {len(self.worked)} of {len(self.strategies)} strategies worked "
                f"({', '.join(self.worked)}); first choice: socket_strategy={self.worked[0]!r}"
            )
        else:
            lines.append(f"result: FAILED, none of {len(self.strategies)} strategies worked")
        return "\n".join(lines) + "\n"


def _step_lines(step: HttpStep) -> list[str]:
    status = f"HTTP {step.status}" if step.status is not None else "no response"
    lines = [
        f"{step.name:<14} {'OK' if step.ok else 'FAILED':<7} {status:<9} "
        f"{_ms_text(step.latency_ms):>9}   {step.detail}"
    ]
    if step.headers:
        lines.append(f"{'':<15}headers: {_headers_text(step.headers)}")
    return lines


def _strategy_lines(result: StrategyResult) -> list[str]:
    status = f"HTTP {result.handshake_status}" if result.handshake_status else "no response"
    lines = [
        f"socket {result.strategy:<7} {'OK' if result.ok else 'FAILED':<7} {status:<9} "
        f"{_ms_text(result.handshake_ms):>9}   {result.detail}"
    ]
    indent = " " * 15
    if result.url is not None:
        lines.append(f"{indent}url: {result.url} (framing {result.framing})")
    timings = [
        f"{name} {_ms_text(value)}"
        for name, value in (
            ("handshake", result.handshake_ms),
            ("open frame", result.open_frame_ms),
            ("subscribe", result.subscribe_ms),
            ("ping", result.ping_ms),
        )
        if value is not None
    ]
    if timings:
        lines.append(f"{indent}timings: {', '.join(timings)}")
    frames = ", ".join(f"{kind} {count}" for kind, count in sorted(result.frames.items()))
    lines.append(f"{indent}frames: {frames or 'none'}")
    if result.close_code is not None:
        reason = f" {result.close_reason!r}" if result.close_reason else ""
        lines.append(f"{indent}closed by the server: code {result.close_code}{reason}")
    if result.headers:
        lines.append(f"{indent}headers: {_headers_text(result.headers)}")
    return lines


def _headers_json(headers: Sequence[tuple[str, str]]) -> dict[str, str]:
    """Headers as an object; a repeated header's values joined with commas (RFC 9110)."""
    joined: dict[str, str] = {}
    for name, value in headers:
        joined[name] = f"{joined[name]}, {value}" if name in joined else value
    return joined


def _headers_text(headers: Sequence[tuple[str, str]]) -> str:
    return "; ".join(f"{name}: {value}" for name, value in headers)


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


def _ms_text(seconds: float | None) -> str:
    return "" if seconds is None else f"{seconds * 1000:.1f} ms"


def _clean(text: str, limit: int = _MAX_REASON) -> str:
    """Mask every live secret, then shorten (masking first: a cut token is unrecognisable)."""
    cleaned = redact(text)
    cleaned = "".join(ch if ch.isprintable() else "?" for ch in cleaned)
    return cleaned if len(cleaned) <= limit else cleaned[:limit] + "..."


def select_headers(
    headers: Sequence[tuple[str, str]] | httpx.Headers,
) -> tuple[tuple[str, str], ...]:
    """The :data:`REPORTED_HEADERS` of a response, in the server's order, values masked."""
    items = headers.multi_items() if isinstance(headers, httpx.Headers) else headers
    return tuple(
        (_HEADER_NAMES[name.lower()], _clean(value, _MAX_HEADER_VALUE))
        for name, value in items
        if name.lower() in _HEADER_NAMES
    )


def frame_kind(text: str) -> str:
    """The kind of a text frame, judged by its shape (whatever framing was asked for)."""
    if text == "o":
        return "sockjs-open"
    if text == "h":
        return "sockjs-heartbeat"
    if text.startswith("a["):
        return "sockjs-array"
    if text.startswith("c["):
        return "sockjs-close"
    return "text"


# The probe ------------------------------------------------------------------------------


@attrs.define
class _Responses:
    """The responses the HTTP client saw, by URL path (the last one wins)."""

    by_path: dict[str, httpx.Response] = attrs.field(factory=dict)

    async def record(self, response: httpx.Response) -> None:
        self.by_path[response.request.url.path] = response


async def probe(
    organization_id: str,
    *,
    base_url: str = DEFAULT_BASE_URL,
    room_id: str | None = None,
    store: Store | None = None,
    strategies: Sequence[Strategy] = PROBED_STRATEGIES,
    socket_hosts: Sequence[str] = DEFAULT_ALLOWED_HOSTS,
    step_timeout: float = 10.0,
    listen: float = 1.0,
) -> ProbeReport:
    """Authenticate a throwaway visitor and try each socket strategy; report.

    Never raises for what the server does: a failed auth or network is the report's
    ``error``; a failed strategy is its :class:`StrategyResult`.

    Args:
        organization_id: The organization to probe.
        base_url: The API origin.
        room_id: A room to read (``GET`` the room endpoint), if given.
        store: Where the visitor is kept; in memory only by default.
        strategies: The socket strategies to try, in order.
        socket_hosts: The hosts ``socket_url`` may point to.
        step_timeout: Seconds for each step (auth, room, socket open, subscription).
        listen: Seconds to keep listening after a subscription is acknowledged, to see
            heartbeats and pings (a server heartbeats every 25 s or so).

    Returns:
        The report.
    """
    started_at = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    versions = _versions()
    responses = _Responses()
    clock = SystemClock()
    timeouts = Timeouts(
        connect=step_timeout, read=step_timeout, write=step_timeout, pool=step_timeout
    )
    retry = RetryPolicy(max_attempts=1, deadline=step_timeout)
    common: dict[str, Any] = {
        "started_at": started_at,
        "versions": versions,
        "base_url": base_url,
        "organization_id": organization_id,
    }
    async with AsyncExitStack() as stack:
        client = await stack.enter_async_context(
            httpx.AsyncClient(
                timeout=timeouts.httpx_timeout(),
                follow_redirects=False,
                headers={"User-Agent": USER_AGENT},
                event_hooks={"response": [responses.record]},
            )
        )
        begun = anyio.current_time()
        try:
            visitor = await stack.enter_async_context(
                Visitor(
                    organization_id,
                    base_url=base_url,
                    store=store if store is not None else MemoryStore(),
                    http_client=client,
                    timeouts=timeouts,
                    retry=retry,
                    realtime=False,
                    clock=clock,
                )
            )
        except (GiosgError, OSError) as exc:  # OSError: a FileStore that cannot be used
            elapsed = anyio.current_time() - begun
            auth = _auth_step(responses, organization_id, elapsed, error=exc)
            return ProbeReport(
                **common,
                visitor_id=None,
                socket_url=None,
                auth=auth,
                error=_error_line(exc),
            )
        elapsed = anyio.current_time() - begun
        auth = _auth_step(responses, organization_id, elapsed, error=None)
        try:
            # The socket token: the same one the visitor's own connection would send.
            token: Secret = await SocketTokens(visitor._require_session()).fresh()
        except GiosgError as exc:  # pragma: no cover - the token was issued just now
            return ProbeReport(
                **common, visitor_id=None, socket_url=None, auth=auth, error=_error_line(exc)
            )
        api = _api_for(visitor, client, clock, retry)
        room = await _room_step(api, responses, room_id) if room_id is not None else None
        info = await _sockjs_info_step(client, visitor.socket_url, socket_hosts)
        channel = api.chats_channel()
        results = []
        for strategy in strategies:
            results.append(
                await _probe_strategy(
                    strategy,
                    visitor.socket_url,
                    token,
                    channel,
                    socket_hosts=socket_hosts,
                    step_timeout=step_timeout,
                    listen=listen,
                )
            )
        return ProbeReport(
            **common,
            visitor_id=visitor.visitor_id,
            socket_url=_clean(visitor.socket_url, 500),
            auth=auth,
            room=room,
            sockjs_info=info,
            strategies=tuple(results),
        )
    raise AssertionError("unreachable")  # pragma: no cover - the stack returns above


def _api_for(
    visitor: Visitor, client: httpx.AsyncClient, clock: SystemClock, retry: RetryPolicy
) -> VisitorAPI:
    return VisitorAPI(
        client=client,
        auth=visitor.auth,
        base_url=visitor.base_url,
        organization_id=visitor.organization_id,
        visitor_id=lambda: visitor.visitor_id,
        clock=clock,
        retry=retry,
    )


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in ("giosg-visitor", "httpx", "websockets", "anyio"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:  # pragma: no cover - all are dependencies
            found[name] = "?"
    found["python"] = platform.python_version()
    import sniffio

    found["backend"] = sniffio.current_async_library()
    return found


def _auth_step(
    responses: _Responses,
    organization_id: str,
    elapsed: float,
    *,
    error: GiosgError | OSError | None,
) -> HttpStep:
    response = responses.by_path.get(f"{API_PREFIX}/orgs/{organization_id}/auth")
    status = response.status_code if response is not None else None
    headers = select_headers(response.headers) if response is not None else ()
    if error is None:
        detail = "visitor authenticated" if response is not None else "restored from the store"
        return HttpStep(
            name="auth", ok=True, status=status, latency_ms=elapsed, headers=headers, detail=detail
        )
    return HttpStep(
        name="auth",
        ok=False,
        status=status,
        latency_ms=elapsed,
        headers=headers,
        detail=_clean(f"{type(error).__name__}: {error}"),
    )


def _error_line(error: GiosgError | OSError) -> str:
    """One line for a probe that never reached the sockets."""
    if isinstance(error, APIError):
        if error.status_code in (400, 403, 404):
            why = "the organization was rejected"
        elif error.status_code >= 500:
            why = "the server failed"
        else:
            why = "auth was refused"
        return _clean(f"{why}: auth answered HTTP {error.status_code} ({error})")
    if isinstance(error, TransportTimeoutError):
        return _clean(f"no network: auth timed out ({error})")
    if isinstance(error, TransportError):
        return _clean(f"no network: could not reach the API ({error})")
    if isinstance(error, UntrustedEndpointError):
        return _clean(f"refused URL: {error}")
    if isinstance(error, OSError):
        return _clean(f"the store could not be used: {type(error).__name__}: {error}")
    return _clean(f"auth failed: {type(error).__name__}: {error}")


async def _room_step(api: VisitorAPI, responses: _Responses, room_id: str) -> HttpStep:
    begun = anyio.current_time()
    try:
        room = await api.get_room(room_id)
    except GiosgError as exc:
        response = _last_room_response(responses, room_id)
        return HttpStep(
            name="room",
            ok=False,
            status=exc.status_code if isinstance(exc, APIError) else None,
            latency_ms=anyio.current_time() - begun,
            headers=select_headers(response.headers) if response is not None else (),
            detail=_clean(f"{type(exc).__name__}: {exc}"),
        )
    response = _last_room_response(responses, room_id)
    return HttpStep(
        name="room",
        ok=True,
        status=response.status_code if response is not None else None,
        latency_ms=anyio.current_time() - begun,
        headers=select_headers(response.headers) if response is not None else (),
        detail=_clean(f"room {room.id} found"),
    )


async def _sockjs_info_step(
    client: httpx.AsyncClient, socket_url: str, socket_hosts: Sequence[str]
) -> HttpStep | None:
    """``GET <socket_url>/info``: whether a SockJS server is there, and what it offers."""
    try:
        check_socket_url(socket_url, allowed_hosts=socket_hosts)
    except UntrustedEndpointError:
        return None  # every strategy reports it; nothing is sent there
    url = httpx.URL(socket_url.rstrip("/") + "/info")
    begun = anyio.current_time()
    try:
        # No auth on this client: the request carries no credential.
        async with client.stream("GET", url, headers={"Accept": "application/json"}) as response:
            body = b""
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > _MAX_INFO_BODY:
                    break
    except httpx.HTTPError as exc:
        return HttpStep(
            name="sockjs info",
            ok=False,
            status=None,
            latency_ms=anyio.current_time() - begun,
            detail=f"no answer: {type(exc).__name__}",
        )
    elapsed = anyio.current_time() - begun
    headers = select_headers(response.headers)
    info = _decode_info(body) if response.status_code == 200 else None
    if info is None:
        detail = "not a SockJS info answer"
    else:
        detail = ", ".join(f"{key}: {json.dumps(info[key])}" for key in _INFO_KEYS if key in info)
    return HttpStep(
        name="sockjs info",
        ok=info is not None,
        status=response.status_code,
        latency_ms=elapsed,
        headers=headers,
        detail=_clean(detail or "an empty SockJS info object"),
    )


def _decode_info(body: bytes) -> dict[str, Any] | None:
    if len(body) > _MAX_INFO_BODY:
        return None
    try:
        info = json.loads(body)
    except ValueError:
        return None
    return info if isinstance(info, dict) else None


def _last_room_response(responses: _Responses, room_id: str) -> httpx.Response | None:
    for path, response in reversed(responses.by_path.items()):
        if "/rooms/" in path and path.rstrip("/").endswith(room_id):
            return response
    return None


@attrs.define
class _Watch:
    """What one socket showed so far."""

    frames: Counter[str] = attrs.field(factory=Counter)
    closed: tuple[int, str] | None = None


async def _probe_strategy(
    strategy: Strategy,
    socket_url: str,
    token: Secret,
    channel: str,
    *,
    socket_hosts: Sequence[str],
    step_timeout: float,
    listen: float,
) -> StrategyResult:
    framing: Literal["raw", "sockjs"] = "sockjs" if strategy == "sockjs" else "raw"
    base = partial(StrategyResult, strategy=strategy, framing=framing)
    try:
        url = socket_endpoint(socket_url, strategy=strategy, allowed_hosts=socket_hosts)
    except UntrustedEndpointError as exc:
        return base(url=None, ok=False, outcome="untrusted_url", detail=_clean(str(exc)))
    shown = _clean(url, 500)
    watch = _Watch()
    begun = anyio.current_time()
    timings: dict[str, float | None] = {}
    try:
        async with open_inspected(
            url, open_timeout=step_timeout, close_timeout=min(step_timeout, 5.0)
        ) as inspected:
            opened = anyio.current_time()
            timings["handshake_ms"] = opened - begun
            headers = select_headers(inspected.response.headers)
            status = inspected.response.status
            outcome, detail = await _converse(
                inspected,
                watch,
                timings,
                framing,
                token,
                channel,
                step_timeout=step_timeout,
                listen=listen,
            )
    except InspectedHandshakeError as exc:
        response = exc.response
        outcome, detail = _classify_refusal(response.status, dict(select_headers(response.headers)))
        return base(
            url=shown,
            ok=False,
            outcome=outcome,
            detail=detail,
            handshake_status=response.status,
            handshake_ms=anyio.current_time() - begun,
            headers=select_headers(response.headers),
        )
    except TransportTimeoutError:
        return base(
            url=shown,
            ok=False,
            outcome="timeout",
            detail=f"no answer to the handshake within {step_timeout:g} s",
        )
    except (TransportError, UntrustedEndpointError) as exc:
        return base(url=shown, ok=False, outcome="network", detail=_clean(str(exc)))
    closed = watch.closed
    return base(
        url=shown,
        ok=outcome == "subscribed",
        outcome=outcome,
        detail=detail,
        handshake_status=status,
        handshake_ms=timings.get("handshake_ms"),
        open_frame_ms=timings.get("open_frame_ms"),
        subscribe_ms=timings.get("subscribe_ms"),
        ping_ms=timings.get("ping_ms"),
        close_code=closed[0] if closed is not None else None,
        close_reason=_clean(closed[1]) if closed is not None and closed[1] else None,
        frames=dict(watch.frames),
        headers=headers,
    )


def _classify_refusal(status: int, headers: Mapping[str, str]) -> tuple[Outcome, str]:
    if status == 200:
        return (
            "no_upgrade",
            "HTTP 200 without an upgrade: a plain HTTP resource, not a WebSocket endpoint",
        )
    if 300 <= status < 400:
        where = headers.get("Location")
        to = f" to {where}" if where else ""
        return "redirect", f"redirected (HTTP {status}{to}); redirects are not followed"
    verdict = classify_handshake(status)
    return (
        "handshake_refused",
        f"handshake refused with HTTP {status} (the SDK would {verdict.action.value})",
    )


async def _converse(
    inspected: InspectedSocket,
    watch: _Watch,
    timings: dict[str, float | None],
    framing: Literal["raw", "sockjs"],
    token: Secret,
    channel: str,
    *,
    step_timeout: float,
    listen: float,
) -> tuple[Outcome, str]:
    """Subscribe on an open socket and listen; return the outcome and its line."""
    protocol = RealtimeProtocol(framing=framing)
    opened = anyio.current_time()
    try:
        if framing == "sockjs":
            event = await _next_event(inspected, protocol, watch, step_timeout, Opened)
            if event is None:
                return "no_answer", f"no SockJS open frame within {step_timeout:g} s"
            if isinstance(event, Closed):
                return _closed_early(watch, opened)
            timings["open_frame_ms"] = anyio.current_time() - opened
        protocol.send_subscribe([channel], token.reveal())
        sent = anyio.current_time()
        for frame in protocol.data_to_send():
            await inspected.socket.send(frame)
        event = await _next_event(
            inspected, protocol, watch, step_timeout, SubscribeAck, SubscribeFailed
        )
        if event is None:
            return "no_answer", f"no answer to the subscription within {step_timeout:g} s"
        if isinstance(event, Closed):
            return _closed_early(watch, opened)
        timings["subscribe_ms"] = anyio.current_time() - sent
        if isinstance(event, SubscribeFailed):
            reason = _clean(event.reason) if event.reason else "no reason given"
            return "subscription_refused", f"the subscription was refused: {reason}"
    except ConnectionClosedError as exc:
        watch.closed = (exc.code or 1006, exc.reason)
        _drain_control(inspected, watch)
        return _closed_early(watch, opened)
    # Subscribed: the strategy works. Measure a ping, then listen for heartbeats.
    try:
        pinged = anyio.current_time()
        with anyio.move_on_after(step_timeout):
            await inspected.socket.ping()
            timings["ping_ms"] = anyio.current_time() - pinged
        await _next_event(inspected, protocol, watch, listen)
    except ConnectionClosedError as exc:
        watch.closed = (exc.code or 1006, exc.reason)
    _drain_control(inspected, watch)
    return "subscribed", "subscribed to the visitor's chats channel"


def _closed_early(watch: _Watch, opened: float) -> tuple[Outcome, str]:
    after = _ms_text(anyio.current_time() - opened)
    code = f" with code {watch.closed[0]}" if watch.closed is not None else ""
    return (
        "closed_after_open",
        f"the server closed the socket{code} {after} after it opened, "
        "before answering the subscription",
    )


async def _next_event(
    inspected: InspectedSocket,
    protocol: RealtimeProtocol,
    watch: _Watch,
    seconds: float,
    *wanted: type[ProtocolEvent],
) -> ProtocolEvent | None:
    """Read frames until an event of ``wanted`` or a SockJS close; ``None`` on time out.

    With nothing ``wanted``, read for ``seconds`` and return ``None``.
    """
    with anyio.move_on_after(seconds):
        while True:
            try:
                text = await inspected.socket.recv()
            except BinaryFrameError:
                watch.frames["binary"] += 1
                continue
            finally:
                _drain_control(inspected, watch)
            watch.frames[frame_kind(text)] += 1
            protocol.receive_text(text)
            for event in protocol.events_received():
                if isinstance(event, Closed):
                    watch.closed = (event.code, event.reason)
                    return event
                if wanted and isinstance(event, wanted):
                    return event
    return None


def _drain_control(inspected: InspectedSocket, watch: _Watch) -> None:
    for kind in inspected.control_frames():
        watch.frames[kind] += 1


# The command ----------------------------------------------------------------------------


def add_probe_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``probe`` command's arguments to ``parser``."""
    parser.add_argument("--org", help="organization id (required unless --fake)")
    parser.add_argument("--room", help="also read this room (GET its endpoint)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--base-url", help=f"API origin (default: {DEFAULT_BASE_URL})")
    where.add_argument("--fake", action="store_true", help="probe an embedded fake Giosg")
    parser.add_argument(
        "--store",
        type=Path,
        help="keep the probe's visitor in this file (default: in memory, nothing written)",
    )
    parser.add_argument(
        "--strategy",
        action="append",
        choices=PROBED_STRATEGIES,
        help="try only this socket strategy (repeatable; default: all, in order)",
    )
    parser.add_argument(
        "--socket-host",
        action="append",
        metavar="PATTERN",
        help="a host socket_url may point to (repeatable; default: giosg.com, *.giosg.com)",
    )
    parser.add_argument(
        "--timeout", type=float, default=10.0, help="seconds for each step (default 10)"
    )
    parser.add_argument(
        "--listen",
        type=float,
        default=1.0,
        help="seconds to listen after subscribing, for heartbeats and pings (default 1)",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


def run_probe_command(
    args: argparse.Namespace,
    *,
    backend: str = "asyncio",
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Run ``giosg-visitor probe`` with parsed ``args``; return the exit status.

    Prints the report to ``out``; a probe that could not reach the sockets also prints
    one line to ``err``.
    """
    out = out if out is not None else sys.stdout
    err = err if err is not None else sys.stderr
    if not args.org and not args.fake:
        print("giosg-visitor probe: error: --org is required (or --fake)", file=err)
        return EXIT_NOT_STARTED
    if args.timeout <= 0 or args.listen < 0:
        print("giosg-visitor probe: error: --timeout must be > 0, --listen >= 0", file=err)
        return EXIT_NOT_STARTED
    if args.fake:
        try:
            import giosg_visitor.testing  # noqa: F401 - needs the [fake] extra
        except ImportError:
            print(
                "giosg-visitor probe: error: --fake needs the fake server: "
                'pip install "giosg-visitor[fake]"',
                file=err,
            )
            return EXIT_NOT_STARTED
    try:
        report = anyio.run(partial(_run, args), backend=backend)
    except KeyboardInterrupt:
        return 130
    text = json.dumps(report.to_json(), indent=2) + "\n" if args.json else report.to_text()
    # A last pass against every secret still alive; the report is built clean already.
    print(redact(text), end="", file=out, flush=True)
    if report.error is not None:
        print(f"giosg-visitor probe: error: {report.error}", file=err, flush=True)
    return report.exit_status


async def _run(args: argparse.Namespace) -> ProbeReport:
    from ._demo import DEMO_ORG_ID

    organization_id: str = args.org or DEMO_ORG_ID
    store: Store | None = FileStore(args.store) if args.store is not None else None
    options: dict[str, Any] = {
        "room_id": args.room,
        "store": store,
        "strategies": tuple(args.strategy) if args.strategy else PROBED_STRATEGIES,
        "step_timeout": args.timeout,
        "listen": args.listen,
    }
    if args.socket_host:
        options["socket_hosts"] = tuple(args.socket_host)
    if args.fake:
        from .testing import FakeGiosg

        # Short SockJS heartbeats, so that the listening window shows some.
        # The embedded fake knows the room the user asked about, so --room works there.
        rooms = [args.room] if args.room else []
        async with FakeGiosg(heartbeat_interval=0.25, rooms=rooms) as giosg:
            return await probe(organization_id, base_url=giosg.base_url, **options)
    return await probe(organization_id, base_url=args.base_url or DEFAULT_BASE_URL, **options)
