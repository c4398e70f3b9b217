"""Visitor.start()/aclose() across tasks, as notebook cells run (both backends)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import anyio
import pytest

from giosg_visitor import InvalidSecretError, MemoryStore, SessionState, Visitor
from giosg_visitor.testing import FakeGiosg

from .._helpers import ORG_ID, forget_stored_token, get_chats


ROOM_ID = "9926bdfa-56e0-11e5-b98c-6c4008c08dfe"
T = TypeVar("T")


async def _in_own_task(fn: Callable[[], Awaitable[T]]) -> T:
    """Run ``fn`` in a task of its own, like a notebook cell."""
    results: list[T] = []

    async def cell() -> None:
        results.append(await fn())

    async with anyio.create_task_group() as tg:
        tg.start_soon(cell)
    return results[0]


async def test_start_in_one_cell_close_in_another(giosg: FakeGiosg) -> None:
    """A visitor started in one task keeps working in others and closes from a third."""
    visitor = Visitor(ORG_ID, base_url=giosg.base_url)
    started = await _in_own_task(visitor.start)
    assert started is visitor
    assert visitor.state is SessionState.AUTHENTICATED

    async def use() -> str | None:
        chat = await visitor.start_chat(ROOM_ID)
        return (await chat.send("from another cell")).message

    assert await _in_own_task(use) == "from another cell"
    assert (await get_chats(giosg, visitor)).status_code == 200
    await _in_own_task(visitor.aclose)
    state: SessionState = visitor.state  # a property: it changed under mypy's feet
    assert state is SessionState.CLOSED
    await visitor.aclose()  # twice is fine


async def test_start_failure_is_raised_from_start(giosg: FakeGiosg) -> None:
    """A failing start raises its typed error from start() itself."""
    store = MemoryStore()
    async with Visitor(ORG_ID, base_url=giosg.base_url, store=store) as first:
        vid = first.visitor_id
    await giosg.revoke_visitor(vid)
    await forget_stored_token(store)
    with pytest.raises(InvalidSecretError):
        await Visitor(ORG_ID, base_url=giosg.base_url, store=store).start()


async def test_start_twice_is_refused(giosg: FakeGiosg) -> None:
    """start() after start() (or inside async with) raises RuntimeError."""
    visitor = await Visitor(ORG_ID, base_url=giosg.base_url, realtime=False).start()
    with pytest.raises(RuntimeError):
        await visitor.start()
    await visitor.aclose()
