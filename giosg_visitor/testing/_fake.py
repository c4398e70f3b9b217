"""The fake Giosg's state and HTTP app, written from Giosg's public API documentation alone.

:class:`FakeState` holds organizations' visitors, tokens, and the request journal;
:func:`build_app` exposes it as a Starlette ASGI app. The app runs either in-process
(``httpx.ASGITransport``, for virtual-time tests) or under uvicorn in a background thread
(``FakeGiosg``, over real sockets).

How to extend it: add the state to :class:`FakeState`, add a route in :func:`build_app`
through ``endpoint(...)`` so that faults, the journal and the bearer check apply, and
publish socket notifications through ``state.publish(...)``.
"""

from __future__ import annotations

import json
import secrets
import uuid
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Final, Literal, final

import attrs
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .._clock import Clock, SystemClock
from .._secret import Secret
from ._fake_chats import ChatWorld, chat_routes
from ._faults import Fault, FaultPlan
from ._kinds import RotationMode


__all__ = ["FakeState", "RecordedRequest", "TokenInfo", "build_app"]

AUTH_PATH: Final = "/api/v5/public/orgs/{org_id}/auth"

TokenStatus = Literal["none", "valid", "expired", "unknown", "missing"]


@final
@attrs.define(kw_only=True)
class TokenInfo:
    """An access token the fake issued."""

    token: str = attrs.field(repr=False)
    secret: str = attrs.field(repr=False)
    organization_id: str
    visitor_id: str
    issued_at: float
    expires_at: float


@final
@attrs.define(kw_only=True)
class VisitorIdentity:
    """A visitor known to the fake: one secret, one visitor id per organization."""

    secret: str = attrs.field(repr=False)
    visitor_ids: dict[str, str] = attrs.field(factory=dict)
    revoked: bool = False


@final
@attrs.frozen(kw_only=True)
class RecordedRequest:
    """One request as the fake saw it (secrets not kept).

    Attributes:
        method: HTTP method.
        path: URL path.
        status: The status answered.
        token_status: ``"none"`` for the auth endpoint, else what the bearer token was.
        at: Fake-clock monotonic time of arrival.
        sent_secret: For auth: whether a ``visitor_secret_id`` was sent.
        fault: Whether a fault was injected.
    """

    method: str
    path: str
    status: int
    token_status: TokenStatus
    at: float
    sent_secret: bool = False
    fault: bool = False


