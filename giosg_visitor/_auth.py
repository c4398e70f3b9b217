"""Visitor authentication: authenticate, resume, persist and renew one visitor's token.

:class:`VisitorSession` owns the token of one visitor in one organization. Renewal is
single-flight: one renewal *sequence* (attempts plus backoff) runs at a time per session,
under an ``anyio.Lock``, and callers that waited for it share its outcome. Across
processes, the store's ``lock(key)`` makes renewals single-flight too: a process that
finds a fresher token in the store adopts it instead of calling auth.

:class:`VisitorAuth` is the ``httpx.Auth`` that attaches the token and handles a 401 with
one renewal and one retry. What it shares with ``credentials.ClientCredentials``, the
other token renewal: the timing maths and the single-flight record (``_renewal.py``,
pure) and the retry rule (``_http.Retries``). Unlike OAuth tokens, a visitor's token is
renewed by a background task, so its sequence may keep retrying while the old token
still works.
"""

from __future__ import annotations

import enum
import json
import logging
import random
import sqlite3
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager, nullcontext
from types import MappingProxyType
from typing import Any, Final, Literal, TypeVar, final

import anyio
import attrs
import httpx

from ._clock import Clock
from ._facts import API_PREFIX
from ._http import (
    USER_AGENT,
    ResponseLimits,
    Retries,
    api_error,
    is_transient,
    map_http_errors,
    read_body,
    send_bounded,
)
from ._limiter import DeadlineLimiter, background_deadline, limiter_for
from ._renewal import RenewalPolicy, Renewals, RetryPolicy, TokenTimes, normalise_lifetime
from ._secret import Secret
from .errors import (
    APIError,
    GiosgError,
    InvalidSecretError,
    ProtocolError,
    RenewalFailedError,
    SessionExpiredError,
    StoreError,
    StoreUnavailableError,
    TransportTimeoutError,
)
from .models import (
    AuthSession,
    IdentityChange,
    OrganizationSession,
    VisitorRecord,
    decode_json_object,
)
from .stores.base import Store


__all__ = ["SessionState", "SocketTokens", "Token", "VisitorAuth", "VisitorSession"]

logger = logging.getLogger("giosg_visitor.auth")

_T = TypeVar("_T")

#: How long an auth call plus the save of its answer may hold off cancellation.
_AUTH_SHIELD_SECONDS: Final = 60.0

#: Auth statuses that mean "this secret is not (or no longer) valid" when one was sent.
_INVALID_SECRET_STATUSES: Final = frozenset({400, 401, 403, 404})

InvalidSecretPolicy = Literal["raise", "new_visitor"]


class SessionState(enum.Enum):
    """Where a visitor session is in its life."""

    ANONYMOUS = "anonymous"
    AUTHENTICATED = "authenticated"
    RENEWING = "renewing"
    EXPIRED = "expired"
    FAILED = "failed"
    CLOSED = "closed"


@final
@attrs.frozen(kw_only=True)
class Token:
    """A usable access token and its timing (monotonic clock)."""

    access_token: Secret = attrs.field(repr=False)
    times: TokenTimes
    session: OrganizationSession
    #: Read back from the store at start-up (its socket_url may be stale), not from auth.
    restored: bool = False


