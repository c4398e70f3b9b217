"""A spec-compliant OAuth2 token endpoint for tests, built from authlib's server components.

The grant logic and every validation (client authentication, grant types, scopes, refresh
tokens, bearer token checks) is authlib's: ``AuthorizationServer`` with
``ClientCredentialsGrant`` and ``RefreshTokenGrant`` (rotating: ``INCLUDE_NEW_REFRESH_TOKEN``),
``BearerTokenGenerator``, and ``ResourceProtector`` with a ``BearerTokenValidator`` for a
tiny protected resource. This module only adds what authlib leaves to a framework
integration, kept as small as possible:

* requests and responses over starlette (authlib ships no starlette *server* integration).
  As in authlib's own Flask integration, the request parameters are the query string and
  the form body merged, which is what lets the "``grant_type`` in the query, empty body,
  Basic header" shape through unchanged;
* a ``client_secret_query`` client authentication method (credentials as query
  parameters), registered through authlib's ``register_client_auth_method`` extension
  point, because RFC 6749 forbids the placement and authlib does not ship it;
* the in-memory client and token models authlib asks applications to provide;
* issuing a refresh token with the client credentials grant when asked (authlib follows
  RFC 6749 §4.4.3 "SHOULD NOT" and never does; some providers do), by overriding only the
  grant's ``generate_token`` flag.

``OAuthServer`` runs uvicorn in a background thread with its own asyncio loop on
``127.0.0.1`` and a free port, so tests on the asyncio and the trio backend use it alike.
Its clock is injectable (``now``), so tests can share a ``FakeClock`` with it.
"""

from __future__ import annotations

import hmac
import json
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from types import SimpleNamespace
from typing import Any
from urllib.parse import parse_qsl

import attrs
from authlib.oauth2.rfc6749 import (
    AuthorizationServer,
    ClientMixin,
    InvalidClientError,
    OAuth2Error,
    OAuth2Request,
    ResourceProtector,
    TokenMixin,
    grants,
)
from authlib.oauth2.rfc6749.requests import BasicOAuth2Payload
from authlib.oauth2.rfc6750 import BearerTokenGenerator, BearerTokenValidator
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ._helpers import serve_asgi


__all__ = ["OAuthClient", "OAuthServer", "TokenRequestRecord"]

ALL_AUTH_METHODS = frozenset({"client_secret_basic", "client_secret_post", "client_secret_query"})
TOKEN_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "client_secret_query"]


# Models (authlib asks the application for these) ---------------------------------------


@attrs.define
class OAuthClient(ClientMixin):  # type: ignore[misc]
    """A registered confidential client."""

    client_id: str
    client_secret: str = attrs.field(repr=False)
    scope: str = "read write"
    auth_methods: frozenset[str] = ALL_AUTH_METHODS
    grant_types: frozenset[str] = frozenset({"client_credentials", "refresh_token"})

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> None:
        return None

    def get_allowed_scope(self, scope: str | None) -> str:
        if not scope:
            return self.scope
        allowed = set(self.scope.split())
        return " ".join(s for s in scope.split() if s in allowed)

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return False

    def check_client_secret(self, client_secret: str) -> bool:
        return hmac.compare_digest(client_secret.encode(), self.client_secret.encode())

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method in self.auth_methods

    def check_response_type(self, response_type: str) -> bool:
        return False

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type in self.grant_types


@attrs.define
class IssuedToken(TokenMixin):  # type: ignore[misc]
    """An access token (and maybe a refresh token) the server issued."""

    client_id: str
    access_token: str = attrs.field(repr=False)
    refresh_token: str | None = attrs.field(repr=False)
    scope: str
    issued_at: float
    expires_in: int
    grant_type: str
    now: Callable[[], float] = attrs.field(repr=False)
    access_revoked: bool = False
    refresh_revoked: bool = False

    def check_client(self, client: OAuthClient) -> bool:
        return client.client_id == self.client_id

    def get_scope(self) -> str:
        return self.scope

    def get_expires_in(self) -> int:
        return self.expires_in

    def is_expired(self) -> bool:
        return self.now() >= self.issued_at + self.expires_in

    def is_revoked(self) -> bool:
        return self.access_revoked

    def get_user(self) -> None:
        return None


@attrs.frozen
class TokenRequestRecord:
    """What the token endpoint saw (for assertions): no secrets kept."""

    grant_type: str | None
    auth_method: str | None
    query_keys: frozenset[str]
    form_keys: frozenset[str]
    body_empty: bool
    status: int
    error: str | None
    scope: str | None


# Glue between starlette and authlib -----------------------------------------------------


