"""Client CPU per visitor start: N pooled visitors with sockets, started at once.

Starts ``--visitors`` visitors in one :class:`~giosg_visitor.VisitorPool` (its defaults)
against the bench server in another process (``bench/_server.py --fake``) and prints the
wall time until all are up and this process's CPU time per start. Not a ratio: run it
twice, before and after a change (``PYTHONPATH=<other checkout>`` for the other side),
back to back. ``bench_scale.py`` measures the whole life of such a fleet.

    .venv/bin/python bench/ramp_cpu.py [--visitors 1000] [--backend asyncio|trio]
"""

from __future__ import annotations

import argparse
import os
import time

import _common as common
import anyio

from giosg_visitor import MemoryStore
from giosg_visitor.pool import VisitorPool


async def main(server: common.ServerProcess, args: argparse.Namespace) -> None:
    common.raise_fd_limit(args.visitors * 2 + 200)
    count = args.visitors
    async with VisitorPool(common.ORG_ID, store=MemoryStore(), base_url=server.base_url) as pool:
        wall, cpu = time.perf_counter(), time.process_time()
        async with anyio.create_task_group() as tg:
            for index in range(count):
                tg.start_soon(pool.get, f"user-{index}")
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        print(
            f"{count:,} visitors up in {wall:.2f} s; client CPU {cpu:.2f} s = "
            f"{cpu / count * 1000:.2f} ms per start ({args.backend})",
            flush=True,
        )
        # Closing thousands of sockets politely measures nothing.
        os._exit(0)


if __name__ == "__main__":
    parser = common.parser(__doc__.splitlines()[0])
    parser.add_argument("--visitors", type=int, default=1000)
    arguments = parser.parse_args()
    with common.ServerProcess("--fake") as bench_server:
        common.run(lambda: main(bench_server, arguments), arguments.backend)