@final
class VisitorSession:
    """One visitor's token in one organization: start, renew, persist.

    Not public: :class:`~giosg_visitor.Visitor` drives it. All I/O goes through the given
    ``httpx.AsyncClient`` and ``Store``; all time through ``clock``.
    """

    def __init__(
        self,
        *,
        organization_id: str,
        base_url: httpx.URL,
        client: httpx.AsyncClient,
        store: Store,
        key: str,
        clock: Clock,
        policy: RenewalPolicy,
        retry: RetryPolicy,
        rng: Callable[[], float] = random.random,
        on_invalid_secret: InvalidSecretPolicy = "raise",
        limits: ResponseLimits | None = None,
        request_timeout: float = 60.0,
    ) -> None:
        self.organization_id = organization_id
        self._limits = limits or ResponseLimits()
        self._request_timeout = request_timeout
        # The deadline of the auth attempt in progress (a retry gets what is left of the
        # retry deadline, at most request_timeout).
        self._attempt_timeout = request_timeout
        self._base_url = base_url
        self._client = client
        self._store = store
        self._key = key
        self._clock = clock
        self._policy = policy
        self._retry = retry
        self._rng = rng
        self._on_invalid_secret = on_invalid_secret
        # A per-session draw, so visitors created together renew at different times.
        self._jitter = rng()
        self._token: Token | None = None
        self._secret: Secret | None = None
        self._lock = anyio.Lock()
        self._renewals = Renewals()
        self._failure: GiosgError | None = None
        self._last_renewal_start: float | None = None
        self._renewing = False
        self._closed = False
        # A renewed record the store could not take yet (it was down, locked, read-only):
        # the token is in use from memory and the save is retried (see save_unsaved).
        self._unsaved: VisitorRecord | None = None
        self.identity_change: IdentityChange | None = None
        # The pool-wide limit on auth requests, when the client belongs to a VisitorPool.
        self._limiter = limiter_for(client)

    # Introspection ----------------------------------------------------------------------

    @property
    def state(self) -> SessionState:
        """The current :class:`SessionState`."""
        if self._closed:
            return SessionState.CLOSED
        if self._failure is not None:
            return SessionState.FAILED
        if self._renewing:
            return SessionState.RENEWING
        if self._token is None:
            return SessionState.ANONYMOUS
        if self._clock.monotonic() >= self._token.times.expires_at:
            return SessionState.EXPIRED
        return SessionState.AUTHENTICATED

    @property
    def current(self) -> Token | None:
        """The latest token, usable or not."""
        return self._token

    @property
    def limiter(self) -> DeadlineLimiter | None:
        """The pool-wide limit on background requests of this session's client, if any."""
        return self._limiter

    def is_current(self, token: Token) -> bool:
        """Whether ``token`` is the latest token and may still be sent now."""
        return token is self._token and token.times.is_usable(self._clock.monotonic(), self._policy)

    @property
    def failure(self) -> GiosgError | None:
        """The terminal error, once the session has failed."""
        return self._failure

    def seconds_until_renewal(self) -> float:
        """Seconds until the background renewal should run (0 if overdue)."""
        token = self._token
        if token is None:
            return 0.0
        due = token.times.renew_at(self._policy)
        if self._last_renewal_start is not None:
            due = max(due, self._last_renewal_start + self._policy.spacing(token.times.lifetime))
        return max(0.0, due - self._clock.monotonic())

    def close(self) -> None:
        """Mark the session closed: no more tokens are handed out."""
        self._closed = True

    @property
    def has_unsaved(self) -> bool:
        """Whether a renewed token is in use that the store has not taken yet."""
        return self._unsaved is not None

    async def save_unsaved(self) -> bool:
        """Try once to save the record a renewal could not save; ``True`` once saved.

        Merged with what the store holds now, under the store's lock, so that what other
        processes stored meanwhile (other organizations' sessions, OAuth tokens, a fresher
        token of this organization) is kept. Store failures are logged, never raised.
        """
        async with self._lock:
            pending = self._unsaved
            if pending is None:
                return True
            try:
                await self._with_store_lock(lambda: self._merge_and_save(pending))
            except StoreError as exc:
                logger.info("the store is still unavailable (%s); will retry", type(exc).__name__)
                return False
            if self._unsaved is pending:
                self._unsaved = None
            logger.warning("the store is available again; the renewed token is saved")
            return True

    async def _merge_and_save(self, pending: VisitorRecord) -> None:
        stored = await self._load()
        record = pending
        if stored is not None and stored.visitor_secret_id == pending.visitor_secret_id:
            ours = pending.sessions.get(self.organization_id)
            theirs = stored.sessions.get(self.organization_id)
            if ours is None or (theirs is not None and theirs.expires_at >= ours.expires_at):
                return  # another process stored a token at least as fresh: keep it
            record = stored.with_session(ours)
        await self._save(record)

    # Store access: every failure of the store becomes a StoreError. -----------------------

    async def _load(self) -> VisitorRecord | None:
        try:
            return await self._store.load(self._key)
        except StoreError:
            raise
        except Exception as exc:
            # A store of the user's own may raise anything; it is still a store failure.
            raise _store_failure("load", exc) from exc

    async def _save(self, record: VisitorRecord) -> None:
        try:
            await self._store.save(self._key, record)
        except StoreError:
            raise
        except Exception as exc:
            raise _store_failure("save", exc) from exc

    async def _with_store_lock(self, body: Callable[[], Awaitable[_T]]) -> _T:
        """``body()`` under the store's lock of this key.

        A failure to take the lock is a :class:`StoreError`; a failure to release it after
        ``body`` succeeded is only logged (the outcome, a token the server issued, must not
        be thrown away; leases expire by themselves). Errors of ``body`` pass unchanged.
        """
        done: list[_T] = []
        in_body = False
        try:
            async with self._store.lock(self._key):
                in_body = True
                done.append(await body())
        except Exception as exc:
            if done:
                logger.warning("could not release the store lock (%s)", type(exc).__name__)
                return done[0]
            if in_body or isinstance(exc, StoreError):
                raise
            raise _store_failure("lock", exc) from exc
        return done[0]

    # Entry points -----------------------------------------------------------------------

    async def start(self) -> Token:
        """Resume from the store (reusing a stored token with a safe margin) or authenticate.

        Raises:
            InvalidSecretError: The stored secret was rejected (and the policy is "raise").
            GiosgError: Auth failed after its retries (the last error, typed).
        """
        async with self._lock:
            restored = await self._with_store_lock(self._restore)
            if restored is not None:
                return restored
            return await self._sequence(stale=None, background=False)

    async def _restore(self) -> Token | None:
        record = await self._load()
        if record is None:
            return None
        self._secret = record.visitor_secret_id
        restored = self._restorable(record)
        if restored is not None:
            self._token = restored
            logger.debug("reusing a stored token for visitor %s", restored.session.visitor_id)
        return restored

    async def token(self) -> Token:
        """A token that may be sent now, renewing first if needed (waits for the one renewal).

        Raises:
            SessionExpiredError: The session is closed.
            GiosgError: The session failed terminally, or renewal gave up.
        """
        self._raise_if_unusable()
        token = self._token
        if token is not None and token.times.is_usable(self._clock.monotonic(), self._policy):
            return token
        return await self.renew(stale=token)

    async def renew(self, *, stale: Token | None, background: bool = False) -> Token:
        """Renew unless someone already did since ``stale`` was current (single-flight).

        Args:
            stale: The token the caller found wanting (``None``: any renewal will do).
            background: Keep retrying transient failures while the old token is valid.
        """
        self._raise_if_unusable()
        ticket = self._renewals.ticket()
        async with self._lock:
            self._raise_if_unusable()
            now = self._clock.monotonic()
            current = self._token
            if self._renewals.ran_since(ticket):
                # A renewal finished while we waited for the lock: share its outcome.
                if self._renewals.last_failure is not None:
                    raise self._renewals.last_failure
                if current is not None and current.times.is_usable(now, self._policy):
                    return current
            if (
                current is not None
                and current is not stale
                and current.times.is_usable(now, self._policy)
            ):
                return current
            return await self._sequence(stale=stale, background=background)

    # The renewal sequence (always called with self._lock held) --------------------------

    def _raise_if_unusable(self) -> None:
        if self._closed:
            raise SessionExpiredError("the visitor session is closed")
        if self._failure is not None:
            raise self._failure

    async def _sequence(self, *, stale: Token | None, background: bool) -> Token:
        """Attempts with backoff until success, a terminal error, or the budget runs out."""
        self._renewing = True
        try:
            token = await self._attempts(background=background)
        except GiosgError as exc:
            self._renewals.record(exc)
            if _is_terminal(exc):
                # Remembered: no more auth calls for this visitor (no hammering).
                self._failure = exc
            raise
        except BaseException:
            # Cancelled (or not a GiosgError): finished, with no outcome to share.
            self._renewals.finished += 1
            raise
        else:
            self._renewals.record(None)
            return token
        finally:
            self._renewing = False

    async def _attempts(self, *, background: bool) -> Token:
        retries = Retries(self._retry, self._clock, self._rng)
        while True:
            attempt = retries.next_attempt()
            await self._respect_spacing()
            keep_trying_for = self._background_left(background)
            # A background renewal with a working token is not held to the retry deadline.
            self._attempt_timeout = (
                self._request_timeout
                if keep_trying_for is not None
                else retries.attempt_timeout(self._request_timeout)
            )
            try:
                async with self._auth_slot():
                    token = await self._attempt()
            except GiosgError as exc:
                delay = retries.failed(exc, keep_trying_for=self._background_left(background))
                if delay is None:
                    if self._token is None or not is_transient(exc):
                        raise
                    raise RenewalFailedError(
                        f"token renewal gave up after {attempt} attempts: {exc}"
                    ) from exc
                logger.info(
                    "auth attempt %d failed (%s); retrying in %.2fs",
                    attempt,
                    type(exc).__name__,
                    delay,
                )
                await self._clock.sleep(delay)
            else:
                retries.succeeded()
                return token

    def _background_left(self, background: bool) -> float | None:
        """Seconds the old token has left, when a background renewal may retry till then."""
        token = self._token
        if not background or token is None:
            return None
        # The old token still works: keep trying (quietly, on the backoff schedule) until
        # it expires. Not charged to the retry budget: giving up here would end a session
        # that still has a working token.
        return token.times.expires_at - self._clock.monotonic()

    def _auth_slot(self) -> AbstractAsyncContextManager[None]:
        """A slot of the pool-wide auth limit (none without a pool), by token deadline.

        The waiter whose token stops being handed out soonest goes first; a first auth
        (no token yet) ranks as if its deadline were the auth call's own time limit.
        """
        if self._limiter is None:
            return nullcontext()
        token = self._token
        if token is not None:
            deadline = token.times.hard_at(self._policy)
        else:
            deadline = self._clock.monotonic() + _AUTH_SHIELD_SECONDS
        return self._limiter.slot(deadline)

    async def _respect_spacing(self) -> None:
        """Never start renewals closer together than the policy allows (no renew loop)."""
        last, token = self._last_renewal_start, self._token
        if last is not None and token is not None:
            wait = last + self._policy.spacing(token.times.lifetime) - self._clock.monotonic()
            if wait > 0:
                await self._clock.sleep(wait)
        self._last_renewal_start = self._clock.monotonic()

    async def _attempt(self) -> Token:
        """One renewal: adopt a fresher token from the store, or call auth and persist.

        When the store fails (locked by another process, read-only, down) and this session
        already has a token and its secret, auth is called without the store: the new
        token is used from memory and its save is left to :meth:`save_unsaved`. A store
        outage must not end a visitor whose server-side credentials are fine.
        """
        try:
            return await self._with_store_lock(self._attempt_locked)
        except StoreError as exc:
            if self._token is None or self._secret is None:
                raise
            logger.warning(
                "the store failed (%s); renewing from memory, the save is retried later",
                type(exc).__name__,
            )
            return await self._authenticate(None, self._secret, persist=False)

    async def _attempt_locked(self) -> Token:
        record = await self._load()
        if record is not None and record.visitor_secret_id is not None:
            adopted = self._adoptable(record)
            if adopted is not None:
                self._secret = record.visitor_secret_id
                self._token = adopted
                return adopted
            self._secret = record.visitor_secret_id
        secret = self._secret
        try:
            return await self._authenticate(record, secret)
        except InvalidSecretError:
            if self._on_invalid_secret != "new_visitor" or secret is None:
                raise
            old = self._token.session.visitor_id if self._token else None
            if old is None and record is not None:
                stored = record.sessions.get(self.organization_id)
                old = stored.visitor_id if stored else None
            token = await self._authenticate(None, None)
            self.identity_change = IdentityChange(
                old_visitor_id=old,
                new_visitor_id=token.session.visitor_id,
                at=self._clock.time(),
            )
            logger.warning(
                "the stored visitor secret was rejected; started new visitor %s (was %s)",
                token.session.visitor_id,
                old,
            )
            return token

    async def _authenticate(
        self, record: VisitorRecord | None, secret: Secret | None, *, persist: bool = True
    ) -> Token:
        """Call auth and persist the answer, shielded from cancellation for a bounded time.

        A token (or a rotated secret) the server has issued must reach the store even if
        the visitor is being closed meanwhile; otherwise the next process renews again, or
        worse, a rotated secret is lost. With ``persist=False`` (the store failed) the
        record is kept for :meth:`save_unsaved` instead.
        """
        token: Token | None = None
        with anyio.CancelScope(shield=True) as scope:
            scope.deadline = anyio.current_time() + _AUTH_SHIELD_SECONDS
            token = await self._authenticate_and_save(record, secret, persist=persist)
        if token is None:
            raise TransportTimeoutError(f"auth did not finish within {_AUTH_SHIELD_SECONDS:g} s")
        return token

    async def _authenticate_and_save(
        self, record: VisitorRecord | None, secret: Secret | None, *, persist: bool = True
    ) -> Token:
        issued_at = self._clock.monotonic()
        wall = self._clock.time()
        auth = await self._post_auth(secret)
        if auth.organization_id != self.organization_id:
            raise ProtocolError("auth response: organization_id does not match the request")
        if secret is not None and auth.visitor_secret_id != secret:
            logger.info("the visitor secret was rotated by the server")
        lifetime = normalise_lifetime(
            auth.expires_in, expires_at=auth.expires_at, server_now=wall, policy=self._policy
        )
        expires_wall = wall + lifetime
        if auth.expires_at is not None:
            expires_wall = min(expires_wall, auth.expires_at.timestamp())
        session = OrganizationSession(
            organization_id=auth.organization_id,
            visitor_id=auth.visitor_id,
            socket_url=auth.socket_url,
            access_token=auth.access_token,
            expires_at=expires_wall,
            lifetime=lifetime,
            extra=_bounded_extra(auth.extra, self._limits.stored_extra),
        )
        if record is None or record.visitor_secret_id != auth.visitor_secret_id:
            # A new identity: other organizations' sessions belong to the old secret.
            base = VisitorRecord(
                visitor_secret_id=auth.visitor_secret_id,
                version=record.version if record is not None else 0,
            )
        else:
            base = record
        new_record = base.with_session(session)
        must_persist = secret is None or auth.visitor_secret_id != secret
        try:
            if not persist:
                self._unsaved = new_record
            else:
                await self._save(new_record)
                self._unsaved = None
        except StoreError as exc:
            if must_persist and self._token is None:
                # Starting: without a persisted secret this visitor could never be resumed.
                raise
            # Renewing: the server has issued this token (and maybe rotated the secret);
            # throwing it away would not bring the store back. Use it from memory and
            # keep trying to save it.
            self._unsaved = new_record
            logger.warning(
                "could not save the renewed token (%s); using it from memory, the save is retried",
                type(exc).__name__,
            )
        self._secret = auth.visitor_secret_id
        token = Token(
            access_token=auth.access_token,
            times=TokenTimes(
                issued_at=issued_at,
                lifetime=lifetime,
                jitter=self._jitter,
                spread=self._first_spread(lifetime, age=0.0),
            ),
            session=session,
        )
        self._token = token
        return token

    async def _post_auth(self, secret: Secret | None) -> AuthSession:
        url = self._base_url.join(f"{API_PREFIX}/orgs/{self.organization_id}/auth")
        body = {"visitor_secret_id": secret.reveal() if secret is not None else None}
        with map_http_errors("visitor auth"):
            request = self._client.build_request(
                "POST",
                url,
                json=body,
                headers={"Accept": "application/json", "User-Agent": USER_AGENT},
            )
        response = await send_bounded(
            self._client,
            request,
            auth=None,
            limit=self._limits.auth,
            deadline=self._attempt_timeout,
            what="visitor auth",
        )
        if response.is_success:
            return AuthSession.from_api(decode_json_object(response.content, where="auth response"))
        error = api_error(response, now=self._clock.time())
        if response.is_redirect:
            raise ProtocolError(f"auth: unexpected redirect ({response.status_code}); not followed")
        if secret is not None and response.status_code in _INVALID_SECRET_STATUSES:
            raise InvalidSecretError(
                f"the stored visitor secret was rejected ({response.status_code})",
                status_code=response.status_code,
                body=error.body,
            ) from error
        raise error

    # Restore and adopt -------------------------------------------------------------------

    def _restorable(self, record: VisitorRecord) -> Token | None:
        """A stored token with a safe margin left, for start-up without an auth call."""
        session = record.sessions.get(self.organization_id)
        if session is None:
            return None
        remaining = session.expires_at - self._clock.time()
        margin = self._policy.restore_margin_for(session.lifetime)
        if remaining < margin:
            return None
        return attrs.evolve(self._token_from_stored(session, remaining), restored=True)

    def _adoptable(self, record: VisitorRecord) -> Token | None:
        """A token another process stored after ours, still fresh: use it, skip auth."""
        session = record.sessions.get(self.organization_id)
        current = self._token
        if current is None:
            # Starting while another process authenticated: its stored token will do.
            return self._restorable(record)
        if session is None or session.access_token == current.access_token:
            return None
        remaining = session.expires_at - self._clock.time()
        candidate = self._token_from_stored(session, remaining)
        if candidate.times.needs_renewal(self._clock.monotonic(), self._policy):
            return None
        return candidate

    def _token_from_stored(self, session: OrganizationSession, remaining: float) -> Token:
        lifetime = session.lifetime
        issued_at = self._clock.monotonic() + remaining - lifetime
        return Token(
            access_token=session.access_token,
            times=TokenTimes(
                issued_at=issued_at,
                lifetime=lifetime,
                jitter=self._jitter,
                spread=self._first_spread(lifetime, age=lifetime - remaining),
            ),
            session=session,
        )

    def _first_spread(self, lifetime: float, *, age: float) -> float | None:
        """The wide jitter span for the first token of this session, else ``None``.

        Visitors started together (a restart, a pool filling up) hold tokens issued
        together; spreading their first renewal wide spreads every later one too, so the
        tokens after it keep the narrow jitter (renewed late in their life, fewer renewals).
        """
        if self._token is not None:
            return None
        return self._policy.first_spread(lifetime, age=age)