class _StarletteOAuth2Request(OAuth2Request):  # type: ignore[misc]
    """authlib's request object over an already-read starlette request."""

    def __init__(
        self, method: str, uri: str, headers: Headers, query: dict[str, str], form: dict[str, str]
    ) -> None:
        super().__init__(method=method, uri=uri, headers=headers)
        self._args = query
        self._form = form
        # Query and body together, like authlib's Flask integration (``request.values``).
        self.payload = BasicOAuth2Payload({**query, **form})

    @property
    def args(self) -> dict[str, str]:
        return self._args

    @property
    def form(self) -> dict[str, str]:
        return self._form


def _authenticate_client_secret_query(
    query_client: Callable[[str], OAuthClient | None], request: _StarletteOAuth2Request
) -> OAuthClient | None:
    """``client_secret_query``: like authlib's ``client_secret_post``, from the query."""
    client_id = request.args.get("client_id")
    client_secret = request.args.get("client_secret")
    if not client_id or not client_secret:
        return None
    client = query_client(client_id)
    if client is None:
        raise InvalidClientError(description="The client does not exist on this server.")
    return client if client.check_client_secret(client_secret) else None


class _ClientCredentialsGrant(grants.ClientCredentialsGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS = TOKEN_AUTH_METHODS

    def generate_token(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        kwargs["include_refresh_token"] = self.server.owner.issue_refresh_tokens
        token: dict[str, Any] = super().generate_token(*args, **kwargs)
        return token


class _RefreshTokenGrant(grants.RefreshTokenGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS = TOKEN_AUTH_METHODS
    INCLUDE_NEW_REFRESH_TOKEN = True

    def authenticate_refresh_token(self, refresh_token: str) -> IssuedToken | None:
        owner: OAuthServer = self.server.owner
        return owner.find_refresh(refresh_token)

    def authenticate_user(self, credential: IssuedToken) -> str:
        # Client credentials have no resource owner; authlib only needs a truthy value.
        return credential.client_id

    def revoke_old_credential(self, refresh_token: IssuedToken) -> None:
        refresh_token.refresh_revoked = True


class _AuthorizationServer(AuthorizationServer):  # type: ignore[misc]
    def __init__(self, owner: OAuthServer) -> None:
        super().__init__(scopes_supported=["read", "write"])
        self.owner: OAuthServer = owner

    def query_client(self, client_id: str) -> OAuthClient | None:
        return self.owner.clients.get(client_id)

    def save_token(self, token: dict[str, Any], request: OAuth2Request) -> None:
        self.owner.tokens.append(
            IssuedToken(
                client_id=request.client.client_id,
                access_token=token["access_token"],
                refresh_token=token.get("refresh_token"),
                scope=token.get("scope", ""),
                issued_at=self.owner.now(),
                expires_in=token["expires_in"],
                grant_type=request.payload.grant_type,
                now=lambda: self.owner.now(),
            )
        )

    def create_oauth2_request(self, request: OAuth2Request) -> OAuth2Request:
        return request

    def handle_response(
        self, status: int, body: Any, headers: list[tuple[str, str]]
    ) -> tuple[int, Any, list[tuple[str, str]]]:
        return status, body, headers

    def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
        pass


class _BearerValidator(BearerTokenValidator):  # type: ignore[misc]
    def __init__(self, owner: OAuthServer) -> None:
        super().__init__()
        self.owner: OAuthServer = owner

    def authenticate_token(self, token_string: str) -> IssuedToken | None:
        return self.owner.find_access(token_string)


def _json(status: int, body: Any, headers: Iterable[tuple[str, str]] = ()) -> Response:
    merged = {"Content-Type": "application/json", **dict(headers)}
    return Response(json.dumps(body), status_code=status, headers=merged)


# The server -----------------------------------------------------------------------------


class OAuthServer:
    """The token endpoint (``/token``) and a protected resource (``/resource``).

    ``GET /resource?scope=read`` answers 200 with the token's client id and scope for a
    valid, unexpired, unrevoked Bearer token that has the scope, and the RFC 6750 error
    (401 ``invalid_token``, 403 ``insufficient_scope``) otherwise.

    Args:
        expires_in: Lifetime of issued access tokens, seconds.
        issue_refresh_tokens: Issue a refresh token with the client credentials grant.
        now: The server's wall clock (share a ``FakeClock``'s ``time`` for virtual time).
    """

    def __init__(
        self,
        *,
        expires_in: int = 3600,
        issue_refresh_tokens: bool = True,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.expires_in = expires_in
        self.issue_refresh_tokens = issue_refresh_tokens
        self.now = now
        self.clients: dict[str, OAuthClient] = {}
        self.tokens: list[IssuedToken] = []
        self.token_requests: list[TokenRequestRecord] = []
        self.resource_statuses: list[int] = []
        self.faults: list[tuple[int, dict[str, Any]]] = []
        self._lock = threading.Lock()
        self._auth = _AuthorizationServer(self)
        self._auth.register_grant(_ClientCredentialsGrant)
        self._auth.register_grant(_RefreshTokenGrant)
        self._auth.register_client_auth_method(
            "client_secret_query", _authenticate_client_secret_query
        )
        self._auth.register_token_generator(
            "default",
            BearerTokenGenerator(
                access_token_generator=lambda **_: secrets.token_urlsafe(24),
                refresh_token_generator=lambda **_: secrets.token_urlsafe(24),
                expires_generator=lambda client, grant_type: self.expires_in,
            ),
        )
        self._protector = ResourceProtector()
        self._protector.register_token_validator(_BearerValidator(self))
        self._app = Starlette(
            routes=[
                Route("/token", self._token_endpoint, methods=["POST"]),
                Route("/resource", self._resource, methods=["GET", "POST"]),
            ]
        )
        self._serving = ExitStack()
        self.port = 0

    # Setup and state ---------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def token_url(self) -> str:
        """The token endpoint URL."""
        return f"{self.base_url}/token"

    @property
    def resource_url(self) -> str:
        """The protected resource URL."""
        return f"{self.base_url}/resource"

    def add_client(self, client_id: str, client_secret: str, **kwargs: Any) -> OAuthClient:
        """Register a client (see :class:`OAuthClient` for the options)."""
        client = OAuthClient(client_id, client_secret, **kwargs)
        with self._lock:
            self.clients[client_id] = client
        return client

    def reset(self, *, now: Callable[[], float] = time.time) -> None:
        """Forget clients, tokens and records; restore the default settings."""
        with self._lock:
            self.clients.clear()
            self.tokens.clear()
            self.token_requests.clear()
            self.resource_statuses.clear()
            self.faults.clear()
            self.expires_in = 3600
            self.issue_refresh_tokens = True
            self.now = now

    def fail_next(self, status: int, body: dict[str, Any]) -> None:
        """Answer the next token request with ``status`` and ``body`` instead."""
        with self._lock:
            self.faults.append((status, body))

    def revoke_refresh_tokens(self) -> None:
        """Revoke every refresh token (the next refresh grant gets ``invalid_grant``)."""
        with self._lock:
            for token in self.tokens:
                token.refresh_revoked = True

    def revoke_access_tokens(self) -> None:
        """Revoke every access token issued so far (the resource answers 401)."""
        with self._lock:
            for token in self.tokens:
                token.access_revoked = True

    def find_access(self, access_token: str) -> IssuedToken | None:
        """The issued token with this access token."""
        return next((t for t in self.tokens if t.access_token == access_token), None)

    def find_refresh(self, refresh_token: str) -> IssuedToken | None:
        """The token with this refresh token, unless revoked."""
        for token in self.tokens:
            if token.refresh_token == refresh_token and not token.refresh_revoked:
                return token
        return None

    def records(self) -> list[TokenRequestRecord]:
        """A copy of the token requests seen so far."""
        with self._lock:
            return list(self.token_requests)

    # Endpoints ----------------------------------------------------------------------------

    async def _token_endpoint(self, request: Request) -> Response:
        body = await request.body()
        form = dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
        query = dict(request.query_params)
        oauth_request = _StarletteOAuth2Request(
            request.method, str(request.url), request.headers, query, form
        )
        with self._lock:
            if self.faults:
                status, payload = self.faults.pop(0)
                headers: list[tuple[str, str]] = []
            else:
                status, payload, headers = self._auth.create_token_response(oauth_request)
            self.token_requests.append(
                TokenRequestRecord(
                    grant_type=oauth_request.payload.grant_type,
                    auth_method=oauth_request.auth_method,
                    query_keys=frozenset(query),
                    form_keys=frozenset(form),
                    body_empty=not body,
                    status=status,
                    error=payload.get("error"),
                    scope=payload.get("scope"),
                )
            )
        return _json(status, payload, headers)

    async def _resource(self, request: Request) -> Response:
        scope = request.query_params.get("scope")
        with self._lock:
            try:
                token = self._protector.validate_request(
                    [scope] if scope else None, SimpleNamespace(headers=request.headers)
                )
            except OAuth2Error as error:
                status, payload, headers = error()
                self.resource_statuses.append(status)
                return _json(status, payload, headers)
            self.resource_statuses.append(200)
        return JSONResponse({"client_id": token.client_id, "scope": token.scope})

    # Lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Serve on 127.0.0.1 with a free port in a background thread (its own loop)."""
        self.port = self._serving.enter_context(
            serve_asgi(self._app, lifespan="off", ws="none", http="h11")
        )

    def stop(self) -> None:
        """Stop serving and join the thread."""
        self._serving.close()

    def __enter__(self) -> OAuthServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
