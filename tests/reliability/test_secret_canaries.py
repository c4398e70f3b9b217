"""No secret in any log line (every logger at DEBUG), repr, exception or warning.

The sentinel (``canary.py``) runs around every test of this suite; the tests here drive
the paths most likely to leak and hand the SDK's objects to it, plus the unit check of
every public type that holds a secret.
"""

from __future__ import annotations

import logging
import pickle
import time
from collections.abc import Callable

import anyio
import httpx
import pytest

from giosg_visitor import (
    AuthenticationError,
    AuthSession,
    BearerAuth,
    ClientCredentials,
    ConnectionClosedError,
    InvalidSecretError,
    MemoryStore,
    PermissionDeniedError,
    ProtocolError,
    Secret,
    TokenAuth,
    Visitor,
)
from giosg_visitor.realtime import (
    Disconnected,
    RealtimeProtocol,
    ReconnectPolicy,
)
from giosg_visitor.stores import OrganizationSession, StoredToken, VisitorRecord
from giosg_visitor.testing import FakeGiosg, MessageRouter

from .._helpers import FAST_RETRY, ORG_ID, get_chats
from .._router_harness import RouterHarness
from ._support import virtual_fake
from .canary import Sentinel, find_leaks, render_exception
from .test_realtime_resilience import ROOM_ID, _connection, _subscribed, _Tokens, next_event


def _session(token: str) -> OrganizationSession:
    return OrganizationSession(
        organization_id=ORG_ID,
        visitor_id="8a60b202474547dbb8ce19737e4c166f",
        socket_url="https://messagerouter.giosg.com/003/2/router",
        access_token=Secret(token),
        expires_at=1.0,
        lifetime=2.0,
    )


def _holders(canary: Callable[[str], str]) -> list[tuple[str, object]]:
    """One instance of every public type that holds a secret."""
    secret, token, client_secret, refresh = (canary(x) for x in ("s", "t", "cs", "rt"))
    auth = AuthSession.from_api(
        {
            "visitor_id": "8a60b202474547dbb8ce19737e4c166f",
            "visitor_secret_id": secret,
            "organization_id": ORG_ID,
            "socket_url": "https://messagerouter.giosg.com/003/2/router",
            "access_token": token,
            "expires_in": 1800,
        }
    )
    stored = StoredToken(
        access_token=Secret(token), refresh_token=Secret(refresh), expires_at=1.0, lifetime=2.0
    )
    record = VisitorRecord(
        visitor_secret_id=Secret(secret),
        sessions={ORG_ID: _session(token)},
        tokens={"oauth": stored},
        version=3,
    )
    return [
        ("Secret", Secret(secret)),
        ("AuthSession", auth),
        ("OrganizationSession", _session(token)),
        ("StoredToken", stored),
        ("VisitorRecord", record),
        ("TokenAuth", TokenAuth(token)),
        ("BearerAuth", BearerAuth(token)),
        (
            "ClientCredentials",
            ClientCredentials("https://auth.example.com/token", "client-id", client_secret),
        ),
    ]


def test_every_public_type_holding_a_secret_hides_it(secret_sentinel: Sentinel) -> None:
    """Repr, str, format, f-strings and pickle of each secret holder reveal nothing."""
    texts: list[tuple[str, str]] = []
    for name, holder in _holders(secret_sentinel.canary):
        texts += [(name, repr(holder)), (name, str(holder)), (name, f"{holder!r:>40}")]
        texts.append((name, format(holder, "")))
        try:
            pickled = pickle.dumps(holder)
        except (TypeError, pickle.PicklingError, AttributeError) as exc:
            texts.append((f"{name} pickle error", render_exception(exc)))
        else:
            texts.append((f"{name} pickle", repr(pickled)))
    assert find_leaks(texts, secret_sentinel.values) == []


