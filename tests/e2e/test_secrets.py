"""Secret canaries: no visitor secret or token in any log record, repr or exception."""

from __future__ import annotations

import gc
import logging
import pickle
import traceback
from collections.abc import Iterator

import anyio
import pytest
from hypothesis import given, settings, strategies as st

from giosg_visitor import (
    AuthSession,
    InvalidSecretError,
    MemoryStore,
    ProtocolError,
    Secret,
    Visitor,
)
from giosg_visitor._redact import redact
from giosg_visitor.testing import FakeGiosg, secret_forms

from .._helpers import FAST_RETRY, ORG_ID, forget_stored_token, get_chats


LOGGERS = ["", "giosg_visitor", "httpx", "httpcore", "websockets", "anyio"]


@pytest.fixture
def debug_logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Every relevant logger at DEBUG, captured."""
    previous = {name: logging.getLogger(name).level for name in LOGGERS}
    for name in LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG)
    caplog.set_level(logging.DEBUG)
    try:
        yield caplog
    finally:
        for name, level in previous.items():
            logging.getLogger(name).setLevel(level)


def _rendered(record: logging.LogRecord) -> str:
    text = record.getMessage()
    if record.exc_info:
        text += "".join(traceback.format_exception(*record.exc_info))
    return text


def _assert_clean(texts: list[str], secrets: set[str]) -> None:
    forms = set().union(*(secret_forms(s) for s in secrets)) if secrets else set()
    for text in texts:
        for form in forms:
            assert form not in text, "a secret leaked"


async def test_no_secret_in_logs_reprs_or_errors(
    giosg: FakeGiosg, debug_logs: pytest.LogCaptureFixture
) -> None:
    """A full life (start, calls, renewals, 401, revocation, bad bodies) leaks nothing."""
    giosg.token_lifetime = 2
    store = MemoryStore()
    texts: list[str] = []
    async with Visitor(ORG_ID, base_url=giosg.base_url, store=store, retry=FAST_RETRY) as visitor:
        assert (await get_chats(giosg, visitor)).status_code == 200
        await anyio.sleep(1.5)  # a background renewal
        await giosg.expire_tokens()
        await anyio.sleep(0.6)  # past the minimum spacing, then the 401 path
        assert (await get_chats(giosg, visitor)).status_code == 200
        texts += [repr(visitor), str(visitor), repr(visitor.auth), repr(store)]
        record = await store.load("default")
        assert record is not None
        texts += [repr(record), str(record), repr(record.sessions), f"{record.visitor_secret_id}"]
        texts += [repr(visitor.http_client.headers)]
        vid = visitor.visitor_id

    giosg.state.auth_response_hook = lambda p: {**p, "visitor_id": 5}
    await giosg.expire_tokens()
    await forget_stored_token(store)
    with pytest.raises(ProtocolError) as bad:
        async with Visitor(ORG_ID, base_url=giosg.base_url, store=store, retry=FAST_RETRY):
            pass
    texts += [str(bad.value), repr(bad.value), "".join(traceback.format_exception(bad.value))]

    giosg.state.auth_response_hook = None
    await giosg.revoke_visitor(vid)
    with pytest.raises(InvalidSecretError) as revoked:
        async with Visitor(ORG_ID, base_url=giosg.base_url, store=store, retry=FAST_RETRY):
            pass
    texts += [str(revoked.value), repr(revoked.value), repr(revoked.value.body)]
    texts += ["".join(traceback.format_exception(revoked.value))]

    secrets = set(giosg.state.visitors) | set(giosg.state.tokens)
    assert len(secrets) >= 5
    texts += [_rendered(r) for r in debug_logs.records]
    assert any(r.name.startswith("httpcore") for r in debug_logs.records)
    _assert_clean(texts, secrets)


def test_secret_value_type_never_shows_its_value() -> None:
    """repr, str, format, f-strings and pickle never reveal a Secret."""
    secret = Secret("canary-1234567890")
    for text in (repr(secret), str(secret), f"{secret}", f"{secret!r}", f"{secret:>30}"):
        assert "canary" not in text
    with pytest.raises(TypeError):
        pickle.dumps(secret)
    assert secret.reveal() == "canary-1234567890"
    assert secret == Secret("canary-1234567890")
    assert secret != Secret("other")


def test_auth_session_repr_hides_secrets() -> None:
    """The parsed auth response shows ids but neither the secret nor the token."""
    session = AuthSession.from_api(
        {
            "visitor_id": "8a60b202474547dbb8ce19737e4c166f",
            "visitor_secret_id": "canarysecret-aaaaaaaaaaaaaaaa",
            "organization_id": ORG_ID,
            "socket_url": "https://messagerouter.giosg.com/003/2/router",
            "access_token": "canarytoken-bbbbbbbbbbbbbbbb",
            "expires_at": "2015-12-22T11:25:30.595Z",
            "expires_in": 1800,
            "minimal_bar_version": 3,
        }
    )
    text = repr(session)
    assert "8a60b202474547dbb8ce19737e4c166f" in text
    assert "canary" not in text
    assert session.extra == {"minimal_bar_version": 3}


@pytest.mark.parametrize("count", [1, 3, 200])
def test_the_matcher_masks_every_form_whether_searched_directly_or_through_its_index(
    count: int,
) -> None:
    """Few secrets are searched one by one, many through a prefix index: same result."""
    values = [f"s{i:03d}-Zq9/+x=={i}" for i in range(count)]
    forms = sorted(set().union(*(secret_forms(v) for v in values)))

    @settings(max_examples=60, deadline=None)
    @given(
        st.lists(
            st.one_of(st.sampled_from(forms), st.text(max_size=8)),
            min_size=1,
            max_size=12,
        )
    )
    def check(pieces: list[str]) -> None:
        text = "|".join(pieces)
        cleaned = redact(text, values)
        for form in forms:
            assert form not in cleaned
        if not any(form in text for form in forms):
            assert cleaned == text

    check()


def test_the_live_matcher_follows_secrets_as_they_come_and_go() -> None:
    """A new secret is masked at once; a collected one no longer is."""
    value = "live-matcher-canary-Zq9x"
    secret = Secret(value)
    assert redact(f"a {value} b") == "a *** b"
    del secret
    gc.collect()
    assert redact(f"a {value} b") == f"a {value} b"