@final
class FakeState:
    """Everything the fake Giosg knows. Not thread-safe: touch it from one loop only.

    Args:
        clock: Time source for token expiry (share a ``FakeClock`` with the SDK for
            virtual-time tests).
        token_lifetime: Seconds each access token lives (``expires_in``).
        unknown_secret: ``"reject"`` (400, DRF body) or ``"mint"`` (a new visitor).
        organizations: If given, only these organization ids exist (others: 404).
        rotate_secrets: ``None`` (the echoed secret stays the same), ``"grace"`` (every
            auth with a secret answers with a new one; the previous one still
            authenticates the same visitor for ``rotation_grace`` seconds) or
            ``"strict"`` (every auth answers with a new secret and only the newest one
            is accepted). Giosg documents that the echoed secret is not guaranteed to
            stay the same, so a client must store what auth returns before using it.
        rotation_grace: Seconds a superseded secret stays valid in ``"grace"`` mode.
    """

    def __init__(
        self,
        *,
        clock: Clock | None = None,
        token_lifetime: float = 1800.0,
        unknown_secret: Literal["reject", "mint"] = "reject",
        organizations: set[str] | None = None,
        rotate_secrets: RotationMode | None = None,
        rotation_grace: float = 60.0,
    ) -> None:
        if rotate_secrets not in (None, "grace", "strict"):
            raise ValueError('rotate_secrets must be None, "grace" or "strict"')
        self.clock: Clock = clock or SystemClock()
        self.rotate_secrets: RotationMode | None = rotate_secrets
        self.rotation_grace = rotation_grace
        #: Superseded secrets still accepted in "grace" mode, and until when (monotonic).
        self.retired_secrets: dict[str, float] = {}
        #: How many times a secret was rotated, and when the last one was (monotonic).
        self.rotations = 0
        self.last_rotation_at: float | None = None
        self.token_lifetime = token_lifetime
        self.unknown_secret = unknown_secret
        self.organizations = organizations
        self.base_url = "http://127.0.0.1"
        self.socket_url = "http://127.0.0.1/router"
        self.visitors: dict[str, VisitorIdentity] = {}
        self.tokens: dict[str, TokenInfo] = {}
        self.requests: list[RecordedRequest] = []
        #: Auth requests being processed right now, and the most there ever were at once.
        self.auth_in_flight = 0
        self.max_auth_in_flight = 0
        self.faults = FaultPlan()
        #: Applied to every auth response body before it is sent (bad-input tests).
        self.auth_response_hook: Callable[[dict[str, Any]], Any] | None = None
        #: Observers of channel notifications (the message router subscribes here).
        self.publishers: list[Callable[[str, str, Mapping[str, Any] | None, str | None], Any]] = []
        self.chats = ChatWorld(self)
        # Every credential this fake issued, as a live Secret: the SDK's redacting log
        # filters (the fake's loggers have them too) then mask them in the fake's own
        # logs, even when the visitor holding them lives in another process.
        self._issued: list[Secret] = []

    # Visitors and tokens ----------------------------------------------------------------

    def issue(self, identity: VisitorIdentity, organization_id: str) -> TokenInfo:
        """Mint a token for ``identity`` in ``organization_id``."""
        visitor_id = identity.visitor_ids.setdefault(organization_id, uuid.uuid4().hex)
        now = self.clock.monotonic()
        info = TokenInfo(
            token=secrets.token_urlsafe(32),
            secret=identity.secret,
            organization_id=organization_id,
            visitor_id=visitor_id,
            issued_at=now,
            expires_at=now + self.token_lifetime,
        )
        self.tokens[info.token] = info
        self._issued.append(Secret(info.token))
        return info

    def new_visitor(self) -> VisitorIdentity:
        """A fresh visitor identity."""
        identity = VisitorIdentity(secret=secrets.token_hex(25))
        self.visitors[identity.secret] = identity
        self._issued.append(Secret(identity.secret))
        return identity

    def lookup_secret(self, secret: str) -> VisitorIdentity | None:
        """The identity a presented secret authenticates now (rotation rules applied)."""
        identity = self.visitors.get(secret)
        if identity is None or secret == identity.secret:
            return identity
        # A superseded secret: only within its grace window.
        until = self.retired_secrets.get(secret)
        if until is not None and self.clock.monotonic() < until:
            return identity
        return None

    def rotate(self, identity: VisitorIdentity) -> None:
        """Give ``identity`` a new secret; the old one is retired by the rotation mode."""
        old = identity.secret
        identity.secret = secrets.token_hex(25)
        self.visitors[identity.secret] = identity
        self._issued.append(Secret(identity.secret))
        self.rotations += 1
        self.last_rotation_at = self.clock.monotonic()
        if self.rotate_secrets == "grace":
            self.retired_secrets[old] = self.clock.monotonic() + self.rotation_grace
        else:
            del self.visitors[old]
        now = self.clock.monotonic()
        for stale in [s for s, until in self.retired_secrets.items() if until <= now]:
            del self.retired_secrets[stale]
            self.visitors.pop(stale, None)

    def revoke_visitor(self, visitor_id: str) -> None:
        """Make the secret of ``visitor_id`` invalid and its tokens unusable."""
        for identity in self.visitors.values():
            if visitor_id in identity.visitor_ids.values():
                identity.revoked = True
                for info in self.tokens.values():
                    if info.secret == identity.secret:
                        info.expires_at = min(info.expires_at, self.clock.monotonic())

    def expire_tokens(self) -> None:
        """Expire every issued token now (the server-side revocation case)."""
        now = self.clock.monotonic()
        for info in self.tokens.values():
            info.expires_at = min(info.expires_at, now)

    def token_status(self, token: str | None) -> tuple[TokenStatus, TokenInfo | None]:
        """Classify a presented bearer token."""
        if not token:
            return "missing", None
        info = self.tokens.get(token)
        if info is None:
            return "unknown", None
        if self.clock.monotonic() >= info.expires_at:
            return "expired", info
        return "valid", info

    def visitor_id_for(self, organization_id: str, secret: str) -> str | None:
        """The visitor id of a secret in an organization, if any."""
        identity = self.visitors.get(secret)
        return identity.visitor_ids.get(organization_id) if identity else None

    # Persistence (so a demo's second run meets the same visitors) ---------------------

    def dump(self) -> dict[str, Any]:
        """The durable part of the state, as JSON-able data (holds secrets: keep it private)."""
        current = {id(v): v for v in self.visitors.values()}.values()
        return {
            "visitors": [
                {"secret": v.secret, "visitor_ids": v.visitor_ids, "revoked": v.revoked}
                for v in current
            ],
            **self.chats.dump(),
        }

    def restore(self, data: Mapping[str, Any]) -> None:
        """Load what :meth:`dump` produced."""
        for item in data.get("visitors", []):
            identity = VisitorIdentity(
                secret=str(item["secret"]),
                visitor_ids=dict(item.get("visitor_ids", {})),
                revoked=bool(item.get("revoked", False)),
            )
            self.visitors[identity.secret] = identity
        self.chats.restore(dict(data))

    # Journal ------------------------------------------------------------------------------

    @property
    def auth_requests(self) -> list[RecordedRequest]:
        """Requests to the auth endpoint."""
        return [r for r in self.requests if r.token_status == "none"]

    @property
    def expired_token_requests(self) -> list[RecordedRequest]:
        """Requests that carried an expired token (the SDK should cause none)."""
        return [r for r in self.requests if r.token_status == "expired"]

    def publish(
        self,
        channel: str,
        action: str,
        resource: Mapping[str, Any] | None,
        resource_id: str | None = None,
    ) -> None:
        """Notify real-time subscribers of ``channel``."""
        for publisher in list(self.publishers):
            publisher(channel, action, resource, resource_id)

    def iso_in(self, seconds: float) -> str:
        """The wall-clock time ``seconds`` from now, Giosg-formatted."""
        when = datetime.fromtimestamp(self.clock.time() + seconds, tz=UTC)
        return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def drf_error(status: int, detail: str | Mapping[str, Any]) -> JSONResponse:
    """A DRF-style error response."""
    body = {"detail": detail} if isinstance(detail, str) else dict(detail)
    return JSONResponse(body, status_code=status)


