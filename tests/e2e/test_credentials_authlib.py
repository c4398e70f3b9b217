"""ClientCredentials end to end, over real sockets, against authlib's OAuth2 server.

The token endpoint and the protected resource are ``tests/_oauth_server.py``: authlib's
``AuthorizationServer`` (client credentials and rotating refresh token grants) and
``ResourceProtector``, served by uvicorn on 127.0.0.1 in a background thread. Tests that
need expiry share a ``FakeClock`` with the server, so hours pass in milliseconds.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import pytest

from giosg_visitor._oauth import basic_authorization
from giosg_visitor._renewal import RenewalPolicy
from giosg_visitor.credentials import TOKEN_NAME, ClientCredentials
from giosg_visitor.errors import InvalidClientError, InvalidScopeError
from giosg_visitor.stores import MemoryStore
from giosg_visitor.testing import FakeClock, secret_forms

from .._oauth_server import OAuthServer


CLIENT_ID = "e2e-client"
CLIENT_SECRET = "CANARY-e2e-secret-a41f"
POLICY = RenewalPolicy()
METHODS = {
    "basic": "client_secret_basic",
    "body": "client_secret_post",
    "query": "client_secret_query",
}


@pytest.fixture(scope="module")
def oauth_server() -> Iterator[OAuthServer]:
    with OAuthServer() as server:
        yield server


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def server(oauth_server: OAuthServer, clock: FakeClock) -> OAuthServer:
    """The shared server, reset, on this test's virtual wall clock."""
    oauth_server.reset(now=clock.time)
    oauth_server.add_client(CLIENT_ID, CLIENT_SECRET)
    return oauth_server


@asynccontextmanager
async def resource_client(
    server: OAuthServer, clock: FakeClock, **kwargs: Any
) -> AsyncIterator[tuple[ClientCredentials, httpx.AsyncClient]]:
    """ClientCredentials for the server (its own token client) and an API client using it."""
    kwargs.setdefault("rng", lambda: 0.5)
    credentials = ClientCredentials(
        server.token_url,
        kwargs.pop("client_id", CLIENT_ID),
        kwargs.pop("client_secret", CLIENT_SECRET),
        clock=clock,
        **kwargs,
    )
    async with credentials, httpx.AsyncClient(auth=credentials) as api:
        yield credentials, api


def statuses(server: OAuthServer) -> list[tuple[str | None, int]]:
    """(grant_type, status) of every token request so far."""
    return [(r.grant_type, r.status) for r in server.records()]


@pytest.mark.parametrize("auth_method", ["basic", "body", "query"])
async def test_placements(server: OAuthServer, clock: FakeClock, auth_method: Any) -> None:
    """Each credential placement authenticates with authlib and the token opens the resource."""
    async with resource_client(
        server, clock, auth_method=auth_method, allow_credentials_in_query=True
    ) as (_, api):
        response = await api.get(server.resource_url)
    assert response.status_code == 200
    assert response.json()["client_id"] == CLIENT_ID
    (record,) = server.records()
    assert record.auth_method == METHODS[auth_method]
    assert record.status == 200
    if auth_method == "query":
        assert {"client_id", "client_secret"} <= record.query_keys
    else:
        assert "client_secret" not in record.query_keys


async def test_grant_type_in_query(server: OAuthServer, clock: FakeClock) -> None:
    """grant_type in the query, empty body, Basic header: authlib accepts the shape."""
    async with resource_client(server, clock, grant_type_in_query=True) as (_, api):
        assert (await api.get(server.resource_url)).status_code == 200
    (record,) = server.records()
    assert record.query_keys == {"grant_type"}
    assert record.body_empty
    assert record.auth_method == "client_secret_basic"


