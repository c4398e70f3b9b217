"""Events handed to a callback on the read loop: ``Subscription._set_sink`` and the
visitor's chats channel, which keeps every known Chat current without a task of its own."""

from __future__ import annotations

import logging
from typing import Any

import anyio
import pytest

from giosg_visitor import Visitor
from giosg_visitor.errors import ConnectionClosedError, SubscriptionError
from giosg_visitor.realtime import Change, Gap, Resubscribed, Subscription, SubscriptionEvent
from giosg_visitor.realtime._channels import Delivery

from .._helpers import ORG_ID


CHANNEL = "/api/v5/public/visitors/8a60b202474547dbb8ce19737e4c166f/chats"


class Owner:
    """The connection side of a subscription (only told when the consumer leaves)."""

    def __init__(self) -> None:
        self.unsubscribed: list[Subscription] = []

    def _unsubscribe(self, subscription: Subscription) -> None:
        self.unsubscribed.append(subscription)

    def _remove_listener(self, listener: object) -> None:
        raise AssertionError("not a listener")


def change(chat_id: str, **resource: Any) -> Change:
    return Change(channel=CHANNEL, action="changed", resource_id=chat_id, resource=resource)


class Recorder:
    def __init__(self, *, fail_on: int | None = None) -> None:
        self.events: list[SubscriptionEvent] = []
        self.ends: list[BaseException | None] = []
        self.fail_on = fail_on

    def on_event(self, event: SubscriptionEvent) -> None:
        self.events.append(event)
        if len(self.events) == self.fail_on:
            raise ValueError("a bug in the callback")

    def on_end(self, error: BaseException | None) -> None:
        self.ends.append(error)


def test_buffered_events_go_to_the_sink_first_then_later_ones_straight() -> None:
    """What was buffered before the sink is handed over in order; nothing is buffered after."""
    subscription = Subscription(Owner(), CHANNEL, max_buffer=4)
    first, second = change("a", n=1), change("a", n=2)
    assert subscription._deliver(first) is Delivery.DELIVERED
    subscription._mark(Resubscribed(channel=CHANNEL))
    recorder = Recorder()
    subscription._set_sink(recorder.on_event, recorder.on_end)
    assert recorder.events == [first, Resubscribed(channel=CHANNEL)]
    assert subscription._deliver(second) is Delivery.DELIVERED
    subscription._mark(Gap(channel=CHANNEL, reason="overflow"))
    assert recorder.events[2:] == [second, Gap(channel=CHANNEL, reason="overflow")]
    assert subscription.buffered == 0
    # Never a buffer to overflow: the callback takes every notification as it comes.
    for n in range(10):
        assert subscription._deliver(change("a", n=n)) is Delivery.DELIVERED
    assert subscription.dropped == 0
    assert recorder.ends == []


