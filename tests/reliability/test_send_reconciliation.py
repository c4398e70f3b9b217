"""No duplicate chat messages when a send's response is lost.

``Chat.send`` never resends blindly: when the outcome is unknown it reads the chat back.
In-process (virtual time) with a fault layer that lets the server process the POST and
then drops the answer (30 %), or drops the request before the server sees it (10 %), and
makes 10 % of the read-backs fail with 503 (retried); plus a short run over real sockets
with the fake's own connection resets. The single-send case is in
``tests/e2e/test_chat_e2e.py`` (README.md).
"""

from __future__ import annotations

import random
from collections import Counter

import httpx
import pytest

from giosg_visitor import (
    DeliveryUnknownError,
    GiosgError,
    MemoryStore,
    Message,
    ServerError,
    TransportError,
    Visitor,
)
from giosg_visitor.chat import READ_BACK_CLOCK_SKEW
from giosg_visitor.testing import FakeClock, FakeGiosg

from .._helpers import FAST_RETRY, ORG_ID
from ._support import FaultOdds, FlakyTransport, virtual_fake
from .figures import Figures


ROOM_ID = "9926bdfa-56e0-11e5-b98c-6c4008c08dfe"
SEND = FaultOdds(reset_after=0.30, reset_before=0.10)
READ_BACK = FaultOdds(status_503=0.10)


def _odds(request: httpx.Request) -> FaultOdds | None:
    if not request.url.path.endswith("/messages"):
        return None
    return SEND if request.method == "POST" else READ_BACK


async def _sends(texts: list[str], seed: int, figures: Figures) -> None:
    transports: list[FlakyTransport] = []

    def wrap(inner: httpx.AsyncBaseTransport, clock: FakeClock) -> httpx.AsyncBaseTransport:
        flaky = FlakyTransport(inner, clock=clock, rng=random.Random(seed), odds=_odds)
        transports.append(flaky)
        return flaky

    outcomes: list[Message | GiosgError] = []
    async with virtual_fake(wrap=wrap) as world, world.visitor() as visitor:
        chat = await visitor.start_chat(ROOM_ID, join_room=False)
        async with world.clock.autojump():
            for text in texts:
                try:
                    outcomes.append(await chat.send(text))
                except GiosgError as exc:
                    outcomes.append(exc)
        stored = [m for m in await world.giosg.messages(chat.id) if m["sender_type"] == "visitor"]
    injected = sum(transports[0].injected.values())
    stored_ids = {m["id"] for m in stored}
    returned = [o for o in outcomes if isinstance(o, Message)]
    # Duplicates: server copies beyond one per send() of that text.
    sends = Counter(texts)
    copies = Counter(m["message"] for m in stored)
    duplicates = sum(max(0, copies[text] - sends[text]) for text in copies)
    # Lost: sends that claim delivery without a stored message of their own (a message
    # claimed twice, or one the server does not have).
    lost = len(returned) - len({m.id for m in returned} & stored_ids)
    figures.add("trials.sends", len(texts))
    figures.add("faults.send", injected)
    figures.add("messages.expected", len(returned))
    figures.add("messages.duplicates", duplicates)
    figures.add("messages.lost", lost)
    assert injected >= len(texts) // 4
    assert (duplicates, lost) == (0, 0)
    for text, outcome in zip(texts, outcomes, strict=True):
        if isinstance(outcome, Message):
            assert outcome.message == text
    # A send that raised left a stored message only if it said the outcome was unknown
    # (its read-back failed too); every other error means "not delivered".
    unknown = sum(isinstance(o, DeliveryUnknownError) for o in outcomes)
    unreported = len(stored) - len(returned)
    figures.add("messages.delivery_unknown", unknown)
    assert 0 <= unreported <= unknown, "a send raised 'not delivered' but its message was stored"


async def test_lost_responses_never_duplicate_a_message(figures: Figures) -> None:
    """200 sends, 30 % processed-then-lost, 10 % lost before: one copy per send."""
    await _sends([f"message {i:04d}" for i in range(200)], seed=23, figures=figures)


@pytest.mark.slow
async def test_lost_responses_never_duplicate_a_message_long(figures: Figures) -> None:
    """Long run: 10,000 sends with the same fault odds."""
    await _sends([f"message {i:05d}" for i in range(10_000)], seed=10_000, figures=figures)


async def test_lost_responses_of_repeated_texts_never_claim_an_old_message(
    figures: Figures,
) -> None:
    """A bot saying "ok" again: a send that never reached the server must not return
    the previous "ok" as if it had been delivered."""
    rng = random.Random(7)
    texts = [rng.choice(["ok", "yes", "thanks"]) for _ in range(60)]
    await _sends(texts, seed=5, figures=figures)


