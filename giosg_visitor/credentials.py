"""``httpx.Auth`` for token-protected APIs: static tokens and OAuth2 client credentials.

* :class:`TokenAuth` sends a Giosg user API token: ``Authorization: Token <token>``.
* :class:`BearerAuth` sends an OAuth2 access token you already have:
  ``Authorization: Bearer <token>``.
* :class:`ClientCredentials` obtains Bearer tokens from an OAuth2 token endpoint with the
  client credentials grant (RFC 6749 §4.4), renews them before they expire (with the
  refresh grant when the server issued a refresh token) and answers a 401 with one
  renewal and one retry.

Every credential travels only over https (plain http only to loopback hosts, for tests)
and never shows up in a ``repr``, a log line or an exception message.
"""

from __future__ import annotations

import enum
import logging
import random
import threading
from collections.abc import AsyncGenerator, Awaitable, Callable, Generator, Iterable, Mapping
from contextlib import AsyncExitStack, ExitStack, closing
from types import TracebackType
from typing import Any, ClassVar, Final, Generic, Self, TypeGuard, TypeVar, final

import anyio
import attrs
import httpx

from ._clock import Clock, SystemClock, blocking_sleep
from ._http import (
    ResponseLimits,
    Retries,
    Timeouts,
    check_credential_url,
    send_bounded,
    send_bounded_sync,
)
from ._lifecycle import AsyncResource
from ._oauth import (
    GRANT_CLIENT_CREDENTIALS,
    GRANT_REFRESH_TOKEN,
    AuthMethod,
    Grant,
    TokenResponse,
    build_token_request,
    is_transient,
    parse_token_response,
    safe_url,
)
from ._renewal import RenewalPolicy, Renewals, RetryPolicy, TokenTimes, normalise_lifetime
from ._secret import Secret
from .errors import (
    AuthenticationError,
    GiosgError,
    InvalidGrantError,
    RenewalFailedError,
    TransportError,
)
from .models import StoredToken, VisitorRecord
from .stores.base import Store


__all__ = ["BearerAuth", "ClientCredentials", "TokenAuth"]

logger = logging.getLogger("giosg_visitor.credentials")

#: The name under which :class:`ClientCredentials` keeps its token in a store record.
TOKEN_NAME: Final = "client_credentials"

_AUTH_METHODS: Final = ("basic", "body", "query")
_RESERVED_PARAMS: Final = frozenset(
    {"grant_type", "scope", "client_id", "client_secret", "refresh_token"}
)

_T = TypeVar("_T")


class _NeedToken(enum.Enum):
    """What the API request's flow yields when it needs a token from its driver."""

    TOKEN = "token"


_NEED_TOKEN: Final = _NeedToken.TOKEN


def _advance(flow: Generator[_T, Any, None], reply: object) -> _T | None:
    """Send ``reply`` into ``flow``; its next step, or ``None`` once it has finished."""
    try:
        return flow.send(reply)
    except StopIteration:
        return None


def _check_target(url: httpx.URL, what: str) -> None:
    """Refuse to attach a credential to a URL that is not https (or loopback http)."""
    check_credential_url(str(url), what=what)


def _as_secret(value: object, what: str) -> Secret:
    """Wrap a credential, refusing what could never be sent (empty, not UTF-8)."""
    secret = value if isinstance(value, Secret) else Secret(value)  # type: ignore[arg-type]
    text = secret.reveal()
    if not text:
        raise ValueError(f"{what} must not be empty")
    _check_text(text, what)
    return secret


