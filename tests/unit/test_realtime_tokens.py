"""The connection's one token source: the callables' wrapper, and a custom source end to end."""

from __future__ import annotations

import anyio
import pytest

from giosg_visitor import Secret
from giosg_visitor.realtime import RealtimeConnection, TokenSource
from giosg_visitor.realtime._tokens import FRESH_TOKEN_WINDOW, CallbackTokens
from giosg_visitor.testing import FakeClock, MessageRouter
from tests._router_harness import RouterHarness


CHANNEL = "/api/v5/public/visitors/8a60b202474547dbb8ce19737e4c166f/chats"


class Counter:
    """Hands out ``token-1``, ``token-2``...; ``renew`` moves to the next one."""

    def __init__(self) -> None:
        self.number = 1
        self.renewals = 0

    async def current(self) -> Secret:
        await anyio.lowlevel.checkpoint()
        return Secret(f"token-{self.number}")

    async def renew(self) -> None:
        await anyio.lowlevel.checkpoint()
        self.renewals += 1
        self.number += 1


async def test_a_refusal_renews_and_the_renewed_token_is_fresh_for_a_while() -> None:
    """Without a ``refused`` callable: renew, and a refusal of the new token soon after is final."""
    clock, counter = FakeClock(), Counter()
    tokens = CallbackTokens(counter.current, renew=counter.renew, refused=None, clock=clock)
    assert isinstance(tokens, TokenSource)
    old = await tokens.fresh()
    assert not tokens.is_fresh(old)
    assert await tokens.refused(old)
    new = await tokens.fresh()
    assert new != old
    assert counter.renewals == 1
    assert tokens.is_fresh(new)
    await clock.advance(FRESH_TOKEN_WINDOW)
    assert not tokens.is_fresh(new)


async def test_without_renew_a_refusal_is_final() -> None:
    """Nothing can renew: ``refused`` says so, and ``renew`` does nothing."""
    counter = Counter()
    tokens = CallbackTokens(counter.current, renew=None, refused=None, clock=FakeClock())
    await tokens.renew()
    assert not await tokens.refused(await tokens.fresh())
    assert counter.renewals == 0


async def test_an_owner_that_judges_refusals_is_never_overruled() -> None:
    """With a ``refused`` callable, its answer stands and no token is called fresh."""
    counter = Counter()
    answers: list[Secret] = []

    async def refused(token: Secret) -> bool:
        answers.append(token)
        return False

    tokens = CallbackTokens(
        counter.current, renew=counter.renew, refused=refused, clock=FakeClock()
    )
    token = await tokens.fresh()
    assert not await tokens.refused(token)
    assert answers == [token]
    assert not tokens.is_fresh(token)
    assert counter.renewals == 0


async def test_provider_must_return_a_secret() -> None:
    """A provider returning a plain str is a bug, reported as such (never sent)."""

    async def plain() -> Secret:
        return "not-a-secret"  # type: ignore[return-value]

    tokens = CallbackTokens(plain, renew=None, refused=None, clock=FakeClock())
    with pytest.raises(TypeError, match="Secret"):
        await tokens.fresh()


def test_exactly_one_way_to_get_tokens() -> None:
    """``token_source`` and ``token_provider`` exclude each other; one is needed."""
    counter = Counter()
    tokens = CallbackTokens(counter.current, renew=None, refused=None, clock=FakeClock())
    with pytest.raises(TypeError):
        RealtimeConnection(socket_url="ws://127.0.0.1:1")
    with pytest.raises(TypeError):
        RealtimeConnection(
            socket_url="ws://127.0.0.1:1", token_source=tokens, token_provider=counter.current
        )
    with pytest.raises(TypeError):
        RealtimeConnection(
            socket_url="ws://127.0.0.1:1", token_source=tokens, renew_token=counter.renew
        )


class RecordingSource:
    """A token source of the owner's own, recording what the connection asked."""

    def __init__(self, token: Secret) -> None:
        self.token = token
        self.asked = 0

    async def fresh(self) -> Secret:
        await anyio.lowlevel.checkpoint()
        self.asked += 1
        return self.token

    async def renew(self) -> None:
        await anyio.lowlevel.checkpoint()

    async def refused(self, token: Secret) -> bool:
        await anyio.lowlevel.checkpoint()
        return False

    def is_fresh(self, token: Secret) -> bool:
        return False


async def test_a_custom_source_subscribes_over_a_real_socket() -> None:
    """A connection given only a token source sends the source's token in its ``sub``."""
    source = RecordingSource(Secret("custom-source-token"))
    with RouterHarness(MessageRouter()) as harness:
        async with (
            RealtimeConnection(socket_url=harness.socket_url, token_source=source) as connection,
            connection.subscribe(CHANNEL) as subscription,
        ):
            with anyio.fail_after(10):
                await subscription.wait_subscribed()
        [sub] = harness.router.subs
    assert sub.token == "custom-source-token"
    assert source.asked == 1
