"""Shared helpers of the benchmarks: the server child process, tables, ratios, CPU meters.

Every benchmark prints its tables and ends with one line::

    RATIO <name>=<value> target <op> <value> PASS|MISS

Baseline and SDK are always measured in the same run, against the same server process,
interleaved, so that other load on the machine affects both alike.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Literal, Self

import psutil

from giosg_visitor import Secret


BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
ORG_ID = "e6a08f51-c250-4074-847b-58d444dbbeb1"
ROOM_ID = "9926bdfa-56e0-11e5-b98c-6c4008c08dfe"

Backend = Literal["asyncio", "trio"]


# Arguments and output -------------------------------------------------------------------


def parser(description: str) -> argparse.ArgumentParser:
    """An argument parser with the options every benchmark has."""
    result = argparse.ArgumentParser(
        description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    result.add_argument(
        "--backend", choices=["asyncio", "trio"], default="asyncio", help="anyio backend"
    )
    return result


def print_header(title: str, **facts: object) -> None:
    """The benchmark's title and the settings it ran with."""
    print(f"== {title}")
    cpu = psutil.cpu_count() or 0
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"   machine: {cpu} cores, load average {load}; python {sys.version.split()[0]}")
    for key, value in facts.items():
        print(f"   {key}: {value}")
    print()


def print_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """A plain-text table with right-aligned columns (the first column left-aligned)."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        first = values[0].ljust(widths[0])
        rest = [v.rjust(w) for v, w in zip(values[1:], widths[1:], strict=True)]
        return "  ".join([first, *rest]).rstrip()

    print(line(list(headers)))
    print("  ".join("-" * w for w in widths))
    for row in cells:
        print(line(row))
    print()


def _cell(value: object) -> str:
    if isinstance(value, float):
        if value == 0 or abs(value) >= 100:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.3f}" if abs(value) < 1 else f"{value:.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def ratio_line(
    name: str,
    value: float,
    op: Literal[">=", "<=", "=="],
    target: float,
    *,
    tolerance: float = 0.0,
    require: bool = True,
) -> bool:
    """Print the final ``RATIO`` line; return whether the target is met.

    Args:
        name: The measurement.
        value: The measured ratio.
        op: How it is compared with ``target``.
        target: The target.
        tolerance: For ``==``: the allowed absolute difference.
        require: Another condition the verdict needs (printed above by the caller).
    """
    if op == ">=":
        ok = value >= target
    elif op == "<=":
        ok = value <= target
    else:
        ok = abs(value - target) <= tolerance
    ok = ok and require
    shown = f"{target:g}" + (f" +-{tolerance:g}" if tolerance else "")
    print(f"RATIO {name}={value:.3f} target {op} {shown} {'PASS' if ok else 'MISS'}")
    return ok


def median(values: Sequence[float]) -> float:
    """The median (0.0 for no values)."""
    return statistics.median(values) if values else 0.0


# Process helpers -------------------------------------------------------------------------


def raise_fd_limit(wanted: int) -> int:
    """Raise the soft ``RLIMIT_NOFILE`` towards ``wanted`` (capped by the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = min(max(soft, wanted), hard) if hard != resource.RLIM_INFINITY else max(soft, wanted)
    if target != soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return target


def python() -> str:
    """The interpreter running the benchmark (the project's virtualenv)."""
    return sys.executable


class ServerProcess:
    """``bench/_server.py`` in a child process; ``info`` holds the URLs it printed.

    Args:
        args: Command-line options for ``_server.py``.
    """

    def __init__(self, *args: str) -> None:
        self._args = list(args)
        self._proc: subprocess.Popen[str] | None = None
        self.info: dict[str, Any] = {}
        self.process: psutil.Process | None = None

    def __enter__(self) -> Self:
        self._proc = subprocess.Popen(
            [python(), str(BENCH_DIR / "_server.py"), *self._args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if not line:
            raise RuntimeError("the bench server did not start")
        self.info = json.loads(line)
        self.process = psutil.Process(self._proc.pid)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        stdin: IO[str] | None = proc.stdin
        if stdin is not None:
            stdin.close()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    @property
    def router_url(self) -> str:
        """The router's ``socket_url`` (``http://127.0.0.1:<port>/router``)."""
        return str(self.info["router_url"])

    @property
    def ws_url(self) -> str:
        """The router's raw WebSocket URL."""
        return self.router_url.replace("http://", "ws://", 1) + "/websocket"

    @property
    def base_url(self) -> str:
        """FakeGiosg's API origin (only with ``--fake``)."""
        return str(self.info["base_url"])

    def cpu_seconds(self) -> float:
        """CPU seconds (user + system, all threads) the server has used so far."""
        assert self.process is not None
        times = self.process.cpu_times()
        return float(times.user + times.system)


class CpuMeter:
    """CPU use of this process and (optionally) the server over one measured interval.

    ``client_util`` and ``server_util`` are CPU seconds per wall second (1.0 = one core
    busy the whole time). A server below ~0.9 was not the bottleneck.
    """

    def __init__(self, server: ServerProcess | None = None) -> None:
        self._server = server
        self._me = psutil.Process()
        self.wall = 0.0
        self.client_util = 0.0
        self.server_util = 0.0

    def _mine(self) -> float:
        times = self._me.cpu_times()
        return float(times.user + times.system)

    def __enter__(self) -> Self:
        self._t0 = time.perf_counter()
        self._c0 = self._mine()
        self._s0 = self._server.cpu_seconds() if self._server is not None else 0.0
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.wall = time.perf_counter() - self._t0
        if self.wall > 0:
            self.client_util = (self._mine() - self._c0) / self.wall
            if self._server is not None:
                self.server_util = (self._server.cpu_seconds() - self._s0) / self.wall


# SDK helpers -------------------------------------------------------------------------------


def static_token_provider(value: str = "bench-token") -> Callable[[], Awaitable[Secret]]:
    """A ``token_provider`` for ``RealtimeConnection`` that returns one fixed token."""
    token = Secret(value)

    async def provide() -> Secret:
        return token

    return provide


def run(main: Callable[[], Awaitable[Any]], backend: Backend) -> Any:
    """Run ``main`` on the chosen anyio backend."""
    import anyio

    return anyio.run(main, backend=backend)
