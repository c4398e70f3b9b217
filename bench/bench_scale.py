"""(f) Scale: N pooled visitors with short tokens, renewing for several lifetimes.

N visitors are started in one :class:`~giosg_visitor.VisitorPool` (its defaults: one shared
HTTP client with 100 connections, 20 starts at a time, real-time sockets on) against
FakeGiosg and the bench router in **another process** (``bench/_server.py --fake``),
with tokens of ``--lifetime`` seconds (120 by default: the first visitors renew while the
ramp is still going). Each visitor also sends one GET per token lifetime (random phase)
so that an expired token, if the SDK ever sent one, is seen by the fake. After the last
visitor is up, the run goes on for ``--lifetimes`` token lifetimes on real time.

Reported:

* failed renewals (background renewals that gave up, visitors whose session failed),
  failed starts by error type, tokens that lived out their lifetime without a renewal;
* expired-token requests seen by the fake (from its journal, ``GET /_bench/stats``);
* renewals per second: the peak over any one-second window, against ``N / spread``
  (the policy's spread of the first renewal after a start, for this lifetime) and the
  run's mean;
* idle CPU per visitor (this process's CPU over the steady phase, after the ramp,
  divided by N), time to all up, RSS per visitor, asyncio/trio tasks per visitor, GC time;
* the load average at the start and at the end (the machine may be shared).

``--gc-freeze`` calls ``gc.freeze()`` once every visitor is up (what an application can
do after its start-up): the collector then leaves the start-up objects alone, and full
collections walk only what was made since.

``--gc-freeze-every K`` calls ``gc.freeze()`` each time another ``K`` visitors are up,
during the ramp only, and ``gc.unfreeze()`` once all are up (nothing stays frozen for the
steady phase). A growing heap is collected in full each time it has grown by a quarter
since the last full collection, and each of those walks the whole heap; objects frozen
along the way are left out of both the walk and the count.

``--gc-off-in-ramp`` disables the collector for the ramp (``gc.disable()`` before the
first start) and runs one ``gc.collect()`` once all are up, then enables it again; that
collection is counted in the ramp. With ``--gc-freeze`` as well, the collection is
replaced by the freeze (the ramp's cyclic garbage is frozen with the rest).

Baseline, same run and server: a bare ``httpx.AsyncClient`` doing 2,000 auth POSTs, ten
at a time; its CPU per POST is printed beside the SDK's steady CPU per renewal (which also
pays for the sockets, their pings and the traffic). ``RATIO``
is the peak renewal rate over ``N / spread``: a fleet started at once should renew no
faster than its jitter spreads it (times a small factor for the ramp's own shape). Not a
pass/fail test; the verdict also requires 0 failed renewals, 0 expired-token requests
and every visitor up.
"""

from __future__ import annotations

import gc
import itertools
import logging
import os
import random
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import _common as common
import anyio
import httpx
import psutil

from giosg_visitor import MemoryStore, RenewalPolicy, Visitor, VisitorPool
from giosg_visitor.models import VisitorRecord  # where every version has it


class RecordingStore:
    """A MemoryStore that remembers when each key was saved (= each token obtained)."""

    def __init__(self) -> None:
        self._inner = MemoryStore()
        self.saves: dict[str, list[float]] = {}

    async def load(self, key: str) -> VisitorRecord | None:
        """As MemoryStore."""
        return await self._inner.load(key)

    async def save(self, key: str, record: VisitorRecord) -> None:
        """As MemoryStore, noting the time."""
        self.saves.setdefault(key, []).append(time.monotonic())
        await self._inner.save(key, record)

    async def delete(self, key: str) -> None:
        """As MemoryStore."""
        await self._inner.delete(key)

    def lock(self, key: str) -> AbstractAsyncContextManager[None]:
        """As MemoryStore."""
        return self._inner.lock(key)