def _bounded_extra(extra: Mapping[str, Any], limit: int) -> Mapping[str, Any]:
    """The unknown auth fields worth storing: in order, while their JSON fits ``limit``.

    They are kept for the user's curiosity (``minimal_bar_version``...), stored with the
    session and re-read on every load: a server that sends a huge field must not make
    every later load huge. Dropped names are logged, never values.
    """
    kept: dict[str, Any] = {}
    size = 0
    dropped: list[str] = []
    for name, value in extra.items():
        try:
            cost = len(json.dumps({name: value}, separators=(",", ":"), ensure_ascii=False))
        except (TypeError, ValueError, RecursionError):
            cost = limit + 1
        if size + cost > limit:
            dropped.append(name[:40])
            continue
        kept[name] = value
        size += cost
    if dropped:
        logger.info("not storing %d large unknown auth field(s): %s", len(dropped), dropped[:5])
    return MappingProxyType(kept) if dropped else extra


def _store_failure(what: str, error: Exception) -> StoreError:
    """The typed error for what a store of the user's own raised (only its type is shown).

    ``OSError`` (a file system, a socket) and ``sqlite3.OperationalError`` (locked, read
    only) are outages worth waiting out; anything else is a plain :class:`StoreError`.
    """
    message = f"the store failed to {what} ({type(error).__name__})"
    if isinstance(error, OSError | sqlite3.OperationalError):
        return StoreUnavailableError(message)
    return StoreError(message)


