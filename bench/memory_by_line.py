"""Where a connected visitor's memory goes: tracemalloc by source line.

Opens 5 warm-up connections, then ``--count`` more of one kind against the bench server
in another process (``bench/_server.py --fake``), each subscribed to one channel with a
task consuming it, and prints the allocations made for them, per connection, grouped by
the line that made them (the most recent frame in the SDK or a library). Not a ratio:
a map for deciding what to cut; ``bench_memory.py`` measures the totals.

    .venv/bin/python bench/memory_by_line.py [--kind connection|pool] [--count 300] [--top 40]

It then prints the objects the garbage collector tracks, per connection, by type: a full
collection walks each of them, so their number (not their bytes) sets what one costs.
"""

from __future__ import annotations

import argparse
import gc
import os
import tracemalloc
import types
from collections import Counter
from collections.abc import Awaitable, Callable

import _common as common
import anyio

from giosg_visitor import MemoryStore
from giosg_visitor.pool import VisitorPool
from giosg_visitor.realtime import RealtimeConnection


CHANNEL = "/api/v5/public/bench"


def where(frame: tracemalloc.Frame) -> str:
    name = frame.filename
    for marker in ("site-packages/", "/lib/python3"):
        if marker in name:
            name = name.split(marker, 1)[1]
    return f"{name.removeprefix(os.getcwd() + '/')}:{frame.lineno}"


def kind_of(obj: object) -> str:
    """A tracked object's type; for a function, method or coroutine, also its code's name."""
    kind = type(obj).__qualname__
    if isinstance(obj, types.MethodType):
        obj = obj.__func__
    if isinstance(obj, types.FunctionType):
        return f"{kind} {obj.__code__.co_qualname}"
    if isinstance(obj, types.CoroutineType):
        return f"{kind} {obj.cr_code.co_qualname}"
    return kind


async def main(server: common.ServerProcess, args: argparse.Namespace) -> None:
    common.raise_fd_limit(args.count * 2 + 200)
    ready = 0
    warm, all_ready = anyio.Event(), anyio.Event()
    total = args.count + 5

    def one_ready() -> None:
        nonlocal ready
        ready += 1
        if ready == 5:
            warm.set()
        if ready == total:
            all_ready.set()

    async with VisitorPool(common.ORG_ID, store=MemoryStore(), base_url=server.base_url) as pool:

        async def pooled(index: int) -> None:
            visitor = await pool.get(f"user-{index}")
            subscription = visitor.subscribe(CHANNEL)
            await subscription.wait_subscribed()
            one_ready()
            async for _ in subscription:
                pass

        async def connection(index: int) -> None:
            async with RealtimeConnection(
                socket_url=server.router_url, token_provider=common.static_token_provider()
            ) as conn:
                subscription = conn.subscribe(CHANNEL)
                await subscription.wait_subscribed()
                one_ready()
                async for _ in subscription:
                    pass

        opener: Callable[[int], Awaitable[None]] = pooled if args.kind == "pool" else connection
        async with anyio.create_task_group() as tg:
            for index in range(5):
                tg.start_soon(opener, 100_000 + index)
            await warm.wait()
            await anyio.sleep(0.5)
            gc.collect()
            tracked_before = Counter(map(kind_of, gc.get_objects()))
            tracemalloc.start(1)
            before = tracemalloc.take_snapshot()
            for index in range(args.count):
                tg.start_soon(opener, index)
            await all_ready.wait()
            await anyio.sleep(1.0)
            gc.collect()
            after = tracemalloc.take_snapshot()
            ignore = [tracemalloc.Filter(False, tracemalloc.__file__)]
            stats = after.filter_traces(ignore).compare_to(before.filter_traces(ignore), "lineno")
            per = args.count
            print(
                f"{args.kind}: {sum(s.size_diff for s in stats) / per / 1024:.1f} KiB traced "
                f"per {args.kind} ({args.count}, {args.backend})"
            )
            print(f"{'B each':>8}  {'objects':>7}  line")
            for stat in stats[: args.top]:
                print(
                    f"{stat.size_diff / per:8.0f}  {stat.count_diff / per:7.2f}  "
                    f"{where(stat.traceback[0])}"
                )
            tracemalloc.stop()
            tracked = Counter(map(kind_of, gc.get_objects()))
            tracked.subtract(tracked_before)
            print(f"\nGC-tracked objects per {args.kind}: {sum(tracked.values()) / per:.1f}")
            for name, count in tracked.most_common(args.top):
                if count / per >= 0.5:
                    print(f"{count / per:8.1f}  {name}")
            # Closing hundreds of sockets politely measures nothing.
            os._exit(0)


if __name__ == "__main__":
    parser = common.parser(__doc__.splitlines()[0])
    parser.add_argument("--kind", choices=["connection", "pool"], default="connection")
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--top", type=int, default=40)
    arguments = parser.parse_args()
    with common.ServerProcess("--fake") as bench_server:
        common.run(lambda: main(bench_server, arguments), arguments.backend)
