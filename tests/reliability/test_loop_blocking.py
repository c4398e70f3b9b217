"""No event-loop blocking: no step of SDK code holds the loop for 50 ms or more.

``test_no_sdk_code_holds_the_event_loop`` runs a representative set of end-to-end tests
(real sockets against ``FakeGiosg``; file and SQLite stores; chats, history, sockets;
the large bodies and long log lines of the test below) in a child pytest with the
``tests._loop_watch`` plugin: asyncio in debug mode with ``slow_callback_duration =
0.05``, trio with an instrument timing every task step, and a stack sampler naming the
code that held the loop. Reports from SDK code must be 0; the others (a test's own set-up,
pytest rewriting an imported test module, the OS pausing the process) are counted and
printed, not failed.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from giosg_visitor import Store, Visitor
from giosg_visitor._api import MAX_MESSAGE_LENGTH
from giosg_visitor.stores import FileStore, SQLiteStore
from giosg_visitor.testing import FakeGiosg

from .._helpers import FAST_RETRY, ORG_ID
from .figures import Figures


ROOT = Path(__file__).resolve().parents[2]
ROOM_ID = "9926bdfa-56e0-11e5-b98c-6c4008c08dfe"

#: The end-to-end tests watched (short enough for the default suite).
WATCHED = (
    "tests/reliability/test_loop_blocking.py::test_large_bodies_long_log_lines_and_stores",
    "tests/e2e/test_chat_e2e.py",
    "tests/e2e/test_visitor_e2e.py::test_new_then_returning_visitor",
    "tests/stores/test_store_conformance.py::test_builtin_stores_pass_check_store",
    "tests/stores/test_store_conformance.py::test_lock_excludes_another_process",
)


#: Long real-time runs left out (their paths are in the tests kept).
SKIPPED = "not zero_loss and not keeps_presence"


@pytest.mark.parametrize("kind", ["file", "sqlite"])
async def test_large_bodies_long_log_lines_and_stores(
    giosg: FakeGiosg, tmp_path: Path, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    """History pages of long messages, DEBUG logging of long lines, a store on disk.

    Meant to be watched by ``test_no_sdk_code_holds_the_event_loop``; on its own it checks
    that the whole history comes back.
    """
    caplog.set_level(logging.DEBUG)
    path = tmp_path / ("visitors.json" if kind == "file" else "visitors.db")
    store: Store = FileStore(path) if kind == "file" else SQLiteStore(path)
    text = "x" * (MAX_MESSAGE_LENGTH - 10)
    async with Visitor(ORG_ID, base_url=giosg.base_url, store=store, retry=FAST_RETRY) as v:
        operator = await giosg.operator_online(ROOM_ID, "Olga")
        chat = await v.start_chat(ROOM_ID)
        await giosg.operator_joins(chat.id, operator)
        for n in range(150):
            await giosg.operator_says(chat.id, operator, f"{n} {text}")
        logging.getLogger("giosg_visitor").debug("a long line: %s", text * 50)
        history = await chat.history()
        assert sum(1 for m in history if (m.message or "").endswith(text)) == 150
        await chat.send(text)
        await v.renew()
    if isinstance(store, SQLiteStore):
        await store.aclose()


def test_no_sdk_code_holds_the_event_loop(tmp_path: Path, figures: Figures) -> None:
    """The watched end-to-end tests pass, and no step over 50 ms is the SDK's."""
    report = tmp_path / "loop-watch.json"
    env = {**os.environ, "GIOSG_LOOP_WATCH_REPORT": str(report)}
    env.pop("GIOSG_FIGURES", None)  # the child's figures are not this run's
    command = [sys.executable, "-m", "pytest", "-q", "-p", "tests._loop_watch"]
    command += ["-p", "no:randomly", "-k", SKIPPED, *WATCHED]
    done = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900, check=False
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    results = json.loads(report.read_text())
    sdk, other = results["sdk"], results["other"]
    figures.add("loop.runs", results["tests"])
    figures.add("loop.slow_callbacks", len(sdk))
    figures.add("loop.slow_callbacks_other", len(other))
    assert results["tests"] >= 30, results["tests"]
    assert sdk == [], json.dumps(sdk, indent=2)