def _check_text(text: str, what: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{what} is not valid Unicode text (lone surrogates)") from None


# Static tokens ---------------------------------------------------------------------------


class _StaticTokenAuth(httpx.Auth):
    """A fixed credential in the ``Authorization`` header; a 401 is final."""

    scheme: ClassVar[str]

    def __init__(self, token: str | Secret) -> None:
        secret = _as_secret(token, "the token")
        if any(char in secret.reveal() for char in "\r\n"):
            # httpx would refuse the header anyway; say why without echoing the token.
            raise ValueError("the token must not contain line breaks")
        self._token = secret

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        """Attach the token; turn a 401 into :class:`AuthenticationError`.

        Raises:
            UntrustedEndpointError: The request URL is not https (nor loopback http).
            AuthenticationError: The server answered 401. A static token cannot be
                renewed, so there is no retry.
        """
        _check_target(request.url, f"{self.scheme} auth")
        request.headers["Authorization"] = f"{self.scheme} {self._token.reveal()}"
        response = yield request
        if response.status_code == 401:
            raise AuthenticationError(
                f"the {self.scheme} credential was rejected (401); static credentials are "
                "not renewed",
                status_code=401,
                method=request.method,
                url=safe_url(request.url),
            )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(token='***')"


@final
class TokenAuth(_StaticTokenAuth):
    """Giosg user API token auth: ``Authorization: Token <token>``.

    Works with ``httpx.AsyncClient`` and ``httpx.Client``. The token is held as a
    :class:`~giosg_visitor._secret.Secret`: it never appears in ``repr``, ``str`` or
    pickles.

    Args:
        token: The API token (a ``str`` or a ``Secret``).

    Raises:
        TypeError: ``token`` is not a string.
        ValueError: ``token`` is empty or contains line breaks.

    Example::

        async with httpx.AsyncClient(auth=TokenAuth(api_token)) as client:
            response = await client.get("https://service.giosg.com/api/v5/users/me")
    """

    scheme = "Token"


@final
class BearerAuth(_StaticTokenAuth):
    """OAuth2 Bearer auth with a token you already have: ``Authorization: Bearer <token>``.

    The token is not renewed: a 401 raises :class:`~giosg_visitor.errors.AuthenticationError`.
    Use :class:`ClientCredentials` for tokens that should be obtained and renewed.

    Args:
        token: The access token (a ``str`` or a ``Secret``).

    Raises:
        TypeError: ``token`` is not a string.
        ValueError: ``token`` is empty or contains line breaks.
    """

    scheme = "Bearer"


# Client credentials ----------------------------------------------------------------------


@attrs.frozen(kw_only=True, eq=False)
class _Token:
    """A token we hold: compared by identity, so a replaced token is never "current"."""

    access_token: Secret = attrs.field(repr=False)
    refresh_token: Secret | None = attrs.field(repr=False)
    times: TokenTimes
    expires_wall: float
    scope: str | None
    token_type: str
    rejected: bool = False

    def to_stored(self) -> StoredToken:
        return StoredToken(
            access_token=self.access_token,
            refresh_token=self.refresh_token,
            expires_at=self.expires_wall,
            lifetime=self.times.lifetime,
            token_type=self.token_type,
            scope=self.scope,
        )


class _RedactTokenQuery(logging.Filter):
    """Masks ``client_secret`` in URLs that httpx logs ("HTTP Request: POST <url> ...").

    Installed on the ``httpx`` logger only when a :class:`ClientCredentials` opts in to
    ``auth_method="query"``: httpx logs full request URLs at INFO (encode/httpx#2760), and
    with that placement the URL holds the secret.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and any(isinstance(arg, httpx.URL) for arg in args):
            record.args = tuple(_redact_url(arg) for arg in args)
        return True


def _redact_url(value: object) -> object:
    if isinstance(value, httpx.URL) and "client_secret" in value.params:
        return value.copy_set_param("client_secret", "[secure]")
    return value


def _install_query_redaction() -> None:
    httpx_logger = logging.getLogger("httpx")
    if not any(isinstance(f, _RedactTokenQuery) for f in httpx_logger.filters):
        httpx_logger.addFilter(_RedactTokenQuery())


def _normalise_scope(scope: str | Iterable[str] | None) -> str | None:
    if scope is None:
        return None
    parts = scope.split() if isinstance(scope, str) else list(scope)
    for part in parts:
        if not isinstance(part, str) or not part or part != part.strip() or " " in part:
            raise ValueError("scope: each scope must be a non-empty string without spaces")
        _check_text(part, "scope")
    return " ".join(parts) or None


@final
class ClientCredentials(AsyncResource, httpx.Auth):
    """OAuth2 client credentials (RFC 6749 §4.4) as an ``httpx.Auth``, renewed automatically.

    The first request obtains a token from ``token_url``; later requests reuse it until
    the renewal point of the SDK's :class:`RenewalPolicy` (about ``lifetime - min(300 s,
    lifetime/2)`` with a per-instance jitter). Renewal is single-flight: however many
    requests run at once, one token request is in flight. Before the hard point (the last
    ``min(30 s, lifetime/4)``) requests keep using the current token while one of them
    renews; from there on they wait for the renewal. A failed early renewal is logged and
    retried later while the token is still good; only a renewal at the hard point retries
    transient failures (full-jitter backoff, ``Retry-After`` honoured, within the
    :class:`RetryPolicy` deadline) and raises.

    When the server issued a ``refresh_token``, renewals use the refresh grant with the
    same credential placement; a rotated refresh token replaces the old one (persisted
    first when there is a store), and a refresh token rejected with ``invalid_grant`` is
    dropped in favour of a new client credentials grant.

    A 401 from the API invalidates the token it carried (only if it is still the current
    one, so a late 401 never throws away a newer token), renews once and retries once; a
    second 401 raises :class:`~giosg_visitor.errors.AuthenticationError`. (The retry
    re-sends the request, so, as with httpx's own ``DigestAuth``, a body given as a
    one-shot iterator cannot be retried.)

    Token requests never follow redirects (a 3xx raises
    :class:`~giosg_visitor.errors.UntrustedEndpointError`) and never carry the API
    client's own auth. RFC 6749 §5.2 errors become typed errors (``InvalidClientError``,
    ``InvalidGrantError``, ``InvalidScopeError``...); they are terminal and raised at once.

    With a ``store``, the token is persisted under ``store_key`` (the record's
    ``tokens["client_credentials"]``) and reused across restarts and processes: a stored
    token is used if it has ``min(policy.restore_margin, lifetime / 2)`` seconds left
    (:meth:`RenewalPolicy.restore_margin_for`, the rule visitor tokens follow too). OAuth
    tokens are often short (minutes), which a fixed 10-minute margin would waste.
    Renewals run under ``store.lock(store_key)``, so processes sharing a store renew once
    between them and pick up each other's rotated refresh token.

    Works with ``httpx.AsyncClient`` (any anyio backend) and with ``httpx.Client``. The
    synchronous path runs the same renewal flow (one generator, two drivers) and supports
    everything except stores (which are async); it waits between retries on the clock's
    ``blocking_sleep`` when it has one (``time.sleep`` otherwise) and uses a separate
    lock: drive one instance from async code or from threads, not both at once.

    Args:
        token_url: The token endpoint: ``https``, or ``http`` to a loopback host.
        client_id: The client id (not a secret: it may appear in reprs and logs).
        client_secret: The client secret.
        scope: Scopes to request, as a space-separated string or an iterable.
        auth_method: Where the client credentials go: ``"basic"`` (the ``Authorization``
            header, RFC 6749 §2.3.1 encoding; the default), ``"body"`` (form fields) or
            ``"query"`` (query parameters; needs ``allow_credentials_in_query=True``).
        allow_credentials_in_query: The explicit opt-in for ``auth_method="query"``.
            RFC 6749 §2.3.1 forbids it because URLs end up in logs and proxies; the SDK
            masks the secret in httpx's request log, but not in anyone else's.
        grant_type_in_query: Send ``grant_type`` (and ``scope``, ``extra_params``) as
            query parameters with an empty body, for providers that expect that shape.
        extra_params: More non-secret parameters for the client credentials grant, such
            as ``{"audience": "..."}``.
        http_client: The client for token requests. Not closed by us; by default one is
            created and closed by :meth:`aclose`.
        sync_http_client: The same for the synchronous path (closed by :meth:`close`).
        clock: Time source (tests pass a ``FakeClock``).
        policy: When to renew.
        retry: How to retry transient token endpoint failures.
        store: Where to persist the token (optional).
        store_key: The store key; by default derived from ``token_url``, ``client_id``
            and ``scope``.
        rng: Random draws in ``[0, 1)`` for the renewal jitter and retry backoff.
        limits: The most of a token response read (``limits.auth``, 1 MiB by default);
            a larger body raises :class:`~giosg_visitor.errors.ProtocolError`.
        timeouts: Transport timeouts of the clients this object creates, and
            ``timeouts.request``: the most one token request may take from start to
            the last byte of its answer (a server trickling bytes cannot hold it longer).

    Raises:
        UntrustedEndpointError: ``token_url`` is not https (nor loopback http) or holds
            userinfo. Raised here, before any I/O.
        ValueError: An invalid argument, or ``auth_method="query"`` without the opt-in.

    Example::

        auth = ClientCredentials(
            "https://auth.example.com/oauth/token", client_id, client_secret, scope="read"
        )
        async with auth, httpx.AsyncClient(auth=auth) as client:
            response = await client.get("https://api.example.com/things")
    """

    def __init__(
        self,
        token_url: str | httpx.URL,
        client_id: str,
        client_secret: str | Secret,
        *,
        scope: str | Iterable[str] | None = None,
        auth_method: AuthMethod = "basic",
        allow_credentials_in_query: bool = False,
        grant_type_in_query: bool = False,
        extra_params: Mapping[str, str] | None = None,
        http_client: httpx.AsyncClient | None = None,
        sync_http_client: httpx.Client | None = None,
        clock: Clock | None = None,
        policy: RenewalPolicy | None = None,
        retry: RetryPolicy | None = None,
        store: Store | None = None,
        store_key: str | None = None,
        rng: Callable[[], float] = random.random,
        limits: ResponseLimits | None = None,
        timeouts: Timeouts | None = None,
    ) -> None:
        self._token_url = check_credential_url(str(token_url), what="token_url")
        if not isinstance(client_id, str):
            raise TypeError(f"client_id must be a str, not {type(client_id).__name__}")
        if not client_id:
            raise ValueError("client_id must not be empty")
        _check_text(client_id, "client_id")
        self._client_id = client_id
        self._client_secret = _as_secret(client_secret, "client_secret")
        if auth_method not in _AUTH_METHODS:
            raise ValueError(f"auth_method must be one of {', '.join(_AUTH_METHODS)}")
        if auth_method == "query":
            if not allow_credentials_in_query:
                raise ValueError(
                    "auth_method='query' puts the client secret in the URL, which RFC 6749 "
                    "§2.3.1 forbids; pass allow_credentials_in_query=True to opt in"
                )
            _install_query_redaction()
        self._auth_method: AuthMethod = auth_method
        self._grant_type_in_query = grant_type_in_query
        self._scope = _normalise_scope(scope)
        extra = dict(extra_params or {})
        for name, value in extra.items():
            if name in _RESERVED_PARAMS:
                raise ValueError(f"extra_params must not set {name!r}")
            if not isinstance(name, str) or not isinstance(value, str):
                raise TypeError("extra_params must map str to str")
        self._extra_params = extra
        self._http_client = http_client
        self._owns_http_client = http_client is None
        self._sync_http_client = sync_http_client
        self._owns_sync_http_client = sync_http_client is None
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._policy = policy if policy is not None else RenewalPolicy()
        self._retry = retry if retry is not None else RetryPolicy()
        self._store = store
        self._store_key = store_key or (
            f"oauth2:{safe_url(self._token_url)}|{client_id}|{self._scope or ''}"
        )
        self._rng = rng
        self._limits = limits if limits is not None else ResponseLimits()
        self._timeouts = timeouts if timeouts is not None else Timeouts()
        # Drawn once, so instances created together do not renew at the same moment.
        self._jitter = rng()
        self._token: _Token | None = None
        self._lock = anyio.Lock()
        self._thread_lock = threading.Lock()
        # Completed renewal sequences, and how the last one ended: requests that waited
        # for a renewal share its outcome instead of starting another.
        self._renewals = Renewals()
        self._soft_not_before = float("-inf")
        self._soft_failures = 0
        self._closed = False

    # Introspection ---------------------------------------------------------------------

    @property
    def token_url(self) -> str:
        """The token endpoint."""
        return str(self._token_url)

    @property
    def client_id(self) -> str:
        """The client id."""
        return self._client_id

    @property
    def scope(self) -> str | None:
        """The requested scope (space-separated), if any."""
        return self._scope

    @property
    def auth_method(self) -> AuthMethod:
        """Where the client credentials are sent: ``"basic"``, ``"body"`` or ``"query"``."""
        return self._auth_method

    def __repr__(self) -> str:
        return (
            f"<ClientCredentials token_url={safe_url(self._token_url)!r} "
            f"client_id={self._client_id!r} auth_method={self._auth_method!r} "
            f"scope={self._scope!r}>"
        )

    # Public methods -----------------------------------------------------------------------

    async def access_token(self) -> Secret:
        """A usable access token, obtained or renewed first if needed.

        For APIs not called through httpx (a WebSocket handshake, another client).

        Raises:
            OAuthError: The token endpoint refused (a subclass per RFC 6749 §5.2 code).
            RenewalFailedError: Transient failures outlasted the retry policy while
                renewing (``__cause__`` is the last one).
            GiosgError: Other token endpoint failures, typed.
            RuntimeError: This object is closed.
        """
        return (await self._access()).access_token

    async def aclose(self) -> None:
        """Close the HTTP clients this object created (never the ones passed in)."""
        self._closed = True
        if self._owns_http_client and self._http_client is not None:
            await self._http_client.aclose()
        self._close_sync_client()

    def close(self) -> None:
        """Close the synchronous HTTP client this object created (for ``httpx.Client`` use).

        An async client this object created needs :meth:`aclose`.
        """
        self._closed = True
        self._close_sync_client()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # httpx.Auth ------------------------------------------------------------------------

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        """Attach a Bearer token; on a 401, renew once and retry once.

        Raises:
            UntrustedEndpointError: The request URL is not https (nor loopback http).
            AuthenticationError: The API answered 401 to a freshly renewed token too.
            GiosgError: Obtaining a token failed (see :meth:`access_token`).
        """
        flow = self._bearer_flow(request)
        reply: httpx.Response | _Token | None = None
        while (step := _advance(flow, reply)) is not None:
            reply = (yield step) if isinstance(step, httpx.Request) else await self._access()

    def sync_auth_flow(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, None]:
        """The same as :meth:`async_auth_flow`, for ``httpx.Client``.

        Raises:
            RuntimeError: A ``store`` was configured (stores are async).
        """
        flow = self._bearer_flow(request)
        reply: httpx.Response | _Token | None = None
        while (step := _advance(flow, reply)) is not None:
            reply = (yield step) if isinstance(step, httpx.Request) else self._access_sync()

    def _bearer_flow(
        self, request: httpx.Request
    ) -> Generator[httpx.Request | _NeedToken, Any, None]:
        """The API request's flow: yields ``_NEED_TOKEN`` (reply: a token) or the request."""
        _check_target(request.url, "ClientCredentials")
        token: _Token = yield _NEED_TOKEN
        response: httpx.Response = yield self._authorize(request, token)
        if response.status_code != 401:
            return
        self._reject(token)
        fresh: _Token = yield _NEED_TOKEN
        response = yield self._authorize(request, fresh)
        if response.status_code == 401:
            raise self._rejected_twice(request)

    async def _access(self) -> _Token:
        return await self._run(self._access_flow())

    def _access_sync(self) -> _Token:
        if self._store is not None:
            raise RuntimeError(
                "ClientCredentials with a store needs httpx.AsyncClient (stores are async)"
            )
        return self._run_sync(self._access_flow())

    @staticmethod
    def _authorize(request: httpx.Request, token: _Token) -> httpx.Request:
        request.headers["Authorization"] = f"Bearer {token.access_token.reveal()}"
        return request

    @staticmethod
    def _rejected_twice(request: httpx.Request) -> AuthenticationError:
        return AuthenticationError(
            "the Bearer token was rejected (401) again after a renewal",
            status_code=401,
            method=request.method,
            url=safe_url(request.url),
        )

    # Token bookkeeping (shared by both paths) -------------------------------------------

    def _usable(self, token: _Token | None, now: float) -> TypeGuard[_Token]:
        return token is not None and not token.rejected and token.times.is_usable(now, self._policy)

    def _soft_due(self, token: _Token, now: float) -> bool:
        return token.times.needs_renewal(now, self._policy) and now >= self._soft_not_before

    def _reject(self, token: _Token) -> None:
        """Invalidate ``token`` after a 401, unless a newer token replaced it meanwhile."""
        if self._token is token:
            self._token = attrs.evolve(token, rejected=True)

    def _install(self, token: _Token) -> None:
        self._token = token

    def _sequence_done(self, started: float, failure: GiosgError | None) -> None:
        self._renewals.record(failure)
        token = self._token
        if failure is None and token is not None:
            self._soft_failures = 0
            # However short the lifetime, renewals are spaced (no renew loop).
            self._soft_not_before = started + self._policy.spacing(token.times.lifetime)

    def _soft_failed(self, token: _Token, error: GiosgError) -> None:
        self._soft_failures += 1
        backoff = self._retry.delay(self._soft_failures, self._rng())
        wait = max(self._policy.spacing(token.times.lifetime), backoff)
        self._soft_not_before = self._clock.monotonic() + wait
        logger.warning(
            "early token renewal failed (%s); the current token stays in use, next try in %.1fs",
            type(error).__name__,
            wait,
        )

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("this ClientCredentials is closed")

    def _adoptable(self, stored: StoredToken) -> _Token | None:
        """A stored token we may use instead of asking the token endpoint, if any."""
        current = self._token
        if current is not None and stored.access_token == current.access_token:
            # Ours: the one being renewed, or the one the API just rejected.
            return None
        lifetime = stored.lifetime
        remaining = min(lifetime, stored.expires_at - self._clock.time())
        if remaining < self._policy.restore_margin_for(lifetime):
            return None
        now = self._clock.monotonic()
        times = TokenTimes(
            issued_at=now + remaining - lifetime, lifetime=lifetime, jitter=self._jitter
        )
        if not times.is_usable(now, self._policy):
            return None
        if current is not None and times.needs_renewal(now, self._policy):
            # Renewing: a token as old as ours would be renewed right away again.
            return None
        return _Token(
            access_token=stored.access_token,
            refresh_token=stored.refresh_token,
            times=times,
            expires_wall=stored.expires_at,
            scope=stored.scope,
            token_type=stored.token_type,
        )

    # The renewal flow -----------------------------------------------------------------------
    #
    # One generator per scheme, the way httpx's ``Auth.auth_flow`` is one generator for
    # both of its clients: the flow decides everything and yields an effect whenever it
    # needs the outside world (send a token request, sleep, take a lock, use the store);
    # ``_run`` (async) and ``_run_sync`` (``httpx.Client``) perform the effects and send
    # the outcome back. The drivers hold no logic of their own, so the two paths cannot
    # drift apart.

    def _access_flow(self) -> _Flow[_Token]:
        """A token a request may carry now: the current one, or a renewed one."""
        self._check_open()
        token = self._token
        now = self._clock.monotonic()
        if self._usable(token, now):
            if not self._soft_due(token, now):
                return token
            return (yield from self._soft_renew(token))
        ticket = self._renewals.ticket()
        yield _Lock(wait=True)
        if self._renewals.ran_since(ticket) and self._renewals.last_failure is not None:
            # The renewal this request waited for failed: same outcome, no new attempt.
            raise self._renewals.last_failure
        token = self._token
        if self._usable(token, self._clock.monotonic()):
            return token
        return (yield from self._sequence(single_attempt=False))

    def _soft_renew(self, token: _Token) -> _Flow[_Token]:
        """Renew early from this request while the others keep using ``token``."""
        if not (yield _Lock(wait=False)):
            return token  # a renewal is already under way
        current = self._token
        if current is not token:
            return current if self._usable(current, self._clock.monotonic()) else token
        try:
            return (yield from self._sequence(single_attempt=True))
        except GiosgError as exc:
            self._soft_failed(token, exc)
            if self._usable(token, self._clock.monotonic()):
                return token
        return (yield from self._sequence(single_attempt=False))

    def _sequence(self, *, single_attempt: bool) -> _Flow[_Token]:
        """One renewal sequence; runs with the single-flight lock held."""
        started = self._clock.monotonic()
        try:
            token = yield from self._renew(single_attempt=single_attempt)
        except GiosgError as exc:
            if not single_attempt:
                self._sequence_done(started, exc)
            raise
        self._sequence_done(started, None)
        return token

    def _renew(self, *, single_attempt: bool) -> _Flow[_Token]:
        current = self._token
        refresh = current.refresh_token if current is not None else None
        if self._store is None:
            token = yield from self._obtain(refresh, single_attempt=single_attempt)
            self._install(token)
            return token
        yield _STORE_LOCK
        record: VisitorRecord | None = yield _STORE_LOAD
        stored = record.tokens.get(TOKEN_NAME) if record is not None else None
        if stored is not None:
            adopted = self._adoptable(stored)
            if adopted is not None:
                self._install(adopted)
                return adopted
            # The store is shared: its refresh token is the latest one, even if another
            # process rotated ours.
            refresh = stored.refresh_token
        token = yield from self._obtain(refresh, single_attempt=single_attempt)
        base = record if record is not None else VisitorRecord(visitor_secret_id=None)
        # Persist before use: a rotated refresh token kept only in memory would be lost
        # with the process, and the old one is already revoked.
        yield _StoreSave(base.with_token(TOKEN_NAME, token.to_stored()))
        self._install(token)
        return token

    def _obtain(self, refresh_token: Secret | None, *, single_attempt: bool) -> _Flow[_Token]:
        """Token requests until a token, a terminal error or the end of the retry budget."""
        grant: Grant = (
            GRANT_REFRESH_TOKEN if refresh_token is not None else GRANT_CLIENT_CREDENTIALS
        )
        retries = Retries(self._retry, self._clock, self._rng, transient=is_transient)
        while True:
            attempt = retries.next_attempt()
            # Taken before sending: every deadline is early by the latency, never late.
            issued_at, wall = self._clock.monotonic(), self._clock.time()
            request = build_token_request(
                self._token_url,
                grant=grant,
                client_id=self._client_id,
                client_secret=self._client_secret,
                auth_method=self._auth_method,
                scope=self._scope,
                refresh_token=refresh_token,
                grant_type_in_query=self._grant_type_in_query,
                extra_params=self._extra_params,
            )
            logger.debug("requesting a token (%s grant, attempt %d)", grant, attempt)
            reply = yield _Send(request, retries.attempt_timeout(self._timeouts.request))
            try:
                parsed = self._parse(request, reply)
            except InvalidGrantError:
                if grant != GRANT_REFRESH_TOKEN:
                    raise
                # The refresh token expired or was revoked; the client credentials may
                # still be fine, and they are how this token was obtained in the first place.
                logger.info("the refresh token was rejected; falling back to client credentials")
                grant, refresh_token, retries.attempt = GRANT_CLIENT_CREDENTIALS, None, 0
                continue
            except GiosgError as exc:
                delay = None if single_attempt else retries.failed(exc)
                if delay is None:
                    if is_transient(exc) and not single_attempt and self._token is not None:
                        raise RenewalFailedError(
                            f"token renewal gave up after {attempt} attempts: {exc}"
                        ) from exc
                    raise
                logger.info(
                    "token request attempt %d failed (%s); retrying in %.2fs",
                    attempt,
                    type(exc).__name__,
                    delay,
                )
                yield _Sleep(delay)
                continue
            retries.succeeded()
            return self._make_token(parsed, grant, refresh_token, issued_at, wall)

    def _parse(
        self, request: httpx.Request, reply: httpx.Response | TransportError
    ) -> TokenResponse:
        if isinstance(reply, GiosgError):
            raise reply
        return parse_token_response(
            reply.status_code,
            reply.content,
            retry_after=reply.headers.get("retry-after"),
            now=self._clock.time(),
            method=request.method,
            url=safe_url(request.url),
        )

    def _make_token(
        self,
        parsed: TokenResponse,
        grant: Grant,
        old_refresh: Secret | None,
        issued_at: float,
        wall: float,
    ) -> _Token:
        lifetime = normalise_lifetime(parsed.expires_in, policy=self._policy)
        refresh = parsed.refresh_token
        if refresh is None and grant == GRANT_REFRESH_TOKEN:
            # RFC 6749 §6: without a new refresh token the old one stays valid.
            refresh = old_refresh
        elif old_refresh is not None and refresh != old_refresh:
            logger.debug("the refresh token was rotated")
        # RFC 6749 §5.1: an omitted scope is the scope requested.
        scope = parsed.scope if parsed.scope is not None else self._scope
        return _Token(
            access_token=parsed.access_token,
            refresh_token=refresh,
            times=TokenTimes(issued_at=issued_at, lifetime=lifetime, jitter=self._jitter),
            expires_wall=wall + lifetime,
            scope=scope,
            token_type=parsed.token_type,
        )

    # Drivers ----------------------------------------------------------------------------------

    async def _run(self, flow: _Flow[_T]) -> _T:
        """Drive ``flow`` with async I/O; locks it takes are released when it ends."""
        async with AsyncExitStack() as held:
            return await _drive_async(flow, lambda effect: self._perform(effect, held))
        raise AssertionError("unreachable")  # pragma: no cover - mypy: the stack may swallow

    async def _perform(self, effect: _Effect, held: AsyncExitStack) -> object:
        if isinstance(effect, _Send):
            return await self._send(effect)
        if isinstance(effect, _Sleep):
            await self._clock.sleep(effect.seconds)
            return None
        if isinstance(effect, _Lock):
            if effect.wait:
                await self._lock.acquire()
            else:
                try:
                    self._lock.acquire_nowait()
                except anyio.WouldBlock:
                    return False
            held.callback(self._lock.release)
            return True
        store = self._require_store()
        if effect is _STORE_LOCK:
            await held.enter_async_context(store.lock(self._store_key))
            return None
        if effect is _STORE_LOAD:
            return await store.load(self._store_key)
        assert isinstance(effect, _StoreSave)
        await store.save(self._store_key, effect.record)
        return None

    async def _send(self, send: _Send) -> httpx.Response | TransportError:
        try:
            # auth=None: the API client's own auth (maybe this object) must not apply.
            return await send_bounded(
                self._async_client(),
                send.request,
                auth=None,
                limit=self._limits.auth,
                deadline=send.deadline,
                what="token request",
            )
        except TransportError as exc:
            return exc

    def _run_sync(self, flow: _Flow[_T]) -> _T:
        """Drive ``flow`` with blocking I/O (``httpx.Client``, threads)."""
        with ExitStack() as held:
            return _drive_sync(flow, lambda effect: self._perform_sync(effect, held))
        raise AssertionError("unreachable")  # pragma: no cover - mypy: the stack may swallow

    def _perform_sync(self, effect: _Effect, held: ExitStack) -> object:
        if isinstance(effect, _Send):
            try:
                return send_bounded_sync(
                    self._sync_client(),
                    effect.request,
                    limit=self._limits.auth,
                    deadline=effect.deadline,
                    what="token request",
                )
            except TransportError as exc:
                return exc
        if isinstance(effect, _Sleep):
            blocking_sleep(self._clock, effect.seconds)
            return None
        if isinstance(effect, _Lock):
            if not self._thread_lock.acquire(blocking=effect.wait):
                return False
            held.callback(self._thread_lock.release)
            return True
        # _access_sync refuses a store before any flow starts.
        raise RuntimeError("stores are async: use httpx.AsyncClient")  # pragma: no cover

    def _require_store(self) -> Store:
        if self._store is None:  # pragma: no cover - the flow yields store effects only with one
            raise RuntimeError("no store configured")
        return self._store

    def _async_client(self) -> httpx.AsyncClient:
        if self._http_client is None:
            self._http_client = httpx.AsyncClient(
                timeout=self._timeouts.httpx_timeout(), follow_redirects=False
            )
        return self._http_client

    def _sync_client(self) -> httpx.Client:
        if self._sync_http_client is None:
            self._sync_http_client = httpx.Client(
                timeout=self._timeouts.httpx_timeout(), follow_redirects=False
            )
        return self._sync_http_client

    def _close_sync_client(self) -> None:
        if self._owns_sync_http_client and self._sync_http_client is not None:
            self._sync_http_client.close()