def test_the_realtime_protocol_does_not_pickle_queued_tokens(secret_sentinel: Sentinel) -> None:
    """A protocol with a queued ``sub`` refuses pickling (the frame holds the token)."""
    token = secret_sentinel.canary("socket-token")
    protocol = RealtimeProtocol()
    protocol.send_subscribe(["/api/v5/public/visitors/x/chats"], token)
    texts = [("repr", repr(protocol)), ("str", str(protocol))]
    try:
        texts.append(("pickle", repr(pickle.dumps(protocol))))
    except TypeError as exc:
        texts.append(("pickle error", render_exception(exc)))
    assert find_leaks(texts, {token}) == []


async def test_a_whole_life_at_debug_leaks_nothing(secret_sentinel: Sentinel) -> None:
    """Auth, renewals, a socket with re-authorisation and drops, chats, 401s, bad
    bodies and a revoked secret, with every logger at DEBUG: no secret anywhere."""
    store = MemoryStore()
    async with FakeGiosg(token_lifetime=2) as giosg:
        async with Visitor(
            ORG_ID,
            base_url=giosg.base_url,
            store=store,
            retry=FAST_RETRY,
            reconnect=ReconnectPolicy(first_delay=0.1, max_delay=0.3),
        ) as visitor:
            operator = await giosg.operator_online(ROOM_ID)
            chat = await visitor.start_chat(ROOM_ID)
            await chat.send("hello")
            async with chat.messages() as stream:
                await giosg.operator_says(chat.id, operator, "hi")
                with anyio.fail_after(10):
                    while (await anext(stream)).message != "hi":
                        pass
                await anyio.sleep(1.6)  # a background renewal and socket re-authorisation
                await giosg.drop_sockets("close", code=1011)
                await giosg.operator_says(chat.id, operator, "again")
                with anyio.fail_after(10):
                    while (await anext(stream)).message != "again":
                        pass
            await giosg.expire_tokens()
            await anyio.sleep(0.6)  # past the renewal spacing: the 401 path
            assert (await get_chats(giosg, visitor)).status_code == 200
            secret_sentinel.scan(visitor, chat, visitor.auth, visitor.realtime, store)
            record = await store.load("default")
            assert record is not None
            secret_sentinel.scan(record, *record.sessions.values())
            visitor_id = visitor.visitor_id

        giosg.state.auth_response_hook = lambda payload: {**payload, "visitor_id": 5}
        await giosg.expire_tokens()
        await store.save("default", VisitorRecord(visitor_secret_id=record.visitor_secret_id))
        with pytest.raises(ProtocolError) as bad:
            async with Visitor(ORG_ID, base_url=giosg.base_url, store=store, retry=FAST_RETRY):
                pass
        giosg.state.auth_response_hook = None
        await giosg.revoke_visitor(visitor_id)
        with pytest.raises(InvalidSecretError) as revoked:
            async with Visitor(ORG_ID, base_url=giosg.base_url, store=store, retry=FAST_RETRY):
                pass
        secret_sentinel.scan(bad.value, revoked.value)
    names = {where for where, _ in secret_sentinel.texts}
    # The sentinel really saw the verbose loggers.
    for logger in ("httpx", "httpcore", "giosg_visitor.websockets", "giosg_visitor.realtime"):
        assert any(name.startswith(f"log {logger}") for name in names), logger
    assert len(secret_sentinel.secret_values()) >= 4