@pytest.mark.parametrize("auth_method", ["basic", "body", "query"])
async def test_special_characters(server: OAuthServer, clock: FakeClock, auth_method: Any) -> None:
    """Ids and secrets with ':', '%', '+', spaces and non-ASCII reach authlib exactly."""
    client_id, client_secret = "bot:ïd %41+1 ✓", "CANARY s€cret:%2B+ with spaces 🔑"
    server.add_client(client_id, client_secret)
    async with resource_client(
        server,
        clock,
        client_id=client_id,
        client_secret=client_secret,
        auth_method=auth_method,
        allow_credentials_in_query=True,
    ) as (_, api):
        response = await api.get(server.resource_url)
    assert response.status_code == 200
    assert response.json()["client_id"] == client_id


async def test_scope(server: OAuthServer, clock: FakeClock) -> None:
    """The requested scope is granted and enforced by the resource."""
    async with resource_client(server, clock, scope="read") as (_, api):
        assert (await api.get(server.resource_url, params={"scope": "read"})).status_code == 200
        denied = await api.get(server.resource_url, params={"scope": "write"})
    assert denied.status_code == 403
    assert denied.json()["error"] == "insufficient_scope"
    assert [r.scope for r in server.records()] == ["read"]


async def test_invalid_scope(server: OAuthServer, clock: FakeClock) -> None:
    """An unknown scope is InvalidScopeError after one token request."""
    async with resource_client(server, clock, scope="admin") as (_, api):
        with pytest.raises(InvalidScopeError):
            await api.get(server.resource_url)
    assert statuses(server) == [("client_credentials", 400)]


@pytest.mark.parametrize("auth_method", ["basic", "body", "query"])
async def test_wrong_secret(server: OAuthServer, clock: FakeClock, auth_method: Any) -> None:
    """A wrong secret is InvalidClientError after exactly one token request."""
    async with resource_client(
        server,
        clock,
        client_secret="CANARY-wrong-secret",
        auth_method=auth_method,
        allow_credentials_in_query=True,
    ) as (_, api):
        with pytest.raises(InvalidClientError) as info:
            await api.get(server.resource_url)
    assert info.value.error == "invalid_client"
    assert len(server.records()) == 1
    assert "CANARY" not in str(info.value)


@pytest.mark.parametrize("auth_method", ["basic", "body"])
async def test_refresh_rotation(server: OAuthServer, clock: FakeClock, auth_method: Any) -> None:
    """Renewals use the rotating refresh grant; each rotated token is used and persisted."""
    store = MemoryStore()
    server.expires_in = 600
    soft = POLICY.soft_offset(600, 0.5)
    async with resource_client(
        server, clock, auth_method=auth_method, store=store, store_key="bot"
    ) as (_, api):
        for _ in range(4):
            assert (await api.get(server.resource_url)).status_code == 200
            await clock.advance(soft + 1)
        assert (await api.get(server.resource_url)).status_code == 200
    assert statuses(server) == [("client_credentials", 200)] + [("refresh_token", 200)] * 4
    assert {r.auth_method for r in server.records()} == {METHODS[auth_method]}
    assert set(server.resource_statuses) == {200}
    record = await store.load("bot")
    assert record is not None
    stored = record.tokens[TOKEN_NAME].refresh_token
    assert stored is not None
    assert stored.reveal() == server.tokens[-1].refresh_token
    assert [t.refresh_revoked for t in server.tokens] == [True] * 4 + [False]


async def test_fallback_on_invalid_grant(server: OAuthServer, clock: FakeClock) -> None:
    """A revoked refresh token gets invalid_grant; the client credentials grant takes over."""
    server.expires_in = 600
    async with resource_client(server, clock) as (_, api):
        assert (await api.get(server.resource_url)).status_code == 200
        server.revoke_refresh_tokens()
        await clock.advance(POLICY.soft_offset(600, 0.5) + 1)
        assert (await api.get(server.resource_url)).status_code == 200
        await clock.advance(POLICY.soft_offset(600, 0.5) + 1)
        assert (await api.get(server.resource_url)).status_code == 200
    assert statuses(server) == [
        ("client_credentials", 200),
        ("refresh_token", 400),
        ("client_credentials", 200),
        ("refresh_token", 200),
    ]
    assert server.records()[1].error == "invalid_grant"


