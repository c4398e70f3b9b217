"""Tokens the server ends early: every refused resubscription is recovered, no message lost.

Several visitors each follow a chat; in each round the fake ends every token server-side
(as a revocation or a server clock running ahead would) and drops every socket. Each
visitor's resubscription is then refused; the connection renews the token once and
subscribes again, and each round's operator message reaches every visitor exactly once.
Counts ``refusals.injected``, ``refusals.recovered`` and ``refusals.unrecovered`` (must
be 0) for ``scripts/reliability``.
"""

from __future__ import annotations

import functools
from collections import Counter
from contextlib import AsyncExitStack

import anyio

from giosg_visitor import ConnectionState, RenewalPolicy, Visitor
from giosg_visitor.chat import MessageStream
from giosg_visitor.realtime import ReconnectPolicy
from giosg_visitor.testing import FakeGiosg

from .._helpers import ORG_ID, wait_until
from .figures import Figures


VISITORS = 4
ROUNDS = 3
ROOM_ID = "9926bdfa-56e0-11e5-b98c-6c4008c08dfe"
FAST_RECONNECT = ReconnectPolicy(first_delay=0.05, max_delay=0.3)
#: Renewals may follow each other this closely; tokens age past it between rounds (a
#: token refused younger than that counts as freshly issued, and its refusal is final).
SPACING = RenewalPolicy(min_spacing=0.2)


async def _collect(stream: MessageStream, seen: Counter[str], wanted: int) -> None:
    async for message in stream:
        if message.sender_type == "user" and message.type == "msg" and message.message:
            seen[message.message] += 1
            if len(seen) == wanted:
                return


def _settled(visitors: list[Visitor], seen: list[Counter[str]], rounds_done: int) -> bool:
    """Every visitor got the rounds so far and recovered every refusal."""
    for visitor, counts in zip(visitors, seen, strict=True):
        stats = visitor.realtime.stats
        if len(counts) < rounds_done or stats.refusals != stats.refusals_recovered:
            return False
        if visitor.realtime.state is not ConnectionState.OPEN:
            return False
    return True


async def test_refused_resubscriptions_are_all_recovered(
    giosg: FakeGiosg, figures: Figures
) -> None:
    """ROUNDS rounds of "all tokens ended + all sockets dropped" across VISITORS visitors."""
    async with AsyncExitStack() as stack:
        operator = await giosg.operator_online(ROOM_ID, "Olivia", organization_id=ORG_ID)
        visitors = [
            await stack.enter_async_context(
                Visitor(ORG_ID, base_url=giosg.base_url, reconnect=FAST_RECONNECT, renewal=SPACING)
            )
            for _ in range(VISITORS)
        ]
        chats = [await visitor.start_chat(ROOM_ID) for visitor in visitors]
        streams = [chat.messages(include_history=False) for chat in chats]
        seen: list[Counter[str]] = [Counter() for _ in visitors]
        expected = [f"round {n}" for n in range(ROUNDS)]
        # The collectors end when they have seen every round's message.
        with anyio.fail_after(60):
            async with anyio.create_task_group() as group:
                for stream, counts in zip(streams, seen, strict=True):
                    group.start_soon(_collect, stream, counts, ROUNDS)
                for round_number, text in enumerate(expected):
                    # Every visitor has recovered from the previous round, and its token
                    # has aged past the renewal spacing (a fresher one would count as
                    # just issued, and its refusal as final).
                    await wait_until(
                        functools.partial(_settled, visitors, seen, round_number), seconds=30
                    )
                    await anyio.sleep(0.3)
                    await giosg.expire_tokens()
                    await giosg.drop_sockets("close", code=1011)
                    figures.add("faults.token_invalidations")
                    for chat in chats:
                        await giosg.operator_says(chat.id, operator, text)
        for stream in streams:
            await stream.aclose()
        refused = sum(visitor.realtime.stats.refusals for visitor in visitors)
        recovered = sum(visitor.realtime.stats.refusals_recovered for visitor in visitors)
    lost = sum(1 for counts in seen for text in expected if counts[text] == 0)
    duplicates = sum(max(0, counts[text] - 1) for counts in seen for text in expected)
    figures.add("messages.expected", VISITORS * ROUNDS)
    figures.add("messages.lost", lost)
    figures.add("messages.duplicates", duplicates)
    figures.add("refusals.injected", refused)
    figures.add("refusals.recovered", recovered)
    figures.add("refusals.unrecovered", refused - recovered)
    figures.add("trials.refusal_rounds", ROUNDS)
    assert (lost, duplicates) == (0, 0)
    assert refused >= VISITORS * ROUNDS
    assert recovered == refused