async def test_a_secret_echoed_in_an_error_body_stays_out_of_the_exception(
    secret_sentinel: Sentinel,
) -> None:
    """DRF echoes rejected values; the typed error must not carry them."""
    async with virtual_fake() as world:
        store = MemoryStore()
        async with world.visitor(store=store) as visitor:
            record = await store.load("default")
            assert record is not None
            assert record.visitor_secret_id is not None
            secret = record.visitor_secret_id.reveal()
            token = next(iter(world.giosg.state.tokens))
            world.giosg.inject(endpoint="api", status=403, body={"detail": f"Token {token} no."})
            with pytest.raises(PermissionDeniedError) as denied:
                await visitor.chat("58f5055c-56e0-11e5-9354-6c4008c08dfe")
            await world.clock.advance(10)
            world.giosg.inject(
                endpoint="auth",
                status=400,
                body={"visitor_secret_id": [f'Invalid pk "{secret}" - object does not exist.']},
            )
            with pytest.raises(InvalidSecretError) as rejected:
                await visitor.renew()
    texts = [("403", render_exception(denied.value)), ("400", render_exception(rejected.value))]
    assert find_leaks(texts, {secret, token}) == []


async def test_a_token_echoed_in_a_close_reason_stays_out_of_the_error(
    secret_sentinel: Sentinel,
) -> None:
    """A server that echoes the token in its close reason: the raised error hides it."""
    with RouterHarness(MessageRouter()) as harness:
        tokens = _Tokens(secret_sentinel)
        conn = _connection(harness, tokens, reconnect=ReconnectPolicy(first_delay=0.05))
        async with conn, conn.events() as events:
            for _ in range(3):  # three protocol errors in a row fail the connection
                await _subscribed(conn)
                echoed = f"bad token {tokens.issued[-1].reveal()}"
                harness.call(harness.router.drop_all, "close", code=1002, reason=echoed)
                await next_event(events, Disconnected)
            with anyio.fail_after(5), pytest.raises(ConnectionClosedError) as info:
                await conn.wait_connected()
    texts = [("error", render_exception(info.value))]
    assert find_leaks(texts, {t.reveal() for t in tokens.issued}) == []


async def test_static_and_oauth_credentials_stay_out_of_logs(secret_sentinel: Sentinel) -> None:
    """TokenAuth and BearerAuth rejected with 401, at DEBUG: no token anywhere."""
    token = secret_sentinel.canary("api-token")

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401, json={"detail": "Invalid token."})

    for auth in (TokenAuth(token), BearerAuth(token)):
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler), auth=auth) as client:
            with pytest.raises(AuthenticationError) as info:
                await client.get("https://api.giosg.com/api/v5/users")
            secret_sentinel.scan(auth, client.headers, info.value)


def test_redacting_a_debug_line_stays_cheap_with_many_live_secrets() -> None:
    """A DEBUG socket line costs about the same with 1,000 visitors' secrets alive as with 10.

    Timed against itself in the same run (the best of several rounds each), so a loaded
    machine slows both sides alike; a scan per live secret makes the second side ~100x.
    """
    logger = logging.getLogger("giosg_visitor.websockets")
    seen: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())  # type: ignore[method-assign]

    def per_line() -> float:
        best = float("inf")
        for _ in range(7):
            started = time.perf_counter()
            for _ in range(200):
                logger.debug("< TEXT %s [%d bytes]", '["changed",["/api/v5/x",{}]]', 30)
            best = min(best, (time.perf_counter() - started) / 200)
        return best

    # The line must really be formatted and filtered: the logger is quiet by default.
    level, propagate = logger.level, logger.propagate
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    logger.addHandler(handler)
    try:
        few = [Secret(f"few-secret-{i:032d}") for i in range(10)]
        with_few = per_line()
        many = [Secret(f"live-secret-{i:032d}") for i in range(1000)]
        with_many = per_line()
        logger.debug("> TEXT %s", many[-1].reveal())
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate
    assert len(few) + len(many) == 1010  # all alive while timed
    assert len(seen) == 2 * 7 * 200 + 1
    assert seen[-1] == "> TEXT ***"  # the filter ran, with the 1,010 secrets live
    # 20 us of slack: the first side can be a few microseconds, where a scheduler blip counts.
    assert with_many < 4 * with_few + 20e-6, (
        f"{with_many * 1e6:.1f} us per DEBUG line with 1,010 live secrets, "
        f"{with_few * 1e6:.1f} us with 10"
    )