def _is_terminal(error: GiosgError) -> bool:
    """A rejected secret or a 4xx (other than 408/429) will not get better by retrying."""
    if isinstance(error, InvalidSecretError):
        return True
    return (
        isinstance(error, APIError)
        and 400 <= error.status_code < 500
        and error.status_code not in (408, 429)
    )


@final
class VisitorAuth(httpx.Auth):
    """``httpx.Auth`` for a visitor: ``Authorization: Bearer <access_token>``.

    Waits for the one renewal when the token is in its last seconds, and answers a 401
    with one renewal (only if the failed token is still the current one) and one retry.
    """

    def __init__(self, session: VisitorSession, *, body_limit: int = 16 << 20) -> None:
        self._session = session
        self._body_limit = body_limit

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        session = self._session
        # The SDK's own background requests (inside `_limiter.background`) go through
        # the pool-wide limit, holding a slot only while on the wire.
        limiter = session.limiter
        deadline = background_deadline() if limiter is not None else None
        token = await self._token(limiter, deadline, stale=None)
        request.headers["Authorization"] = f"Bearer {token.access_token.reveal()}"
        try:
            response = yield request
        finally:
            if limiter is not None and deadline is not None:
                limiter.release()
        if response.status_code != 401:
            return
        # httpx reads a response it retries whole; this read is bounded first.
        await read_body(response, limit=self._body_limit, what="401 response")
        current = session.current
        stale = None if current is not None and current is not token else token
        fresh = await self._token(limiter, deadline, stale=stale)
        request.headers["Authorization"] = f"Bearer {fresh.access_token.reveal()}"
        try:
            yield request
        finally:
            if limiter is not None and deadline is not None:
                limiter.release()

    async def _token(
        self, limiter: DeadlineLimiter | None, deadline: float | None, *, stale: Token | None
    ) -> Token:
        """A token to send (renewing ``stale`` first if given); with a slot held if limited.

        The slot is taken after the token: a renewal takes a slot of its own, and waiting
        for it while holding one could leave every slot waiting. A token that stopped
        being usable while waiting for the slot is given up for a fresh one.
        """
        session = self._session
        while True:
            if stale is not None:
                token = await session.renew(stale=stale)
                stale = None
            else:
                token = await session.token()
            if limiter is None or deadline is None:
                return token
            await limiter.acquire(deadline)
            if session.is_current(token):
                return token
            limiter.release()

    def sync_auth_flow(self, request: httpx.Request) -> Any:
        raise RuntimeError("VisitorAuth works with httpx.AsyncClient only")

    def __repr__(self) -> str:
        return "<VisitorAuth>"


