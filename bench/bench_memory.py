"""(b) Idle cost: memory per connected, subscribed visitor vs a bare websockets connection.

Each measurement runs in a fresh interpreter (a child process of this script): it
imports everything, opens and closes a few warm-up connections, takes its RSS, opens K
connections, subscribes each to one channel with a task consuming it, waits until all
are confirmed, collects garbage and takes its RSS again. (RSS - RSS before) / K is the
cost of one visitor. A second child of each kind measures the same with
``tracemalloc`` (Python allocations only; RSS also counts OpenSSL, the interpreter's free
lists and arenas), for the sizes in ``--traced-sizes``.

Kinds (one channel and one consuming task each):

* ``bare``: a websockets client connection that sent ``sub`` and read the ack; its task
  reads and ``json.loads`` frames.
* ``connection``: a :class:`~giosg_visitor.realtime.RealtimeConnection` with a static
  token provider and one subscription consumed with ``async for`` (connection only: auth
  is not what is measured).
* ``pool``: a full :class:`~giosg_visitor.Visitor` from a
  :class:`~giosg_visitor.VisitorPool` (shared HTTP client, MemoryStore): token, renewal
  task, socket, its own chats subscription, plus the one consumed subscription.
* ``visitor``: a full ``Visitor`` each with its own ``httpx.AsyncClient`` (the default when
  no ``http_client`` is passed; what not sharing costs).

The server (``bench/_server.py --fake``: the bench router for sockets and FakeGiosg's
HTTP app for auth) runs in another process, so its memory is not counted.
Target: connection (and full visitor) KiB / bare KiB <= 1.3.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable, Coroutine
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from typing import Any

import _common as common
import anyio
import anyio.abc
import psutil

from giosg_visitor import MemoryStore, Visitor, VisitorPool


TARGET = 1.3
CHANNEL = "/api/v5/public/bench/idle"
KINDS = ("bare", "connection", "pool", "visitor")


# The child: K connections of one kind --------------------------------------------------


def count_tasks(backend: str) -> int:
    """Every task alive in this process's event loop (the same count on both backends)."""
    if backend == "asyncio":
        import asyncio

        return len(asyncio.all_tasks())
    import trio

    # trio keeps no task list: walk the tree from the root task through its nurseries.
    count = 0
    pending = [trio.lowlevel.current_root_task()]
    while pending:
        task = pending.pop()
        if task is None:
            continue
        count += 1
        for nursery in task.child_nurseries:
            pending.extend(nursery.child_tasks)
    return count