class LogCounter(logging.Handler):
    """Counts the SDK's warnings and errors by their message template."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.counts: Counter[str] = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        """Count one record."""
        self.counts[f"{record.levelname} {record.getMessage()[:160]}"] += 1


class GcTimer:
    """Total time spent in the garbage collector, via ``gc.callbacks``."""

    def __init__(self) -> None:
        self.total = 0.0
        self.collections: Counter[int] = Counter()
        self.seconds: Counter[int] = Counter()
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            spent = time.perf_counter() - self._started
            self.total += spent
            self.collections[int(info["generation"])] += 1
            self.seconds[int(info["generation"])] += spent


def _cpu(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def count_tasks(backend: str) -> int:
    """Tasks alive in this event loop."""
    if backend == "trio":
        import trio.lowlevel

        count = 0
        root = trio.lowlevel.current_root_task()
        stack = [root] if root is not None else []
        while stack:
            task = stack.pop()
            count += 1
            for nursery in task.child_nurseries:
                stack.extend(nursery.child_tasks)
        return count
    import asyncio

    return len(asyncio.all_tasks())


def max_in_window(times: list[float], window: float) -> int:
    """The most events in any window of ``window`` seconds (sliding; ``times`` sorted)."""
    best = 0
    start = 0
    for end, t in enumerate(times):
        while t - times[start] >= window:
            start += 1
        best = max(best, end - start + 1)
    return best


async def run(
    args: Any, server: common.ServerProcess, report: Callable[[dict[str, Any]], None]
) -> dict[str, Any]:
    """Start the visitors, keep them for the run, collect the figures."""
    me = psutil.Process()
    store = RecordingStore()
    logs = LogCounter()
    logging.getLogger("giosg_visitor").addHandler(logs)
    gc_timer = GcTimer()
    gc.callbacks.append(gc_timer)
    rng = random.Random(args.seed)
    n = args.visitors
    start_errors: Counter[str] = Counter()
    traffic_statuses: Counter[str] = Counter()
    up = 0
    all_up = anyio.Event()
    rss0 = me.memory_info().rss
    tasks0 = count_tasks(args.backend)
    t0 = time.monotonic()
    period = args.lifetime / args.requests_per_lifetime if args.requests_per_lifetime else 0.0
    pool = VisitorPool(
        common.ORG_ID,
        store=store,
        base_url=server.base_url,
        idle_timeout=None,
        max_connections=args.max_connections,
        max_concurrent_starts=args.max_concurrent_starts,
        realtime=not args.no_realtime,
    )
    result: dict[str, Any] = {}
    # (wall, client CPU, server CPU) at the start of the phase being measured.
    mark = (time.monotonic(), _cpu(me), server.cpu_seconds())

    def cut_short() -> None:
        """Report what there is when the event loop is too congested to get there itself.

        Runs in a timer thread (``--max-wall``): a collapsed pool (thousands of requests
        in httpcore's queue) takes its event loop far beyond the planned run length.
        """
        wall = time.monotonic()
        result.setdefault("up_at_ramp_end", up)
        result.setdefault("ramp", wall - t0)
        result.setdefault("gc_ramp", gc_timer.total)
        result.setdefault("all_up", False)
        result["up"] = up
        result.setdefault("rss_per_visitor", (me.memory_info().rss - rss0) / max(1, up) / 1024)
        result.setdefault("tasks_per_visitor", float("nan"))
        span = max(1e-9, wall - mark[0])
        result["cpu"] = (_cpu(me) - mark[1]) / span
        result["server_cpu"] = (server.cpu_seconds() - mark[2]) / span
        result["gc_steady"] = float("nan")
        result["gc_total"] = gc_timer.total
        result["gc_collections"] = dict(gc_timer.collections)
        result["gc_seconds"] = dict(gc_timer.seconds)
        result["steady"] = (mark[0], wall)
        result["fake"] = httpx.get(f"{server.base_url}/_bench/stats").json()
        result["t0"] = t0
        result["end"] = wall
        result["saves"] = {k: list(v) for k, v in list(store.saves.items())}
        result["start_errors"] = dict(start_errors)
        result["traffic"] = dict(traffic_statuses)
        result["logs"] = dict(logs.counts)
        print(
            f"CUT SHORT after {wall - t0:.0f} s (--max-wall): the event loop was too"
            " congested to finish the run; the steady-phase figures cover"
            f" {span:.0f} s from the last phase start"
        )
        result["cut"] = True
        report(result)

    watchdog = threading.Timer(args.max_wall, cut_short)
    watchdog.daemon = True
    watchdog.start()
    async with pool, anyio.create_task_group() as tg:

        async def one(key: str) -> None:
            nonlocal up
            try:
                visitor: Visitor = await pool.get(key)
            except Exception as exc:
                start_errors[type(exc).__name__] += 1
                visitor = None  # type: ignore[assignment]
            else:
                up += 1
                if args.gc_freeze_every and up % args.gc_freeze_every == 0 and up < n:
                    gc.freeze()
            if up + sum(start_errors.values()) == n:
                all_up.set()
            if visitor is None or not period:
                return
            url = f"{server.base_url}/api/v5/public/visitors/{visitor.visitor_id}/chats"
            await anyio.sleep(rng.uniform(0, period))
            while True:
                try:
                    response = await visitor.http_client.get(url, auth=visitor.auth)
                    traffic_statuses[str(response.status_code)] += 1
                except Exception as exc:
                    traffic_statuses[type(exc).__name__] += 1
                await anyio.sleep(period)

        if args.gc_off_in_ramp:
            gc.disable()
        for i in range(n):
            tg.start_soon(one, f"user-{i}")
        with anyio.move_on_after(args.ramp_timeout):
            await all_up.wait()
        if args.gc_off_in_ramp:
            if not args.gc_freeze:
                gc.collect()
            else:
                gc.freeze()  # instead of the collection: the ramp's objects, garbage too
                result["frozen_in_ramp"] = gc.get_freeze_count()
            gc.enable()
        ramp = time.monotonic() - t0
        result["gc_ramp"] = gc_timer.total
        if args.gc_freeze_every:
            result["frozen_in_ramp"] = gc.get_freeze_count()
            gc.unfreeze()
        result["up_at_ramp_end"] = up
        result["ramp"] = ramp
        result["all_up"] = all_up.is_set()
        rss_up = me.memory_info().rss
        tasks_up = count_tasks(args.backend)
        result["rss_per_visitor"] = (rss_up - rss0) / max(1, up) / 1024
        result["tasks_per_visitor"] = (tasks_up - tasks0) / max(1, up)
        if args.gc_freeze:
            gc.freeze()
            result["frozen"] = gc.get_freeze_count()
        await anyio.sleep(args.settle)
        gc_before = gc_timer.total
        steady_from = time.monotonic()
        mark = (steady_from, _cpu(me), server.cpu_seconds())
        with common.CpuMeter(server) as meter:
            await anyio.sleep(args.lifetimes * args.lifetime)
        steady_to = time.monotonic()
        result["up"] = up
        result["cpu"] = meter.client_util
        result["server_cpu"] = meter.server_util
        result["gc_steady"] = gc_timer.total - gc_before
        result["gc_total"] = gc_timer.total
        result["gc_collections"] = dict(gc_timer.collections)
        result["gc_seconds"] = dict(gc_timer.seconds)
        result["steady"] = (steady_from, steady_to)
        async with httpx.AsyncClient() as client:
            result["fake"] = (await client.get(f"{server.base_url}/_bench/stats")).json()
        result["t0"] = t0
        result["end"] = time.monotonic()
        result["saves"] = store.saves
        result["start_errors"] = dict(start_errors)
        result["traffic"] = dict(traffic_statuses)
        result["logs"] = dict(logs.counts)
        # Reported from inside the pool: a pool that collapsed can take minutes to close
        # (every visitor's shielded auth runs out first), and closing is not measured.
        watchdog.cancel()
        report(result)
        tg.cancel_scope.cancel()
    return result


async def baseline(server: common.ServerProcess, count: int, limit: int) -> float:
    """CPU seconds per auth POST of a bare httpx client: ``count`` POSTs, ``limit`` at once."""
    url = f"{server.base_url}/api/v5/public/orgs/{common.ORG_ID}/auth"
    limits = httpx.Limits(max_connections=limit, max_keepalive_connections=limit)
    async with httpx.AsyncClient(limits=limits) as client:

        async def post(jobs: list[int]) -> None:
            while jobs:
                jobs.pop()
                response = await client.post(url, json={"visitor_secret_id": None})
                response.raise_for_status()

        jobs = list(range(count))
        with common.CpuMeter() as meter:
            async with anyio.create_task_group() as tg:
                for _ in range(limit):
                    tg.start_soon(post, jobs)
    return meter.client_util * meter.wall / max(1, count)


def main() -> None:
    """Parse arguments, run, print the table and the ratio."""
    parser = common.parser(__doc__.splitlines()[0])
    parser.add_argument("--visitors", type=int, default=1000, help="N")
    parser.add_argument("--lifetime", type=float, default=120.0, help="token lifetime, s")
    parser.add_argument("--lifetimes", type=float, default=2.0, help="steady phase, lifetimes")
    parser.add_argument("--max-connections", type=int, default=100, help="HTTP pool size")
    parser.add_argument("--max-concurrent-starts", type=int, default=20)
    parser.add_argument("--requests-per-lifetime", type=float, default=1.0, help="0: none")
    parser.add_argument("--no-realtime", action="store_true", help="visitors without sockets")
    parser.add_argument("--ramp-timeout", type=float, default=600.0, help="s to wait for all up")
    parser.add_argument("--settle", type=float, default=5.0, help="s after the ramp, unmeasured")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--gc-freeze", action="store_true", help="gc.freeze() after the ramp")
    parser.add_argument(
        "--gc-freeze-every",
        type=int,
        default=0,
        metavar="K",
        help="gc.freeze() every K visitors up in the ramp, gc.unfreeze() after it",
    )
    parser.add_argument(
        "--gc-off-in-ramp", action="store_true", help="gc.disable() in the ramp, collect after"
    )
    parser.add_argument(
        "--max-wall", type=float, default=1800.0, help="s; then report what there is and exit"
    )
    args = parser.parse_args()
    n = args.visitors
    fds = common.raise_fd_limit(3 * n + 1024)
    policy = RenewalPolicy()
    low = policy.soft_offset(args.lifetime, 1.0)
    high = policy.soft_offset(args.lifetime, 0.0)
    first_low = high - _first_spread(policy, args.lifetime)
    common.print_header(
        "bench_scale: N pooled visitors with short tokens",
        backend=args.backend,
        visitors=n,
        lifetime=f"{args.lifetime:g} s (renewal {low:g}-{high:g} s after issue; the first"
        f" after the start {first_low:g}-{high:g} s)",
        run=f"ramp, then {args.lifetimes:g} lifetimes; realtime={not args.no_realtime}",
        pool=f"max_connections={args.max_connections},"
        f" max_concurrent_starts={args.max_concurrent_starts}",
        traffic=f"{args.requests_per_lifetime:g} GET per visitor per lifetime",
        fd_limit=fds,
        gc_freeze=args.gc_freeze,
        gc_freeze_every=args.gc_freeze_every or "no",
        gc_off_in_ramp=args.gc_off_in_ramp,
    )
    with common.ServerProcess("--fake", "--token-lifetime", f"{args.lifetime:g}") as server:
        base = common.run(lambda: baseline(server, 2000, 10), args.backend)

        def report(result: dict[str, Any]) -> None:
            print_report(args, result, base)
            sys.stdout.flush()
            # Not closing the pool (see run()); the server child exits when its stdin
            # closes with this process.
            os._exit(0)

        common.run(lambda: run(args, server, report), args.backend)


def _first_spread(policy: RenewalPolicy, lifetime: float) -> float:
    """The jitter span of the first renewal after a start (older versions: the only one)."""
    first_spread = getattr(policy, "first_spread", None)
    if first_spread is not None:
        return float(first_spread(lifetime))
    return policy.soft_offset(lifetime, 0.0) - policy.soft_offset(lifetime, 1.0)


def print_report(args: Any, result: dict[str, Any], base: float) -> None:
    """Print the table, the verdict and the ratio."""
    n = args.visitors
    policy = RenewalPolicy()
    spread = max(1.0, _first_spread(policy, args.lifetime))
    renewals = sorted(t for times in result["saves"].values() for t in times[1:])
    logs: dict[str, int] = result["logs"]
    failed_renewals = sum(v for k, v in logs.items() if "renewal failed" in k)
    failed_sessions = sum(v for k, v in logs.items() if "session failed" in k)
    # A token that lived out its lifetime without a renewal (its visitor was up).
    end = result["end"]
    lapsed = 0
    for times in result["saves"].values():
        marks = [*times, end]
        lapsed += sum(1 for a, b in itertools.pairwise(marks) if b - a > args.lifetime)
    steady_from, steady_to = result["steady"]
    steady = [t for t in renewals if steady_from <= t < steady_to]
    peak = max_in_window(renewals, 1.0)
    bound = n / spread
    up = result["up"]
    cpu_per_visitor = result["cpu"] / max(1, up)
    steady_seconds = steady_to - steady_from
    sdk_cpu_per_renewal = result["cpu"] * steady_seconds / max(1, len(steady))
    rows = [
        ["visitors up", up, f"of {n}; {result['up_at_ramp_end']:,} at ramp end"],
        ["time to all up, s", result["ramp"], "yes" if result["all_up"] else "NOT all up"],
        ["failed starts", sum(result["start_errors"].values()), str(result["start_errors"])],
        ["failed renewals", failed_renewals + failed_sessions, f"{failed_sessions} sessions"],
        ["tokens lapsed unrenewed", lapsed, "gap between tokens > lifetime"],
        ["expired-token requests", result["fake"]["expired"], "seen by the fake"],
        ["renewals", len(renewals), f"{len(steady):,} in the steady phase"],
        ["peak renewals in 1 s", peak, f"N/spread = {bound:.1f}/s ({peak / bound:.2f}x)"],
        ["mean renewals/s, steady", len(steady) / max(1e-9, steady_seconds), ""],
        ["idle CPU, cores", result["cpu"], f"server {result['server_cpu']:.2f}"],
        ["idle CPU per visitor, us/s", cpu_per_visitor * 1e6, "CPU-us per wall second"],
        ["RSS per visitor, KiB", result["rss_per_visitor"], "after the ramp"],
        ["tasks per visitor", result["tasks_per_visitor"], args.backend],
        ["GC time, s", result["gc_total"], f"{result['gc_steady']:.2f} s steady"],
        [
            "GC share of the ramp",
            result["gc_ramp"] / max(1e-9, result["ramp"]),
            f"{result['gc_ramp']:.2f} s of {result['ramp']:.1f} s;"
            f" frozen at its end: {result.get('frozen_in_ramp', 0):,}",
        ],
        ["GC collections", sum(result["gc_collections"].values()), str(result["gc_collections"])],
        [
            "GC s by generation",
            "",
            ", ".join(f"{g}: {t:.2f}" for g, t in sorted(result["gc_seconds"].items())),
        ],
    ]
    common.print_table(["", "value", "note"], rows)
    print(f"SDK warnings/errors: {logs or 'none'}")
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    frozen = result.get("frozen")
    print(f"load average at the end: {load}; gc.freeze(): {frozen if frozen else 'no'}")
    print(f"traffic: {result['traffic']}; fake: {result['fake']}")
    print(
        f"steady CPU per renewal: SDK {sdk_cpu_per_renewal * 1e3:.2f} ms (incl. sockets and"
        f" traffic), bare httpx auth POST {base * 1e3:.2f} ms"
    )
    ok = (
        failed_renewals + failed_sessions == 0
        and result["fake"]["expired"] == 0
        and lapsed == 0
        and result["all_up"]
        and not result["start_errors"]
        and not result.get("cut")
    )
    print(
        "0 failed renewals, 0 expired-token requests, all up, run complete:"
        f" {'yes' if ok else 'NO'}"
    )
    common.ratio_line("peak_renewals_per_s_over_n_per_spread", peak / bound, "<=", 3.0, require=ok)


if __name__ == "__main__":
    main()
