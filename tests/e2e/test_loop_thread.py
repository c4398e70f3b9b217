"""``giosg_visitor.testing.LoopThread``: an asyncio loop in a thread, driven from any backend."""

from __future__ import annotations

import asyncio
import threading

import pytest

from giosg_visitor.testing import LoopThread


async def _where() -> str:
    await asyncio.sleep(0)
    return threading.current_thread().name


def test_runs_coroutines_and_calls_on_its_own_thread() -> None:
    """run/submit/call execute on the loop's thread; leaving joins it."""
    with LoopThread("under-test") as thread:
        assert thread.run(_where()) == "under-test"
        assert thread.submit(_where()).result(timeout=5) == "under-test"
        assert thread.call(lambda: threading.current_thread().name) == "under-test"
        worker = next(t for t in threading.enumerate() if t.name == "under-test")
    assert not worker.is_alive()
    assert thread.loop.is_closed()


def test_errors_reach_the_caller() -> None:
    """An exception on the loop is raised in the calling thread."""

    async def fail() -> None:
        raise LookupError("from the loop")

    def fail_now() -> None:
        raise KeyError("from a call")

    with LoopThread() as thread:
        with pytest.raises(LookupError, match="from the loop"):
            thread.run(fail())
        with pytest.raises(KeyError, match="from a call"):
            thread.call(fail_now)


async def test_async_callers_do_not_block_their_own_loop() -> None:
    """arun/acall from an asyncio or trio test wait in a worker thread."""
    with LoopThread("async-caller") as thread:
        assert await thread.arun(_where()) == "async-caller"
        assert await thread.acall(threading.current_thread) is not threading.current_thread()
