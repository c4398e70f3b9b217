"""A leak-free soak: hours of virtual time, then tasks, fds, RSS and caches are flat.

One visitor against an in-process ``FakeGiosg`` on a virtual clock, its real-time socket
on :class:`~tests.reliability._loopback.LoopbackRouter` (in memory, so hours pass in
seconds). Every 5 virtual seconds the socket is killed and the connection comes back
(resubscribing and reading the chat back from REST); the token lives 10 minutes, so the
session renews every lifetime; an operator and the visitor keep writing in one long chat
whose stream must yield every message once, in order; every virtual minute a short chat
is started, answered and ended. After a warm-up, the test samples once a virtual minute,
right after the short chat ended (after a full garbage collection): tasks and fds must
not exceed the warm-up figure, RSS must grow under 5 %, and every cache the SDK keeps
stays under its bound (the message stream's dedupe window runs with a small capacity so
that it is exercised many times over).

The long mode (``scripts/reliability --long``) runs the same cycles for at least
``GIOSG_SOAK_SECONDS`` real seconds (default 1,800).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import anyio
import pytest

from ._soak_child import CACHE_BOUNDS, CYCLE, LIFETIME, WARM_UP, WINDOW, SoakResult
from .figures import Figures


ROOT = Path(__file__).resolve().parents[2]
#: Allowed RSS growth after the warm-up.
RSS_GROWTH = 0.05
SOAK_SECONDS_ENV = "GIOSG_SOAK_SECONDS"


async def _soak(backend: str, *, cycles: int, real_seconds: float = 0.0) -> SoakResult:
    command = [sys.executable, "-m", "tests.reliability._soak_child"]
    command += [backend, str(cycles), str(real_seconds)]
    with anyio.fail_after(real_seconds + 600):
        done = await anyio.run_process(command, cwd=ROOT, check=False)
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-4000:]
    data = json.loads(done.stdout.decode().strip().splitlines()[-1])
    return SoakResult(**data)


def _check(result: SoakResult, figures: Figures) -> None:
    growth = result.peak_rss / result.baseline_rss - 1
    figures.add("trials.soak_cycles", result.cycles)
    figures.add("faults.socket_kills", result.reconnects)
    figures.add("messages.expected", result.expected)
    figures.add("messages.lost", result.lost)
    figures.add("messages.duplicates", result.duplicates)
    figures.maximum("soak.rss_growth_permille", round(growth * 1000))
    figures.maximum("soak.peak_tasks", result.peak_tasks)
    figures.maximum("soak.peak_fds", result.peak_fds)
    figures.maximum("soak.dedupe_peak", result.peak_caches["dedupe window"])
    figures.maximum("soak.dedupe_capacity", WINDOW)
    assert result.lost == 0, result
    assert result.duplicates == 0, result
    assert result.expired_requests == 0, result
    assert result.expired_subs == 0, result
    assert result.short_chats >= result.cycles // 12, result
    assert result.renewals >= result.cycles * CYCLE // LIFETIME, result
    assert result.reconnects >= result.cycles, "every cycle must reconnect"
    assert result.expected > 3 * WINDOW, "the dedupe window must be overrun"
    for name, bound in CACHE_BOUNDS.items():
        assert result.peak_caches[name] <= bound, (name, result.peak_caches)
    assert result.peak_tasks <= result.baseline_tasks, result
    assert result.peak_fds <= result.baseline_fds, result
    assert growth < RSS_GROWTH, f"RSS grew {growth:.1%} after the warm-up: {result}"


async def test_a_virtual_hour_of_reconnects_renewals_and_chats_leaks_nothing(
    figures: Figures, anyio_backend: str
) -> None:
    """720 cycles of 5 s (an hour): tasks, fds, caches flat, RSS under 5 %, no loss."""
    result = await _soak(anyio_backend, cycles=720)
    _check(result, figures)


@pytest.mark.slow
async def test_soak_for_half_an_hour_of_real_time(figures: Figures, anyio_backend: str) -> None:
    """The same cycles for ``GIOSG_SOAK_SECONDS`` real seconds (default 1,800)."""
    seconds = float(os.environ.get(SOAK_SECONDS_ENV, "1800"))
    result = await _soak(anyio_backend, cycles=WARM_UP * 2, real_seconds=seconds)
    _check(result, figures)