async def test_an_older_message_of_the_same_text_is_not_taken_for_a_lost_send() -> None:
    """A new process (no claims) whose "ok" never reached the server: the "ok" sent
    three minutes earlier is not returned as if it were this send's."""
    lose = {"posts": False}

    def odds(request: httpx.Request) -> FaultOdds | None:
        if lose["posts"] and request.method == "POST" and request.url.path.endswith("/messages"):
            return FaultOdds(reset_before=1.0)
        return None

    def wrap(inner: httpx.AsyncBaseTransport, clock: FakeClock) -> httpx.AsyncBaseTransport:
        return FlakyTransport(inner, clock=clock, rng=random.Random(1), odds=odds)

    store = MemoryStore()
    async with virtual_fake(wrap=wrap) as world:
        async with world.visitor(store=store) as visitor:
            chat = await visitor.start_chat(ROOM_ID, join_room=False)
            first = await chat.send("ok")
        await world.clock.advance(READ_BACK_CLOCK_SKEW + 60)
        lose["posts"] = True
        async with world.visitor(store=store) as visitor:
            again = await visitor.chat(chat.id)
            with pytest.raises(TransportError):
                await again.send("ok")
        stored = [m for m in await world.giosg.messages(chat.id) if m["sender_type"] == "visitor"]
    assert [m["id"] for m in stored] == [first.id]


@pytest.mark.parametrize("posted", [True, False], ids=["processed", "not-processed"])
async def test_an_unreadable_chat_makes_the_outcome_unknown_not_a_failure(posted: bool) -> None:
    """The send's response is lost and every read-back fails: DeliveryUnknownError
    (not "not delivered"), whether or not the server stored the message; never a resend."""
    broken = {"now": False}

    def odds(request: httpx.Request) -> FaultOdds | None:
        if not broken["now"] or not request.url.path.endswith("/messages"):
            return None
        if request.method == "POST":
            return FaultOdds(reset_after=1.0) if posted else FaultOdds(reset_before=1.0)
        return FaultOdds(status_503=1.0)

    def wrap(inner: httpx.AsyncBaseTransport, clock: FakeClock) -> httpx.AsyncBaseTransport:
        return FlakyTransport(inner, clock=clock, rng=random.Random(3), odds=odds)

    async with virtual_fake(wrap=wrap) as world, world.visitor() as visitor:
        chat = await visitor.start_chat(ROOM_ID, join_room=False)
        broken["now"] = True
        with pytest.raises(DeliveryUnknownError) as info:
            async with world.clock.autojump():
                await chat.send("did it arrive?")
        posts = [r for r in world.giosg.requests if r.method == "POST" and "/messages" in r.path]
        stored = await world.giosg.messages(chat.id)
    assert info.value.chat_id == chat.id
    assert isinstance(info.value.__cause__, ServerError)
    assert len(stored) == (1 if posted else 0)
    assert len(posts) <= 1


async def test_lost_responses_over_real_sockets(giosg: FakeGiosg, figures: Figures) -> None:
    """20 sends over real sockets, 6 of them reset after processing, 2 before."""
    rng = random.Random(20)
    plan = ["after"] * 6 + ["before"] * 2 + ["none"] * 12
    rng.shuffle(plan)
    outcomes: list[Message | GiosgError] = []
    async with Visitor(ORG_ID, base_url=giosg.base_url, retry=FAST_RETRY) as visitor:
        chat = await visitor.start_chat(ROOM_ID, join_room=False)
        for i, fault in enumerate(plan):
            if fault != "none":
                giosg.inject(
                    endpoint="api",
                    reset=True,
                    after_processing=fault == "after",
                    path_contains=f"{chat.id}/messages",
                )
            try:
                outcomes.append(await chat.send(f"real {i:02d}"))
            except GiosgError as exc:
                outcomes.append(exc)
        stored = [m for m in await giosg.messages(chat.id) if m["sender_type"] == "visitor"]
    copies = Counter(m["message"] for m in stored)
    duplicates = sum(n - 1 for n in copies.values())
    figures.add("trials.sends", len(plan))
    figures.add("messages.expected", len(stored))
    figures.add("messages.duplicates", duplicates)
    assert duplicates == 0
    for i, (fault, outcome) in enumerate(zip(plan, outcomes, strict=True)):
        text = f"real {i:02d}"
        if fault == "before":
            assert isinstance(outcome, GiosgError), text
            assert copies[text] == 0
        else:
            assert isinstance(outcome, Message), text
            assert outcome.message == text
            assert copies[text] == 1