class _TornResponse(Response):
    """Promises more body than it sends: uvicorn aborts the connection (a "reset")."""

    def __init__(self) -> None:
        super().__init__(
            content=b'{"detail":',
            headers={"content-length": "4096", "content-type": "application/json"},
        )


Handler = Callable[[Request, TokenInfo | None], Awaitable[Response]]


def build_app(state: FakeState) -> Starlette:
    """The fake Giosg HTTP API as a Starlette app bound to ``state``."""

    def endpoint(
        handler: Handler, *, is_auth: bool = False
    ) -> Callable[[Request], Awaitable[Response]]:
        async def run(request: Request) -> Response:
            arrived = state.clock.monotonic()
            path = request.url.path
            fault = state.faults.take(is_auth=is_auth, path=path)
            token_status: TokenStatus = "none"
            info: TokenInfo | None = None
            if not is_auth:
                token_status, info = state.token_status(_bearer(request))
            if is_auth:
                state.auth_in_flight += 1
                state.max_auth_in_flight = max(state.max_auth_in_flight, state.auth_in_flight)
            try:
                if fault is not None and fault.latency:
                    await state.clock.sleep(fault.latency)
            finally:
                if is_auth:
                    state.auth_in_flight -= 1
            response: Response
            if fault is not None and not fault.after_processing and (fault.reset or fault.status):
                response = _fault_response(fault)
            elif not is_auth and token_status != "valid":
                response = drf_error(401, _TOKEN_MESSAGES[token_status])
            else:
                response = await handler(request, info)
                if fault is not None and fault.after_processing:
                    response = _fault_response(fault)
            sent_secret = False
            if is_auth:
                sent_secret = bool(request.scope.get("giosg.sent_secret"))
            state.requests.append(
                RecordedRequest(
                    method=request.method,
                    path=path,
                    status=response.status_code,
                    token_status=token_status,
                    at=arrived,
                    sent_secret=sent_secret,
                    fault=fault is not None,
                )
            )
            return response

        return run

    async def auth(request: Request, _: TokenInfo | None) -> Response:
        org_id = request.path_params["org_id"]
        if state.organizations is not None and org_id not in state.organizations:
            return drf_error(404, "Not found.")
        raw = await request.body()
        try:
            body = json.loads(raw) if raw.strip() else {}
        except ValueError:
            return drf_error(400, "JSON parse error")
        if not isinstance(body, dict):
            return drf_error(400, {"non_field_errors": ["Invalid data. Expected a dictionary."]})
        secret = body.get("visitor_secret_id")
        request.scope["giosg.sent_secret"] = secret is not None
        if secret is None:
            identity = state.new_visitor()
        elif not isinstance(secret, str):
            return drf_error(400, {"visitor_secret_id": ["Not a valid string."]})
        else:
            known = state.lookup_secret(secret)
            if known is not None and not known.revoked:
                identity = known
                if state.rotate_secrets is not None:
                    state.rotate(identity)
            elif state.unknown_secret == "mint" and secret not in state.visitors:
                identity = state.new_visitor()
            else:
                return drf_error(400, {"visitor_secret_id": ["Invalid visitor secret."]})
        info = state.issue(identity, org_id)
        payload: dict[str, Any] = {
            "visitor_id": info.visitor_id,
            "visitor_secret_id": identity.secret,
            "organization_id": org_id,
            "socket_url": state.socket_url,
            "access_token": info.token,
            "expires_at": state.iso_in(state.token_lifetime),
            "expires_in": int(state.token_lifetime)
            if float(state.token_lifetime).is_integer()
            else state.token_lifetime,
            "minimal_bar_version": 3,
        }
        if state.auth_response_hook is not None:
            hooked = state.auth_response_hook(payload)
            if isinstance(hooked, bytes | str):
                return Response(hooked, media_type="application/json")
            payload = hooked
        return JSONResponse(payload)

    routes = [
        Route(AUTH_PATH, endpoint(auth, is_auth=True), methods=["POST"]),
        *chat_routes(state, state.chats, endpoint),
    ]
    return Starlette(routes=routes)


_TOKEN_MESSAGES: Final[Mapping[str, str]] = {
    "missing": "Authentication credentials were not provided.",
    "unknown": "Invalid token.",
    "expired": "Token has expired.",
    "none": "Authentication credentials were not provided.",
}


def _bearer(request: Request) -> str | None:
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() in ("bearer", "jwt") and value:
        return value.strip()
    return None


def _fault_response(fault: Fault) -> Response:
    if fault.reset:
        return _TornResponse()
    status = fault.status or 500
    headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else None
    body = fault.body if fault.body is not None else {"detail": f"Injected fault ({status})."}
    return JSONResponse(body, status_code=status, headers=headers)
