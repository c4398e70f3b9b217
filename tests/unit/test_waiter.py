"""The one-shot waiter that parks an idle consumer (both backends)."""

from __future__ import annotations

import anyio
import pytest

from giosg_visitor._waiter import Waiter


pytestmark = pytest.mark.anyio


async def test_a_set_waiter_returns_at_once() -> None:
    waiter = Waiter()
    waiter.set()
    waiter.set()  # idempotent
    assert waiter.is_set()
    with anyio.fail_after(1):
        await waiter.wait()
        await waiter.wait()


async def test_set_wakes_the_parked_task() -> None:
    waiter = Waiter()
    woke: list[bool] = []

    async def park() -> None:
        await waiter.wait()
        woke.append(True)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(park)
            await anyio.wait_all_tasks_blocked()
            assert woke == []
            waiter.set()
    assert woke == [True]


async def test_a_cancelled_wait_leaves_it_usable() -> None:
    waiter = Waiter()
    with anyio.move_on_after(0.05) as scope:
        await waiter.wait()
    assert scope.cancelled_caught
    assert not waiter.is_set()
    waiter.set()  # wakes nobody, and does not fail
    with anyio.fail_after(1):
        await waiter.wait()


async def test_a_set_before_the_cancellation_lands_still_wakes() -> None:
    """set() and a cancel scope's deadline in the same tick: the task ends either way."""
    waiter = Waiter()

    async def park() -> None:
        with anyio.CancelScope() as scope:
            waiter.set()
            scope.cancel()
            await waiter.wait()

    with anyio.fail_after(1):
        await park()


async def test_it_serves_one_waiter_at_a_time() -> None:
    waiter = Waiter()
    errors: list[BaseException] = []

    async def second() -> None:
        try:
            await waiter.wait()
        except RuntimeError as exc:
            errors.append(exc)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter.wait)
            await anyio.wait_all_tasks_blocked()
            await second()
            waiter.set()
    assert len(errors) == 1
    assert "already waiting" in str(errors[0])