# Effects the flows yield, and the drivers that perform them ---------------------------------


@attrs.frozen
class _Send:
    """Send a token request (no auth, no redirects).

    The reply is its response, read whole within ``deadline`` seconds (a retry gets what
    is left of the retry deadline), or the :class:`TransportError` it failed with.
    """

    request: httpx.Request
    deadline: float


@attrs.frozen
class _Sleep:
    """Wait this many seconds on the injected clock."""

    seconds: float


@attrs.frozen
class _Lock:
    """Take the single-flight lock until the flow ends; the reply says whether it was taken.

    ``wait=False`` takes it only if it is free (an early renewal never queues).
    """

    wait: bool


@attrs.frozen
class _StoreSave:
    """Save ``record`` under the store key."""

    record: VisitorRecord


class _StoreEffect(enum.Enum):
    LOCK = "lock"  # hold store.lock(store_key) until the flow ends
    LOAD = "load"  # reply: the stored VisitorRecord, or None


_STORE_LOCK: Final = _StoreEffect.LOCK
_STORE_LOAD: Final = _StoreEffect.LOAD

_Effect = _Send | _Sleep | _Lock | _StoreSave | _StoreEffect
_Flow = Generator[_Effect, Any, _T]


@attrs.frozen
class _Outcome:
    """What performing an effect gave: a reply, or the exception it raised."""

    reply: object = None
    error: Exception | None = None

    @classmethod
    async def of(cls, pending: Awaitable[object]) -> _Outcome:
        try:
            return cls(await pending)
        except Exception as exc:
            return cls(error=exc)

    @classmethod
    def of_call(cls, perform: Callable[[_Effect], object], effect: _Effect) -> _Outcome:
        try:
            return cls(perform(effect))
        except Exception as exc:
            return cls(error=exc)


