"""The shared timer task on virtual time: order, cancellation, early wake-ups, failures."""

from __future__ import annotations

import functools
import logging

import anyio
import anyio.lowlevel
import pytest

from giosg_visitor._clock import SystemClock
from giosg_visitor._timers import Timers, loop_timers
from giosg_visitor.testing import FakeClock


pytestmark = pytest.mark.anyio


async def test_callbacks_run_in_deadline_order_never_early() -> None:
    clock = FakeClock(start=0.0)
    ran: list[tuple[str, float]] = []

    def record(name: str) -> None:
        ran.append((name, clock.monotonic()))

    async with Timers(clock) as timers:
        for name, delay in [("c", 30.0), ("a", 10.0), ("b", 20.0), ("a2", 10.0)]:
            timers.call_later(delay, functools.partial(record, name))
        await clock.advance(9.999)
        assert ran == []
        await clock.advance(15.0)
        assert ran == [("a", 10.0), ("a2", 10.0), ("b", 20.0)]
        await clock.advance(10.0)
        assert ran[-1] == ("c", 30.0)


async def test_a_new_earlier_timer_wakes_the_sleeping_task() -> None:
    """The task sleeps until the earliest deadline; an earlier one must not wait for it."""
    clock = FakeClock(start=0.0)
    ran: list[float] = []
    async with Timers(clock) as timers:
        timers.call_later(100.0, lambda: ran.append(clock.monotonic()))
        await clock.advance(1.0)  # the task now sleeps until 100
        timers.call_later(4.0, lambda: ran.append(clock.monotonic()))
        await clock.advance(10.0)
        assert ran == [5.0]


async def test_an_empty_heap_sleeps_until_a_timer_comes() -> None:
    clock = FakeClock(start=0.0)
    ran: list[float] = []
    async with Timers(clock) as timers:
        await clock.advance(50.0)
        timers.call_later(5.0, lambda: ran.append(clock.monotonic()))
        await clock.advance(10.0)
        assert ran == [55.0]


async def test_a_cancelled_timer_never_runs_and_cancel_is_idempotent() -> None:
    clock = FakeClock(start=0.0)
    ran: list[str] = []
    async with Timers(clock) as timers:
        keep = timers.call_later(5.0, lambda: ran.append("keep"))
        drop = timers.call_later(5.0, lambda: ran.append("drop"))
        drop.cancel()
        drop.cancel()
        assert drop.cancelled
        assert not keep.cancelled
        await clock.advance(10.0)
        keep.cancel()  # after it ran: nothing happens
        assert ran == ["keep"]


async def test_cancelled_timers_do_not_pile_up() -> None:
    """Visitors that come and go cancel timers due far ahead: the heap drops them."""
    clock = FakeClock(start=0.0)
    async with Timers(clock) as timers:
        for _ in range(10):
            batch = [timers.call_later(3600.0, lambda: None) for _ in range(1000)]
            for timer in batch:
                timer.cancel()
        assert len(timers) < 200


async def test_a_failing_callback_is_logged_and_the_rest_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock(start=0.0)
    ran: list[str] = []

    def boom() -> None:
        raise ValueError("bug in one visitor")

    async with Timers(clock) as timers:
        timers.call_later(1.0, boom)
        timers.call_later(1.0, lambda: ran.append("after"))
        with caplog.at_level(logging.ERROR, logger="giosg_visitor"):
            await clock.advance(2.0)
        assert ran == ["after"]
        assert "a scheduled callback failed" in caplog.text


async def test_async_callbacks_are_awaited_in_turn_and_may_reschedule() -> None:
    clock = FakeClock(start=0.0)
    ran: list[tuple[str, float]] = []
    async with Timers(clock) as timers:

        async def tick() -> None:
            await anyio.lowlevel.checkpoint()
            ran.append(("tick", clock.monotonic()))
            if len(ran) < 3:
                timers.call_later(10.0, tick)

        timers.call_later(10.0, tick)
        await clock.advance(100.0)
        assert ran == [("tick", 10.0), ("tick", 20.0), ("tick", 30.0)]


async def test_timers_scheduled_before_entry_wait_for_it_and_one_task_runs_them() -> None:
    clock = FakeClock(start=0.0)
    ran: list[float] = []
    timers = Timers(clock)
    for n in range(100):
        timers.call_later(float(n), lambda: ran.append(clock.monotonic()))
    before = len(anyio.get_running_tasks())
    async with timers:
        assert len(anyio.get_running_tasks()) == before + 1
        await clock.advance(200.0)
    assert ran == [float(n) for n in range(100)]
    assert len(timers) == 0  # left: what was pending is dropped


def _timer_tasks() -> int:
    return sum(
        task.name == "giosg_visitor._timers.Timers._run_until_idle"
        for task in anyio.get_running_tasks()
    )


async def test_the_loop_has_one_timer_task_per_clock_and_only_while_needed() -> None:
    """Every connection on a clock shares one task, started by the first timer and ended
    once none is pending, so nothing lingers after the last visitor closed."""
    clock = FakeClock(start=0.0)
    timers = loop_timers(clock)
    assert loop_timers(clock) is timers
    assert loop_timers(SystemClock()) is loop_timers(SystemClock())
    assert loop_timers(FakeClock()) is not timers
    assert _timer_tasks() == 0
    ran: list[float] = []
    first = timers.call_later(10.0, lambda: ran.append(clock.monotonic()))
    timers.call_later(20.0, lambda: ran.append(clock.monotonic()))
    await clock.advance(0.0)
    assert _timer_tasks() == 1
    first.cancel()
    await clock.advance(30.0)
    assert ran == [20.0]
    assert _timer_tasks() == 0  # idle: ended
    timers.call_later(5.0, lambda: ran.append(clock.monotonic()))
    await clock.advance(0.0)
    assert _timer_tasks() == 1  # started again by the next timer
    await clock.advance(10.0)
    assert ran == [20.0, 35.0]
    assert _timer_tasks() == 0


async def test_a_task_left_with_only_cancelled_timers_ends_at_once() -> None:
    clock = FakeClock(start=0.0)
    timers = loop_timers(clock)
    pending = [timers.call_later(3600.0, lambda: None) for _ in range(3)]
    await clock.advance(0.0)
    assert _timer_tasks() == 1
    for timer in pending:
        timer.cancel()
    await clock.advance(0.0)  # not an hour: the visitors that wanted them are gone
    assert _timer_tasks() == 0
