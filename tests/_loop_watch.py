"""A pytest plugin that reports event-loop steps over 50 ms, and whose code ran them.

Enabled with ``-p tests._loop_watch`` (``tests/reliability/test_loop_blocking.py`` runs the
end-to-end tests that way in a child pytest). For every async test:

* **asyncio** runs in debug mode with ``slow_callback_duration = 0.05``: asyncio's own
  "Executing <Handle> took N seconds" warnings are the reports.
* **trio** gets an instrument that times every task step; a step over 50 ms is a report.

A watchdog thread samples the event loop thread's stack while a step is running long, so
each report names the code that held the loop: the innermost frame of the SDK
(``giosg_visitor``, not its ``testing`` fakes) or, if there is none, of the tests or
libraries. A report whose samples show SDK code counts as ``sdk``; others as ``other``
(a test's own synchronous set-up, the first import of a module by a library, ...).

At the end of the session the reports go to the JSON file named by
``GIOSG_LOOP_WATCH_REPORT`` (if set): ``{"tests": n, "sdk": [...], "other": [...]}``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from types import FrameType
from typing import Any, Final

import pytest
import sniffio


__all__ = ["REPORT_ENV", "SLOW", "LoopWatch"]

#: A step longer than this holds the loop too long (seconds).
SLOW: Final = 0.05
#: Where the session writes its reports.
REPORT_ENV: Final = "GIOSG_LOOP_WATCH_REPORT"

_PACKAGE = str(Path(__file__).resolve().parents[1] / "giosg_visitor") + os.sep
_FAKES = _PACKAGE + "testing" + os.sep


def _is_sdk(filename: str) -> bool:
    return filename.startswith(_PACKAGE) and not filename.startswith(_FAKES)


#: Where the event loop machinery itself lives: time spent there (scheduling, starting a
#: worker thread, asyncio's debug-mode stack capture) is not the work of the code above.
_FRAMEWORK = (
    *(os.sep + name + os.sep for name in ("anyio", "trio", "asyncio", "outcome", "sniffio")),
    *(os.sep + name for name in ("threading.py", "linecache.py", "traceback.py")),
)


def _where(frame: FrameType | None) -> tuple[bool, str]:
    """(SDK code holds the loop, "innermost file:line function [<- SDK frame]").

    The innermost SDK frame is charged unless event-loop machinery runs between it and
    the innermost frame (the SDK awaited; the time is the loop's, not the SDK's).
    """
    if frame is None:
        return False, "?"
    code = frame.f_code
    innermost = f"{code.co_filename}:{frame.f_lineno} {code.co_name}"
    while frame is not None:
        code = frame.f_code
        if any(part in code.co_filename for part in _FRAMEWORK):
            return False, innermost
        if _is_sdk(code.co_filename):
            return True, f"{innermost} <- {code.co_filename}:{frame.f_lineno} {code.co_name}"
        frame = frame.f_back
    return False, innermost


class LoopWatch:
    """Times loop steps (the caller marks start and end) and samples long ones."""

    def __init__(self) -> None:
        self.thread_id = threading.get_ident()
        self._started: float | None = None
        self._samples: list[tuple[bool, str]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.reports: list[dict[str, Any]] = []
        self._sampler = threading.Thread(target=self._sample, name="loop-watch", daemon=True)
        self._sampler.start()

    def close(self) -> None:
        self._stop.set()
        self._sampler.join()

    def step_started(self) -> None:
        with self._lock:
            self._started = time.perf_counter()
            self._samples = []

    def step_ended(self, what: str, test: str) -> float:
        """End the step; record a report if it was slow. Returns its duration."""
        with self._lock:
            started, samples = self._started, self._samples
            self._started = None
        if started is None:
            return 0.0
        took = time.perf_counter() - started
        if took >= SLOW:
            # SDK code must be on the stack in two samples (20 ms or more of the step): a
            # step that the OS merely paused (2 cores, other processes) is not the SDK's.
            sdk = [place for is_sdk, place in samples if is_sdk]
            sdk = sdk if len(sdk) >= 2 else []
            samples_seen = len(samples)
            self.reports.append(
                {
                    "test": test,
                    "seconds": round(took, 3),
                    "step": what[:300],
                    "sdk": bool(sdk),
                    "samples": samples_seen,
                    "where": sorted(set(sdk or [place for _, place in samples]))[:5],
                }
            )
        return took

    def _sample(self) -> None:
        while not self._stop.wait(0.01):
            with self._lock:
                started = self._started
            if started is None or time.perf_counter() - started < SLOW * 0.6:
                continue
            frame = sys._current_frames().get(self.thread_id)
            place = _where(frame)
            with self._lock:
                if self._started == started:
                    self._samples.append(place)


# The pytest side ------------------------------------------------------------------------------

_RESULTS: dict[str, Any] = {"tests": 0, "asyncio_debug_warnings": 0, "sdk": [], "other": []}


class _TrioInstrument:  # a trio.abc.Instrument (trio is imported only when it runs)
    def __init__(self, watch: LoopWatch, test: str) -> None:
        self._watch = watch
        self._test = test

    def before_task_step(self, task: Any) -> None:
        self._watch.step_started()

    def after_task_step(self, task: Any) -> None:
        self._watch.step_ended(f"trio task {task.name}", self._test)


class _AsyncioSlowLog(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith("Executing "):
            self.records.append(message)


@pytest.fixture
async def _loop_watch(request: pytest.FixtureRequest) -> AsyncIterator[None]:
    test = request.node.nodeid
    watch = LoopWatch()
    _RESULTS["tests"] += 1
    if sniffio.current_async_library() == "trio":
        import trio

        instrument = _TrioInstrument(watch, test)
        trio.lowlevel.add_instrument(instrument)  # type: ignore[arg-type]
        try:
            yield
        finally:
            trio.lowlevel.remove_instrument(instrument)  # type: ignore[arg-type]
            watch.close()
    else:
        loop = asyncio.get_running_loop()
        old_debug, old_slow = loop.get_debug(), loop.slow_callback_duration
        loop.set_debug(True)
        loop.slow_callback_duration = SLOW
        handler = _AsyncioSlowLog()
        asyncio_logger = logging.getLogger("asyncio")
        asyncio_logger.addHandler(handler)
        original_run = asyncio.events.Handle._run

        def timed_run(handle: asyncio.Handle) -> None:
            if threading.get_ident() != watch.thread_id:  # the fake server's own loop
                original_run(handle)
                return
            watch.step_started()
            try:
                original_run(handle)
            finally:
                watch.step_ended(repr(handle), test)

        asyncio.events.Handle._run = timed_run  # type: ignore[method-assign,assignment]
        try:
            yield
        finally:
            asyncio.events.Handle._run = original_run  # type: ignore[method-assign]
            asyncio_logger.removeHandler(handler)
            loop.set_debug(old_debug)
            loop.slow_callback_duration = old_slow
            watch.close()
            # asyncio's own debug-mode warnings, counted; the watch's reports explain them.
            _RESULTS["asyncio_debug_warnings"] += len(handler.records)
    for report in watch.reports:
        _RESULTS["sdk" if report["sdk"] else "other"].append(report)


@pytest.fixture(autouse=True)
def _watch_async_tests(request: pytest.FixtureRequest) -> None:
    if "anyio_backend" in request.fixturenames:
        request.getfixturevalue("_loop_watch")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    path = os.environ.get(REPORT_ENV)
    if path:
        Path(path).write_text(json.dumps(_RESULTS, indent=2))