@attrs.frozen
class _Finished(Generic[_T]):
    value: _T


def _resume(flow: _Flow[_T], outcome: _Outcome) -> _Effect | _Finished[_T]:
    """Hand ``outcome`` to ``flow``: its next effect, or its result once it has finished.

    A failure is thrown into the flow at the ``yield`` that asked for the effect, so the
    flow's own ``try`` blocks see it as they would a failed call.
    """
    try:
        if outcome.error is not None:
            return flow.throw(outcome.error)
        return flow.send(outcome.reply)
    except StopIteration as stop:
        return _Finished(stop.value)


async def _drive_async(flow: _Flow[_T], perform: Callable[[_Effect], Awaitable[object]]) -> _T:
    """Run ``flow`` to its end, performing each effect with ``perform``."""
    with closing(flow):
        step = _resume(flow, _Outcome())
        while not isinstance(step, _Finished):
            step = _resume(flow, await _Outcome.of(perform(step)))
        return step.value


def _drive_sync(flow: _Flow[_T], perform: Callable[[_Effect], object]) -> _T:
    """:func:`_drive_async` for blocking effects."""
    with closing(flow):
        step = _resume(flow, _Outcome())
        while not isinstance(step, _Finished):
            step = _resume(flow, _Outcome.of_call(perform, step))
        return step.value