def test_a_raising_sink_is_logged_and_never_reaches_the_read_loop(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A callback's exception is logged (type only) and the next events still arrive."""
    subscription = Subscription(Owner(), CHANNEL, max_buffer=4)
    recorder = Recorder(fail_on=1)
    subscription._set_sink(recorder.on_event, recorder.on_end)
    with caplog.at_level(logging.ERROR, logger="giosg_visitor.realtime.streams"):
        assert subscription._deliver(change("a", secret="do-not-log")) is Delivery.DELIVERED
    assert subscription._deliver(change("a", n=2)) is Delivery.DELIVERED
    subscription._mark(Resubscribed(channel=CHANNEL))
    assert len(recorder.events) == 3
    [record] = caplog.records
    assert "ValueError" in record.getMessage()
    assert "do-not-log" not in record.getMessage()


def test_the_end_is_reported_once_with_the_error() -> None:
    """A fatal error ends the sink once; a later close reports nothing more."""
    owner = Owner()
    subscription = Subscription(owner, CHANNEL, max_buffer=4)
    recorder = Recorder()
    subscription._set_sink(recorder.on_event, recorder.on_end)
    error = ConnectionClosedError("gone")
    subscription._finish(error)
    subscription._finish(None)
    subscription._deliver(change("a", n=1))
    subscription._mark(Resubscribed(channel=CHANNEL))
    assert recorder.ends == [error]
    assert recorder.events == []


def test_a_subscription_that_already_ended_reports_it_at_once() -> None:
    """Set after the server refused the channel: the buffered events, then the end."""
    subscription = Subscription(Owner(), CHANNEL, max_buffer=4)
    first = change("a", n=1)
    subscription._deliver(first)
    refusal = SubscriptionError("refused", channel=CHANNEL)
    subscription._finish(refusal)
    recorder = Recorder()
    subscription._set_sink(recorder.on_event, recorder.on_end)
    assert recorder.events == [first]
    assert recorder.ends == [refusal]


async def test_closing_ends_the_sink_without_an_error() -> None:
    """``aclose`` reports the end with ``None`` and unsubscribes."""
    owner = Owner()
    subscription = Subscription(owner, CHANNEL, max_buffer=4)
    recorder = Recorder()
    subscription._set_sink(recorder.on_event, recorder.on_end)
    await subscription.aclose()
    assert recorder.ends == [None]
    assert owner.unsubscribed == [subscription]


# The visitor's chats channel -------------------------------------------------------------


class FakeChat:
    """What the visitor's chats channel drives: ``refresh()`` and ``_apply()``."""

    def __init__(self, chat_id: str) -> None:
        self.id = chat_id
        self.applied: list[Any] = []
        self.refreshes = 0
        self.release = anyio.Event()

    async def refresh(self) -> None:
        self.refreshes += 1
        # The server's answer is read now; it reaches the chat when the response does.
        snapshot = f"snapshot {self.refreshes}"
        await self.release.wait()
        self.release = anyio.Event()
        self._apply(snapshot)

    def _apply(self, changes: Any) -> None:
        self.applied.append(changes)


async def test_a_change_during_a_refresh_is_applied_after_the_refresh() -> None:
    """A change newer than the refresh's answer is not overwritten by it: held, then applied."""
    visitor = Visitor(ORG_ID)
    chat = FakeChat("c1")
    visitor._chats["c1"] = chat  # type: ignore[assignment]
    async with anyio.create_task_group() as tg:
        visitor._task_group = tg
        visitor._on_chat_event(Resubscribed(channel=CHANNEL))
        await anyio.wait_all_tasks_blocked()
        assert chat.refreshes == 1
        visitor._on_chat_event(change("c1", is_ended=True))
        assert chat.applied == []
        chat.release.set()
        await anyio.wait_all_tasks_blocked()
        assert chat.applied == ["snapshot 1", {"is_ended": True}]
        # Outside a refresh, a change is applied at once.
        visitor._on_chat_event(change("c1", message_count=3))
        assert chat.applied[-1] == {"message_count": 3}
    visitor._task_group = None


async def test_markers_during_a_refresh_start_one_more_round_not_a_second_task() -> None:
    """Markers arriving while the chats are re-read lead to exactly one more round."""
    visitor = Visitor(ORG_ID)
    chat = FakeChat("c1")
    visitor._chats["c1"] = chat  # type: ignore[assignment]
    async with anyio.create_task_group() as tg:
        visitor._task_group = tg
        visitor._on_chat_event(Gap(channel=CHANNEL, reason="overflow"))
        await anyio.wait_all_tasks_blocked()
        visitor._on_chat_event(Resubscribed(channel=CHANNEL))
        visitor._on_chat_event(change("c1", n=1))
        visitor._on_chat_event(Resubscribed(channel=CHANNEL))
        chat.release.set()
        await anyio.wait_all_tasks_blocked()
        assert chat.refreshes == 2
        assert chat.applied == ["snapshot 1", {"n": 1}]
        chat.release.set()
        await anyio.wait_all_tasks_blocked()
        assert chat.applied == ["snapshot 1", {"n": 1}, "snapshot 2"]
        assert visitor._held_chat_changes is None
    visitor._task_group = None


async def test_a_second_task_iterating_one_subscription_is_refused() -> None:
    """Two consumers of one buffer would steal each other's wake-up: the second is told."""
    subscription = Subscription(Owner(), CHANNEL, max_buffer=4)
    received: list[SubscriptionEvent] = []
    errors: list[BaseException] = []

    async def consume() -> None:
        received.append(await subscription.__anext__())

    async def second() -> None:
        try:
            await subscription.__anext__()
        except RuntimeError as exc:
            errors.append(exc)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(consume)
            await anyio.wait_all_tasks_blocked()
            await second()
            subscription._deliver(change("c1"))
    assert [event.resource_id for event in received if isinstance(event, Change)] == ["c1"]
    assert "already iterating" in str(errors[0])