@final
class SocketTokens:
    """The real-time socket's token source over a :class:`VisitorSession`.

    A :class:`~giosg_visitor.realtime.RealtimeConnection` asks it for tokens (see
    :class:`~giosg_visitor.realtime.TokenSource`); every trigger (a scheduled renewal, an
    HTTP 401, a refused ``sub``, an auth close code) renews through the session's one
    single-flight :meth:`VisitorSession.renew`. It remembers the last token it handed
    out, so the visitor's renewal loop can tell whether the socket already holds the
    current one.
    """

    __slots__ = ("_handed_out", "_session")

    def __init__(self, session: VisitorSession) -> None:
        self._session = session
        self._handed_out: Secret | None = None

    def __repr__(self) -> str:
        return "<SocketTokens>"

    @property
    def handed_out(self) -> Secret | None:
        """The token last given to the socket, if any."""
        return self._handed_out

    async def fresh(self) -> Secret:
        """The session's usable token (renewing first, or waiting for the renewal)."""
        token = (await self._session.token()).access_token
        self._handed_out = token
        return token

    async def renew(self) -> None:
        """Renew now (single-flight with any renewal in progress)."""
        session = self._session
        await session.renew(stale=session.current)

    async def refused(self, token: Secret) -> bool:
        """The server refused ``token`` in a ``sub``: renew it, as after an HTTP 401.

        Returns ``False`` (the refusal is final) when the token was issued a moment ago:
        renewing could not help, and the renewal spacing would only delay the answer.
        """
        session = self._session
        current = session.current
        if current is None:
            return False
        if current.access_token != token:
            return True  # renewed meanwhile: try the newer token
        issued = current.times
        age = session._clock.monotonic() - issued.issued_at
        if not current.restored and age < session._policy.spacing(issued.lifetime):
            return False
        logger.info("the server refused the socket token; renewing it")
        renewed = await session.renew(stale=current)
        # A rejected secret may have started a new visitor (on_invalid_secret): the
        # refused channel named the old one, so no token can make it valid again.
        return renewed.session.visitor_id == current.session.visitor_id

    def is_fresh(self, token: Secret) -> bool:
        """Never final at once: :meth:`refused` judges, knowing when tokens were issued."""
        return False
