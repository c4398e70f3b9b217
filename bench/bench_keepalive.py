"""(g) Keepalive cost: client CPU per ping, the SDK's keepalive vs websockets' own.

N idle connections, each subscribed to one channel, ping every ``--interval`` seconds
with the same timeout. For each kind the CPU of this process is measured over
``--seconds`` with the keepalive on and again with it off; the difference divided by the
pings sent (N / interval per second) is the CPU of one ping, pong and check.

* ``bare``: a websockets client connection (websockets' built-in keepalive: its own
  ``ping_interval`` / ``ping_timeout``) that sent ``sub`` and read the ack, its task
  reading + ``json.loads``.
* ``sdk``: a ``RealtimeConnection`` (static token) with one subscription consumed by
  ``async for``, with ``ping_interval`` / ``ping_timeout``.

Every (kind, keepalive on/off) runs in a fresh child interpreter against one router
process (``_server.py``); the order of the kinds flips every repeat.

Usage::

    .venv/bin/python bench/bench_keepalive.py [--connections 1000] [--interval 1]
        [--seconds 15] [--repeats 2] [--backend asyncio|trio]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from contextlib import AsyncExitStack
from typing import Any

import _common as common
import anyio
import psutil


CHANNEL = "/api/v5/public/bench/keepalive"


class _Opened:
    """Counts open, subscribed connections; ``all`` fires when every one is."""

    def __init__(self, wanted: int) -> None:
        self.wanted = wanted
        self.count = 0
        self.all = anyio.Event()

    def add(self) -> None:
        self.count += 1
        if self.count == self.wanted:
            self.all.set()


async def _bare(
    args: argparse.Namespace, interval: float | None, limiter: Any, opened: _Opened
) -> None:
    connect: Any
    if args.backend == "trio":
        from websockets.trio.client import connect
    else:
        from websockets.asyncio.client import connect
    async with AsyncExitStack() as stack:
        async with limiter:
            ws = await stack.enter_async_context(
                connect(args.ws_url, ping_interval=interval, ping_timeout=interval)
            )
            await ws.send(json.dumps(["sub", [CHANNEL, "bench-token"], {"query": 1}]))
            json.loads(await ws.recv())
        opened.add()
        async for message in ws:
            json.loads(message)


async def _sdk(
    args: argparse.Namespace, interval: float | None, limiter: Any, opened: _Opened
) -> None:
    from giosg_visitor.realtime import RealtimeConnection

    async with AsyncExitStack() as stack:
        async with limiter:
            connection = await stack.enter_async_context(
                RealtimeConnection(
                    socket_url=args.router_url,
                    token_provider=common.static_token_provider(),
                    ping_interval=interval,
                    ping_timeout=interval if interval is not None else 20.0,
                )
            )
            subscription = connection.subscribe(CHANNEL)
            await subscription.wait_subscribed()
        opened.add()
        async for _ in subscription:
            pass


async def _child(args: argparse.Namespace) -> dict[str, float]:
    interval = None if args.off else args.interval
    open_one = _bare if args.kind == "bare" else _sdk
    limiter = anyio.CapacityLimiter(100)
    me = psutil.Process()
    opened = _Opened(args.connections)
    async with anyio.create_task_group() as tg:
        # Each connection is opened and closed by its own task (the SDK's connection is a
        # task group: it must be left in the task that entered it).
        for _ in range(args.connections):
            tg.start_soon(open_one, args, interval, limiter, opened)
        await opened.all.wait()
        # Two rounds of pings first, so that every connection's keepalive is in its cycle.
        await anyio.sleep(2 * args.interval)
        times = me.cpu_times()
        cpu0, wall0 = times.user + times.system, time.perf_counter()
        await anyio.sleep(args.seconds)
        times = me.cpu_times()
        cpu1, wall1 = times.user + times.system, time.perf_counter()
        tg.cancel_scope.cancel()
    return {"util": (cpu1 - cpu0) / (wall1 - wall0)}


def _measure(args: argparse.Namespace, server: common.ServerProcess, kind: str, off: bool) -> float:
    command = [
        common.python(),
        __file__,
        "--child",
        "--kind",
        kind,
        "--router-url",
        server.router_url,
        "--ws-url",
        server.ws_url,
        "--connections",
        str(args.connections),
        "--interval",
        str(args.interval),
        "--seconds",
        str(args.seconds),
        "--backend",
        args.backend,
    ] + (["--off"] if off else [])
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"the {kind} run failed:\n{done.stderr[-3000:]}")
    return float(json.loads(done.stdout.strip().splitlines()[-1])["util"])


def main() -> None:
    parser = common.parser(__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--interval", type=float, default=1.0, help="ping interval = timeout, s")
    parser.add_argument("--seconds", type=float, default=15.0, help="measured time per run")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--off", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--kind", choices=["bare", "sdk"], help=argparse.SUPPRESS)
    parser.add_argument("--router-url", help=argparse.SUPPRESS)
    parser.add_argument("--ws-url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    common.raise_fd_limit(2 * args.connections + 100)
    if args.child:
        print(json.dumps(common.run(lambda: _child(args), args.backend)))
        return

    common.print_header(
        "keepalive: client CPU per ping",
        backend=args.backend,
        connections=args.connections,
        interval=f"{args.interval:g} s (pings per second: {args.connections / args.interval:,.0f})",
        measured=f"{args.seconds:g} s per run, {args.repeats} repeats",
    )
    pings_per_second = args.connections / args.interval
    per_ping: dict[str, list[float]] = {"bare": [], "sdk": []}
    rows = []
    with common.ServerProcess() as server:
        for repeat in range(args.repeats):
            kinds = ["bare", "sdk"] if repeat % 2 == 0 else ["sdk", "bare"]
            for kind in kinds:
                on = _measure(args, server, kind, off=False)
                off = _measure(args, server, kind, off=True)
                us = (on - off) / pings_per_second * 1e6
                per_ping[kind].append(us)
                rows.append([f"{repeat + 1}", kind, f"{on:.3f}", f"{off:.3f}", f"{us:.1f}"])
    common.print_table(["repeat", "kind", "cpu on", "cpu off", "us/ping"], rows)
    bare, sdk = common.median(per_ping["bare"]), common.median(per_ping["sdk"])
    print(f"median us per ping: bare {bare:.1f}, sdk {sdk:.1f}")
    # The bare client's keepalive is websockets' own: the SDK's should cost no more.
    common.ratio_line(
        "keepalive_cpu_sdk_over_bare", sdk / bare if bare > 0 else float("inf"), "<=", 1.0
    )


if __name__ == "__main__":
    sys.exit(main())