class Child:
    """Opens ``count`` connections of one kind and reports what they cost."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.count: int = args.count
        self.ready = 0
        self.all_ready = anyio.Event()
        self.limiter = anyio.CapacityLimiter(args.connect_concurrency)

    def _one_ready(self) -> None:
        self.ready += 1
        if self.ready == self.count:
            self.all_ready.set()

    async def bare(self, index: int, task_status: anyio.abc.TaskStatus[None]) -> None:
        """A websockets connection, subscribed, read by its own task."""
        connect: Any
        if self.args.backend == "trio":
            from websockets.trio.client import connect
        else:
            from websockets.asyncio.client import connect
        async with AsyncExitStack() as stack:
            async with self.limiter:
                ws = await stack.enter_async_context(connect(self.args.ws_url))
                await ws.send(json.dumps(["sub", [CHANNEL, "bench-token"], {"query": 1}]))
                json.loads(await ws.recv())
            task_status.started()
            async for message in ws:
                json.loads(message)

    async def connection(self, index: int, task_status: anyio.abc.TaskStatus[None]) -> None:
        """A RealtimeConnection with one subscription consumed by ``async for``."""
        from giosg_visitor.realtime import RealtimeConnection

        async with AsyncExitStack() as stack:
            async with self.limiter:
                connection = await stack.enter_async_context(
                    RealtimeConnection(
                        socket_url=self.args.router_url,
                        token_provider=common.static_token_provider(),
                    )
                )
                subscription = connection.subscribe(CHANNEL)
                await subscription.wait_subscribed()
            task_status.started()
            async for _ in subscription:
                pass

    async def visitor(
        self,
        index: int,
        task_status: anyio.abc.TaskStatus[None],
        *,
        open_visitor: Callable[[str], AbstractAsyncContextManager[Visitor]],
    ) -> None:
        """A full Visitor plus one subscription consumed by ``async for``."""
        async with AsyncExitStack() as stack:
            async with self.limiter:
                visitor = await stack.enter_async_context(open_visitor(f"user-{index}"))
                subscription = visitor.subscribe(CHANNEL)
                await subscription.wait_subscribed()
            task_status.started()
            async for _ in subscription:
                pass

    async def open_all(self, opener: Callable[..., Coroutine[Any, Any, None]]) -> None:
        """Start ``count`` hosts, each returning once its connection is subscribed."""
        async with anyio.create_task_group() as tg:

            async def host(i: int) -> None:
                await tg.start(opener, i)
                self._one_ready()

            for i in range(self.count):
                tg.start_soon(host, i)
            await self.all_ready.wait()
            await self.measure_and_report()
            # Closing thousands of sockets politely takes long and measures nothing.
            os._exit(0)

    async def measure_and_report(self) -> None:
        """Settle, collect garbage, measure, print one JSON line."""
        await anyio.sleep(1.0)
        gc.collect()
        report = {
            "rss_after": psutil.Process().memory_info().rss,
            "fds": psutil.Process().num_fds(),
            "connect_seconds": time.perf_counter() - self.started,
        }
        if tracemalloc.is_tracing():
            report["traced_after"] = tracemalloc.get_traced_memory()[0]
        report["tasks"] = count_tasks(self.args.backend)
        self.report.update(report)
        print(json.dumps(self.report), flush=True)

    async def run(self) -> None:
        """Warm up, take the baseline, open everything, measure."""
        common.raise_fd_limit(self.count * 3 + 1000)
        async with VisitorPool(
            common.ORG_ID,
            store=MemoryStore(),
            base_url=self.args.base_url,
            idle_timeout=None,
            max_concurrent_starts=self.args.connect_concurrency,
        ) as pool:

            def from_pool(key: str) -> AbstractAsyncContextManager[Visitor]:
                return pool.visitor(key)

            def own_client(key: str) -> AbstractAsyncContextManager[Visitor]:
                return Visitor(common.ORG_ID, base_url=self.args.base_url)

            openers: dict[str, Callable[..., Coroutine[Any, Any, None]]] = {
                "bare": self.bare,
                "connection": self.connection,
                "pool": lambda i, task_status: self.visitor(i, task_status, open_visitor=from_pool),
                "visitor": lambda i, task_status: self.visitor(
                    i, task_status, open_visitor=own_client
                ),
            }
            opener = openers[self.args.child]
            # Warm-up: a few of the same kind, opened and closed (lazy imports, caches).
            async with anyio.create_task_group() as tg:
                for i in range(5):
                    await tg.start(opener, 10**6 + i)
                tg.cancel_scope.cancel()
            if self.args.child == "pool":
                for i in range(5):
                    await pool.close_visitor(f"user-{10**6 + i}")
            await anyio.sleep(0.5)
            gc.collect()
            if self.args.tracemalloc:
                tracemalloc.start()
            self.report: dict[str, Any] = {
                "kind": self.args.child,
                "count": self.count,
                "rss_before": psutil.Process().memory_info().rss,
                "traced_before": tracemalloc.get_traced_memory()[0] if self.args.tracemalloc else 0,
            }
            self.started = time.perf_counter()
            with anyio.fail_after(self.args.timeout):
                await self.open_all(opener)


def child_main(args: argparse.Namespace) -> None:
    """Entry point of a measurement child."""
    common.run(Child(args).run, args.backend)


# The parent: one child per measurement ------------------------------------------------------


def measure(
    server: common.ServerProcess, kind: str, count: int, args: argparse.Namespace, *, traced: bool
) -> dict[str, Any]:
    """Run one child and return its report."""
    command = [
        sys.executable,
        __file__,
        "--child",
        kind,
        "--count",
        str(count),
        "--backend",
        args.backend,
        "--router-url",
        server.router_url,
        "--ws-url",
        server.ws_url,
        "--base-url",
        server.base_url,
        "--connect-concurrency",
        str(args.connect_concurrency),
        "--timeout",
        str(args.timeout),
    ]
    if traced:
        command.append("--tracemalloc")
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    if result.returncode != 0 or not lines:
        raise RuntimeError(f"child {kind} x {count} failed:\n{result.stderr[-3000:]}")
    return dict(json.loads(lines[-1]))


def main() -> None:
    """Parse arguments; run the children; print the tables and the ratio."""
    parser = common.parser(__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=str, default="1000,5000", help="visitors per run")
    parser.add_argument(
        "--kinds", type=str, default="bare,connection,pool", help=f"any of {','.join(KINDS)}"
    )
    parser.add_argument(
        "--traced-sizes",
        type=str,
        default="1000",
        help="sizes that also get a tracemalloc child ('' for none)",
    )
    parser.add_argument("--connect-concurrency", type=int, default=100)
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per child")
    # Child options (internal).
    parser.add_argument("--child", choices=KINDS, help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--router-url", help=argparse.SUPPRESS)
    parser.add_argument("--ws-url", help=argparse.SUPPRESS)
    parser.add_argument("--base-url", help=argparse.SUPPRESS)
    parser.add_argument("--tracemalloc", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child_main(args)
        return

    sizes = [int(x) for x in args.sizes.split(",")]
    kinds = [k for k in args.kinds.split(",") if k]
    for required in ("connection", "bare"):
        if required not in kinds:
            kinds.insert(0, required)
    common.raise_fd_limit(max(sizes) * 3 + 1000)
    started = time.perf_counter()
    with common.ServerProcess("--fake") as server:
        common.print_header(
            "bench_memory: memory per connected, subscribed visitor",
            backend=args.backend,
            sizes=", ".join(f"{s:,}" for s in sizes),
            kinds=", ".join(kinds),
            method="one fresh child process per row; RSS delta / K",
            tracemalloc=f"in a second child, for sizes {args.traced_sizes or 'none'}",
            server="bench/_server.py --fake in its own process (not counted)",
        )
        results: dict[tuple[str, int], dict[str, Any]] = {}
        for size in sizes:
            for kind in kinds:
                report = measure(server, kind, size, args, traced=False)
                if str(size) in args.traced_sizes.split(","):
                    traced = measure(server, kind, size, args, traced=True)
                    report["traced"] = traced["traced_after"] - traced["traced_before"]
                results[(kind, size)] = report
                server_rss = server.process.memory_info().rss if server.process else 0
                report["server_rss"] = server_rss

    rows: list[list[object]] = []
    ratios: list[tuple[str, int, float]] = []
    for size in sizes:
        bare = results[("bare", size)]
        bare_kib = (bare["rss_after"] - bare["rss_before"]) / size / 1024
        bare_traced = bare.get("traced", 0) / size / 1024
        for kind in kinds:
            report = results[(kind, size)]
            kib = (report["rss_after"] - report["rss_before"]) / size / 1024
            traced = report.get("traced", 0) / size / 1024
            ratio = kib / bare_kib
            if kind != "bare":
                ratios.append((kind, size, ratio))
            rows.append(
                [
                    f"{size:,} x {kind}",
                    kib,
                    ratio,
                    traced if traced else "-",
                    (traced / bare_traced) if traced and bare_traced else "-",
                    report["connect_seconds"],
                    report["fds"],
                    report["tasks"] / size if "tasks" in report else "-",
                ]
            )
    common.print_table(
        [
            "",
            "RSS KiB/visitor",
            "vs bare",
            "traced KiB/visitor",
            "vs bare",
            "open s",
            "fds",
            "tasks/visitor",
        ],
        rows,
    )
    print(f"total time {time.perf_counter() - started:.0f} s")
    connection_ratios = [r for kind, _, r in ratios if kind == "connection"]
    full = [f"{kind} at {size:,}: {r:.2f}" for kind, size, r in ratios if kind != "connection"]
    if full:
        print("full visitor vs bare (RSS): " + "; ".join(full))
    common.ratio_line("memory_connection_over_bare", max(connection_ratios or [0.0]), "<=", TARGET)


if __name__ == "__main__":
    main()
