"""Visitors against FakeGiosg over real sockets (both backends)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import anyio
import pytest

from giosg_visitor import (
    InvalidSecretError,
    MemoryStore,
    ProtocolError,
    RenewalPolicy,
    ServerError,
    SessionState,
    Timeouts,
    UntrustedEndpointError,
    Visitor,
)
from giosg_visitor._lifecycle import AsyncResource
from giosg_visitor.testing import FakeGiosg

from .._helpers import FAST_RETRY, ORG_ID, OTHER_ORG_ID, forget_stored_token, get_chats


async def test_new_then_returning_visitor(giosg: FakeGiosg) -> None:
    """A new visitor gets an id; a returning one posts the stored secret and keeps it."""
    store = MemoryStore()
    async with Visitor(ORG_ID, base_url=giosg.base_url, store=store) as visitor:
        first_id = visitor.visitor_id
        assert len(first_id) == 32
        assert visitor.state is SessionState.AUTHENTICATED
        assert visitor.socket_url == giosg.socket_url
        assert (await get_chats(giosg, visitor)).status_code == 200
    record = await store.load("default")
    assert record is not None
    assert record.visitor_secret_id is not None
    assert record.sessions[ORG_ID].visitor_id == first_id
    await giosg.expire_tokens()
    await forget_stored_token(store)
    async with Visitor(ORG_ID, base_url=giosg.base_url, store=store) as returning:
        assert returning.visitor_id == first_id
        assert (await get_chats(giosg, returning)).status_code == 200
    assert [r.sent_secret for r in giosg.auth_requests] == [False, True]


async def test_keys_map_to_distinct_visitors(giosg: FakeGiosg) -> None:
    """Two keys in one store are two visitors; the same key is the same visitor."""
    store = MemoryStore()
    ids = []
    for key in ("alice", "bob", "alice"):
        async with Visitor(ORG_ID, base_url=giosg.base_url, store=store, key=key) as visitor:
            ids.append(visitor.visitor_id)
    assert ids[0] == ids[2] != ids[1]


async def test_for_organization_reuses_the_secret(giosg: FakeGiosg) -> None:
    """The same visitor in another organization posts the same secret."""
    store = MemoryStore()
    async with (
        Visitor(ORG_ID, base_url=giosg.base_url, store=store) as visitor,
        visitor.for_organization(OTHER_ORG_ID) as other,
    ):
        assert other.organization_id == OTHER_ORG_ID
        assert other.visitor_id != visitor.visitor_id
    record = await store.load("default")
    assert record is not None
    assert set(record.sessions) == {ORG_ID, OTHER_ORG_ID}
    assert [r.sent_secret for r in giosg.auth_requests] == [False, True]


@pytest.mark.parametrize("kind", ["file", "sqlite"])
async def test_second_process_resumes_the_same_visitor(kind: str, tmp_path: Path) -> None:
    """Another process sharing the store resumes the visitor by posting the stored secret."""
    path = str(tmp_path / ("visitor.json" if kind == "file" else "visitors.db"))
    async with FakeGiosg(token_lifetime=2) as giosg:
        ids = []
        for _ in range(2):
            result = await anyio.run_process(
                [
                    sys.executable,
                    "-m",
                    "tests._resume_child",
                    giosg.base_url,
                    ORG_ID,
                    kind,
                    path,
                    "u1",
                ],
                cwd=Path(__file__).parent.parent.parent,
            )
            ids.append(json.loads(result.stdout)["visitor_id"])
            await anyio.sleep(1.2)  # let the stored 2 s token lose its restore margin
        assert ids[0] == ids[1]
        assert [r.sent_secret for r in giosg.auth_requests] == [False, True]


async def test_renewal_over_real_sockets(giosg: FakeGiosg) -> None:
    """With 2 s tokens, traffic for 5 s renews in the background and never sends an expired one."""
    giosg.token_lifetime = 2
    async with Visitor(ORG_ID, base_url=giosg.base_url) as visitor:
        with anyio.move_on_after(5):
            while True:
                assert (await get_chats(giosg, visitor)).status_code == 200
                await anyio.sleep(0.05)
    assert giosg.expired_token_requests == []
    assert len(giosg.auth_requests) >= 4


class TestAuthFaults:
    """Auth faults are retried, then surface as typed errors."""

    async def test_connection_reset_is_retried(self, giosg: FakeGiosg) -> None:
        """A reset mid-response is a transient failure: retried, then success."""
        giosg.inject(endpoint="auth", reset=True, times=2)
        async with Visitor(ORG_ID, base_url=giosg.base_url, retry=FAST_RETRY) as visitor:
            assert visitor.state is SessionState.AUTHENTICATED
        assert len(giosg.auth_requests) == 3

    async def test_latency_beyond_the_read_timeout_is_retried(self, giosg: FakeGiosg) -> None:
        """A stalled auth response times out and is retried."""
        giosg.inject(endpoint="auth", latency=1.0)
        timeouts = Timeouts(read=0.2)
        async with Visitor(
            ORG_ID, base_url=giosg.base_url, retry=FAST_RETRY, timeouts=timeouts
        ) as visitor:
            assert visitor.state is SessionState.AUTHENTICATED

    async def test_persistent_5xx_surfaces_as_server_error(self, giosg: FakeGiosg) -> None:
        """After its attempts, start-up raises the typed ServerError with status and body."""
        giosg.inject(endpoint="auth", status=503, times=100)
        with pytest.raises(ServerError) as info:
            async with Visitor(ORG_ID, base_url=giosg.base_url, retry=FAST_RETRY):
                pass
        assert info.value.status_code == 503
        assert info.value.detail == "Injected fault (503)."
        assert len(giosg.auth_requests) == FAST_RETRY.max_attempts

    async def test_unreachable_server_is_a_transport_error(self) -> None:
        """Nothing listening gives a typed TransportError, not an httpx exception."""
        from giosg_visitor import TransportError

        with pytest.raises(TransportError):
            async with Visitor(ORG_ID, base_url="http://127.0.0.1:9", retry=FAST_RETRY):
                pass


class TestInvalidSecret:
    """An unknown or revoked secret is a typed error, or (opt-in) a new visitor."""

    async def test_revoked_secret_raises(self, giosg: FakeGiosg) -> None:
        """The default policy raises InvalidSecretError and keeps the stored record."""
        store = MemoryStore()
        async with Visitor(ORG_ID, base_url=giosg.base_url, store=store) as visitor:
            old_id = visitor.visitor_id
        await giosg.revoke_visitor(old_id)
        before = await forget_stored_token(store)
        with pytest.raises(InvalidSecretError) as info:
            async with Visitor(ORG_ID, base_url=giosg.base_url, store=store):
                pass
        assert info.value.status_code == 400
        after = await store.load("default")
        assert after is not None
        assert after.visitor_secret_id == before.visitor_secret_id

    async def test_new_visitor_opt_in_reports_the_identity_change(self, giosg: FakeGiosg) -> None:
        """With on_invalid_secret="new_visitor" a new visitor starts and the change is reported."""
        store = MemoryStore()
        async with Visitor(ORG_ID, base_url=giosg.base_url, store=store) as visitor:
            old_id = visitor.visitor_id
        await giosg.revoke_visitor(old_id)
        record = await forget_stored_token(store)
        async with Visitor(
            ORG_ID, base_url=giosg.base_url, store=store, on_invalid_secret="new_visitor"
        ) as fresh:
            assert fresh.visitor_id != old_id
            change = fresh.identity_change
            assert change is not None
            assert (change.new_visitor_id, change.old_visitor_id) == (fresh.visitor_id, None)
        stored = await store.load("default")
        assert stored is not None
        assert stored.visitor_secret_id != record.visitor_secret_id
        assert stored.sessions[ORG_ID].visitor_id == fresh.visitor_id


class TestBadAuthResponses:
    """Malformed auth responses give ProtocolError naming the problem; nothing is overwritten."""

    @pytest.mark.parametrize(
        ("hook", "message"),
        [
            pytest.param(
                lambda p: {k: v for k, v in p.items() if k != "access_token"},
                "access_token",
                id="missing-field",
            ),
            pytest.param(lambda p: {**p, "visitor_id": 42}, "visitor_id", id="wrong-type"),
            pytest.param(lambda p: b"{not json", "not valid JSON", id="invalid-json"),
            pytest.param(lambda p: b"[1, 2]", "expected a JSON object", id="not-an-object"),
            pytest.param(lambda p: {**p, "expires_at": "yesterday"}, "expires_at", id="bad-date"),
        ],
    )
    async def test_bad_response_is_typed_and_harmless(
        self, giosg: FakeGiosg, hook: object, message: str
    ) -> None:
        """The error names the field; the stored record is untouched."""
        store = MemoryStore()
        async with Visitor(ORG_ID, base_url=giosg.base_url, store=store):
            pass
        await giosg.expire_tokens()
        await forget_stored_token(store)
        stripped = await store.load("default")
        giosg.state.auth_response_hook = hook  # type: ignore[assignment]
        with pytest.raises(ProtocolError, match=message):
            async with Visitor(ORG_ID, base_url=giosg.base_url, store=store, retry=FAST_RETRY):
                pass
        assert await store.load("default") == stripped

    @pytest.mark.parametrize(
        "expires_in",
        [None, 0, -5, "soon", 10**9],
        ids=["missing", "zero", "negative", "text", "huge"],
    )
    async def test_odd_expires_in_is_normalised(self, giosg: FakeGiosg, expires_in: object) -> None:
        """Odd expires_in values never crash and never cause a renew loop."""

        def hook(payload: dict[str, object]) -> dict[str, object]:
            payload = dict(payload)
            if expires_in is None:
                payload.pop("expires_in")
            else:
                payload["expires_in"] = expires_in
            return payload

        giosg.state.auth_response_hook = hook
        async with Visitor(ORG_ID, base_url=giosg.base_url) as visitor:
            await anyio.sleep(1.5)
            assert visitor.state in (SessionState.AUTHENTICATED, SessionState.RENEWING)
        # Spacing bounds renewals even when every token claims to be already expired:
        # at worst one per soft offset of the shortest lifetime believed, plus the start.
        policy = RenewalPolicy()
        worst = 1 + math.ceil(1.5 / policy.soft_offset(policy.min_lifetime, 1.0))
        assert len(giosg.auth_requests) <= worst + 1


class TestTrust:
    """Credentials only travel over https (plain http only to loopback)."""

    @pytest.mark.parametrize(
        "url",
        [
            "http://service.giosg.com",
            "ftp://service.giosg.com",
            "https://user:pw@service.giosg.com",
        ],
    )
    def test_untrusted_base_url_is_refused_before_io(self, url: str) -> None:
        """The constructor refuses an http origin, another scheme, or userinfo."""
        with pytest.raises(UntrustedEndpointError):
            Visitor(ORG_ID, base_url=url)

    async def test_redirects_are_not_followed(self, giosg: FakeGiosg) -> None:
        """A 3xx from auth is not followed (the secret would travel to the target)."""
        giosg.inject(endpoint="auth", status=307, times=100)
        with pytest.raises(ProtocolError, match="redirect"):
            async with Visitor(ORG_ID, base_url=giosg.base_url, retry=FAST_RETRY):
                pass
        assert len(giosg.auth_requests) == 1


async def test_a_failed_start_leaves_a_closed_visitor(giosg: FakeGiosg) -> None:
    """The SDK's one lifecycle: a start that fails has released everything; aclose() is
    then a no-op (twice too) and entering again raises."""
    giosg.inject(endpoint="auth", status=307)
    visitor = Visitor(ORG_ID, base_url=giosg.base_url, retry=FAST_RETRY)
    assert isinstance(visitor, AsyncResource)
    with pytest.raises(ProtocolError):
        async with visitor:
            pass
    assert visitor.state is SessionState.CLOSED
    await visitor.aclose()
    await visitor.aclose()
    with pytest.raises(RuntimeError, match="only once"):
        async with visitor:
            pass
    with pytest.raises(RuntimeError, match="only once"):
        await visitor.start()


async def test_lifecycle_misuse(giosg: FakeGiosg) -> None:
    """Entering twice raises RuntimeError; aclose is idempotent; properties need a start."""
    visitor = Visitor(ORG_ID, base_url=giosg.base_url)
    with pytest.raises(RuntimeError):
        _ = visitor.visitor_id
    async with visitor:
        pass
    await visitor.aclose()
    assert visitor.state is SessionState.CLOSED
    with pytest.raises(RuntimeError):
        async with visitor:
            pass