async def test_renews_at_expiry(server: OAuthServer, clock: FakeClock) -> None:
    """Short-lived tokens: every resource call over ten lifetimes carries a valid token."""
    server.expires_in = 60
    server.issue_refresh_tokens = False
    async with resource_client(server, clock) as (_, api):
        for _ in range(60):
            assert (await api.get(server.resource_url)).status_code == 200
            await clock.advance(10)
        await clock.advance(3600)  # idle past expiry
        assert (await api.get(server.resource_url)).status_code == 200
    # authlib answers an expired token with 401: there was none.
    assert set(server.resource_statuses) == {200}
    assert {grant for grant, _ in statuses(server)} == {"client_credentials"}
    assert len(server.records()) <= 600 / POLICY.soft_offset(60, 0.5) + 2


async def test_revoked_token_renews_once(server: OAuthServer, clock: FakeClock) -> None:
    """A token revoked server-side: the 401 causes one renewal and one retry."""
    async with resource_client(server, clock) as (_, api):
        await api.get(server.resource_url)
        server.revoke_access_tokens()
        assert (await api.get(server.resource_url)).status_code == 200
    assert server.resource_statuses == [200, 401, 200]
    assert statuses(server) == [("client_credentials", 200), ("refresh_token", 200)]


async def test_transient_failure_retried(server: OAuthServer, clock: FakeClock) -> None:
    """A 503 from the token endpoint is retried; the next attempt succeeds."""
    server.fail_next(503, {"error": "temporarily_unavailable"})
    # A zero draw makes the full-jitter backoff zero: no virtual time to move.
    async with resource_client(server, clock, rng=lambda: 0.0) as (credentials, _):
        await credentials.access_token()
    assert statuses(server) == [("client_credentials", 503), ("client_credentials", 200)]


async def test_single_flight(server: OAuthServer, clock: FakeClock) -> None:
    """1,000 concurrent resource calls over real sockets: one token request."""
    limits = httpx.Limits(max_connections=50)
    results: list[int] = []
    async with (
        resource_client(server, clock) as (credentials, _),
        httpx.AsyncClient(auth=credentials, limits=limits, timeout=60) as api,
    ):

        async def call() -> None:
            results.append((await api.get(server.resource_url)).status_code)

        async with anyio.create_task_group() as tg:
            for _ in range(1000):
                tg.start_soon(call)
    assert results == [200] * 1000
    assert len(server.records()) == 1


async def test_log_canary(
    server: OAuthServer, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """With httpx, httpcore and the SDK at DEBUG, no secret is logged in any placement."""
    caplog.set_level(logging.DEBUG)
    server.expires_in = 600
    for auth_method in ("basic", "body", "query"):
        async with resource_client(
            server, clock, auth_method=auth_method, allow_credentials_in_query=True
        ) as (_, api):
            await api.get(server.resource_url)
            await clock.advance(POLICY.soft_offset(600, 0.5) + 1)
            await api.get(server.resource_url)  # refresh grant
            server.revoke_access_tokens()
            await api.get(server.resource_url)  # 401, renewal, retry
    # The server's own logs (authlib logs issued tokens at DEBUG) are not the SDK's.
    records = [r for r in caplog.records if not r.name.startswith(("authlib", "uvicorn"))]
    assert {"httpx", "httpcore.http11", "giosg_visitor.credentials"} <= {r.name for r in records}
    text = "\n".join(r.getMessage() for r in records)
    forms = secret_forms(CLIENT_SECRET)
    basic = basic_authorization(CLIENT_ID, CLIENT_SECRET)
    forms |= {basic, basic.split()[1]}
    for token in server.tokens:
        forms |= secret_forms(token.access_token)
        if token.refresh_token:
            forms |= secret_forms(token.refresh_token)
    assert len(server.tokens) == 9
    assert [form for form in forms if form in text] == []
