"""``SeenWindow``: the bounded memory of the messages a stream has yielded."""

from __future__ import annotations

import datetime as dt
import random

import pytest

from giosg_visitor._dedupe import SeenWindow
from giosg_visitor.models import Message


T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def _message(n: int, *, timed: bool = True) -> Message:
    created = T0 + dt.timedelta(seconds=n) if timed else None
    return Message(id=f"m{n}", created_at=created, message=str(n))


def test_the_window_never_holds_more_than_its_capacity() -> None:
    window = SeenWindow(capacity=10)
    for n in range(1000):
        window.add(_message(n))
        assert len(window) <= 10
    assert len(window) == 10


def test_every_message_yielded_is_still_recognised() -> None:
    """Forgotten ids are covered by the horizon: nothing ever yielded looks new again."""
    window = SeenWindow(capacity=8)
    messages = [_message(n) for n in range(200)]
    rng = random.Random(4)
    for start in range(0, 200, 20):
        batch = messages[start : start + 20]
        rng.shuffle(batch)  # live and read-back arrivals interleave
        window.update(batch)
        assert all(m in window for m in messages[: start + 20])
    assert _message(200) not in window


def test_a_message_newer_than_the_horizon_is_new_until_added() -> None:
    window = SeenWindow(capacity=2)
    window.update([_message(1), _message(2), _message(3)])
    assert _message(1) in window  # behind the horizon
    late = Message(id="late", created_at=T0 + dt.timedelta(seconds=2.5))
    assert late not in window  # newer than the forgotten one: a real miss
    window.add(late)
    assert late in window


def test_messages_without_a_time_are_dropped_oldest_first_after_timed_ones() -> None:
    window = SeenWindow(capacity=3)
    window.update([_message(1, timed=False), _message(2), _message(3), _message(4)])
    assert len(window) == 3
    assert _message(1, timed=False) in window  # the timed m2 went first
    window.update([_message(5, timed=False), _message(6, timed=False), _message(7, timed=False)])
    assert len(window) == 3
    assert _message(1, timed=False) not in window


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        SeenWindow(capacity=0)
