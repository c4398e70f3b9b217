"""Mistakes a user makes are caught early, with the SDK's own clear errors.

* ``VisitorPool`` options are typed (``VisitorOptions``) and checked at construction;
* a visitor, its chats or a pool used after close raise ``ClosedError``;
* ``await pool.visitor(key)`` and ``await visitor.subscribe(channel)`` say to use
  ``async with``, at run time, and mypy reports them before that.
"""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

import pytest

from giosg_visitor import ClosedError, MemoryStore, Visitor, VisitorOptions, VisitorPool
from giosg_visitor.testing import FakeGiosg

from .._helpers import ORG_ID, ROOM_ID


ROOT = Path(__file__).parent.parent.parent


def test_pool_rejects_a_misspelt_option_at_construction() -> None:
    with pytest.raises(TypeError, match=r"unknown visitor option 'realtme'.*'realtime'"):
        VisitorPool(ORG_ID, store=MemoryStore(), realtme=False)  # type: ignore[call-arg]


def test_pool_checks_option_values_at_construction() -> None:
    with pytest.raises(ValueError, match="on_invalid_secret"):
        VisitorPool(ORG_ID, store=MemoryStore(), on_invalid_secret="ignore")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="organization_id"):
        VisitorPool("", store=MemoryStore())


def test_visitor_options_are_visitor_keywords_minus_the_pools() -> None:
    """VisitorOptions stays in step with Visitor's signature."""
    keywords = {
        name
        for name, parameter in inspect.signature(Visitor).parameters.items()
        if parameter.kind is inspect.Parameter.KEYWORD_ONLY
    }
    owned_by_pool = {"store", "key", "http_client", "base_url", "clock"}
    assert set(VisitorOptions.__optional_keys__) == keywords - owned_by_pool


async def test_awaiting_a_context_manager_says_use_async_with() -> None:
    async with FakeGiosg() as giosg:
        pool = VisitorPool(ORG_ID, store=MemoryStore(), base_url=giosg.base_url)
        async with pool:
            with pytest.raises(TypeError, match=r"use `async with pool\.visitor\(key\)"):
                await pool.visitor("user-1")  # type: ignore[misc]
            async with pool.visitor("user-1") as visitor:
                channel = f"/api/v5/public/visitors/{visitor.visitor_id}/chats"
                with pytest.raises(TypeError, match=r"use `async with visitor\.subscribe"):
                    await visitor.subscribe(channel)  # type: ignore[misc]
                async with visitor.subscribe(channel) as subscription:
                    await subscription.wait_subscribed()


async def test_calls_after_close_raise_closed_error() -> None:
    """Not httpx's "Cannot send a request, as the client has been closed"."""
    async with FakeGiosg(rooms=[ROOM_ID]) as giosg:
        async with Visitor(ORG_ID, base_url=giosg.base_url, realtime=False) as visitor:
            chat = await visitor.start_chat(ROOM_ID)
        with pytest.raises(ClosedError, match=r"async with Visitor\(\.\.\.\)"):
            await chat.send("too late")
        with pytest.raises(ClosedError):
            await chat.history()
        with pytest.raises(ClosedError):
            await visitor.start_chat(ROOM_ID)
        with pytest.raises(RuntimeError):  # ClosedError is a RuntimeError, as before
            await visitor.room(ROOM_ID)

        pool = VisitorPool(ORG_ID, store=MemoryStore(), base_url=giosg.base_url, realtime=False)
        async with pool, pool.visitor("user-1") as pooled:
            pooled_chat = await pooled.start_chat(ROOM_ID)
        with pytest.raises(ClosedError, match="the pool is closed"):
            await pool.get("user-1")
        with pytest.raises(ClosedError):
            async with pool.visitor("user-1"):
                pass
        with pytest.raises(ClosedError):
            await pooled_chat.send("too late")


MISTAKES = """
from giosg_visitor import MemoryStore, VisitorPool


async def main() -> None:
    pool = VisitorPool("org", store=MemoryStore(), realtme=False)
    async with pool:
        visitor = await pool.visitor("user-1")
"""


def test_mypy_reports_the_mistakes(tmp_path: Path) -> None:
    """The typed options and the missing ``__await__`` make mypy catch both lines."""
    sample = tmp_path / "mistakes.py"
    sample.write_text(MISTAKES)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--no-error-summary",
            "--cache-dir",
            str(ROOT / ".mypy_cache"),
            str(sample),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert 'Unexpected keyword argument "realtme"' in result.stdout
    assert "mistakes.py:8: error" in result.stdout  # await pool.visitor(...)
