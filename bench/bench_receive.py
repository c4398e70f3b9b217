"""(a) Receive path: change notifications per second delivered to the app.

The SDK (a :class:`~giosg_visitor.realtime.RealtimeConnection` subscription, consumed with
``async for``; ``--via visitor`` uses ``Visitor.subscribe``) against a bare websockets
client that only reads and ``json.loads`` the same frames from the same server.

The server (``bench/_server.py``, its own process) answers the ``sub`` and then writes
``--frames`` pre-serialised ``["changed", [channel, {...}]]`` frames to the socket in one
call; its own send rate is measured alone with a raw TCP sink (no WebSocket parsing), to
show it is far above what either client can take.

Each run opens a fresh connection, subscribes, and times from the subscription's
acknowledgement to the last notification consumed. Baseline and SDK runs alternate.
Target: SDK / bare >= 0.85.
"""

from __future__ import annotations

import base64
import json
import os
import time
from typing import Any
from urllib.parse import urlsplit

import _common as common
import anyio
from _server import changed_frame
from websockets.frames import Frame, Opcode

from giosg_visitor.realtime import Change, RealtimeConnection, Subscription


TARGET = 0.85


def _blast_channel(frames: int, *, close: bool = False) -> str:
    return f"/bench/blast/{frames}" + ("/close" if close else "")


def _sub(channel: str, query: int = 1) -> str:
    return json.dumps(["sub", [channel, "bench-token"], {"query": query}])


async def run_sink(server: common.ServerProcess, frames: int) -> float:
    """The server's send rate alone: a raw TCP reader that does no WebSocket parsing."""
    url = urlsplit(server.ws_url)
    assert url.hostname is not None
    assert url.port is not None
    stream = await anyio.connect_tcp(url.hostname, url.port)
    async with stream:
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET {url.path} HTTP/1.1\r\nHost: {url.netloc}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        )
        await stream.send(request.encode())
        head = b""
        while b"\r\n\r\n" not in head:
            head += await stream.receive(65536)
        frame = Frame(Opcode.TEXT, _sub(_blast_channel(frames, close=True)).encode())
        started = time.perf_counter()
        await stream.send(frame.serialize(mask=True))
        received = 0
        try:
            while True:
                received += len(await stream.receive(1 << 20))
        except (anyio.EndOfStream, anyio.BrokenResourceError):
            pass
        elapsed = time.perf_counter() - started
    return frames / elapsed


class Run:
    """One timed run: notifications delivered, wall and CPU seconds, losses."""

    def __init__(
        self, *, delivered: int, wall: float, cpu: float, server_cpu: float, dropped: int = 0
    ) -> None:
        self.delivered = delivered
        self.wall = wall
        self.cpu = cpu
        self.server_cpu = server_cpu
        self.dropped = dropped

    @property
    def rate(self) -> float:
        """Notifications delivered per wall-clock second."""
        return self.delivered / self.wall

    @property
    def cpu_rate(self) -> float:
        """Notifications delivered per CPU-second of the client (contention-proof)."""
        return self.delivered / self.cpu

    @property
    def client_util(self) -> float:
        """Client CPU seconds per wall second (about 1.0: the client is CPU-bound)."""
        return self.cpu / self.wall

    @property
    def server_util(self) -> float:
        """Server CPU seconds per wall second while the client read."""
        return self.server_cpu / self.wall


class _Timer:
    """Wall, client CPU and server CPU between ``start()`` and ``stop()``."""

    def __init__(self, server: common.ServerProcess) -> None:
        self._server = server

    def start(self) -> None:
        self._wall = time.perf_counter()
        self._cpu = time.process_time()
        self._server_cpu = self._server.cpu_seconds()

    def stop(self, delivered: int, dropped: int = 0) -> Run:
        wall = time.perf_counter() - self._wall
        cpu = time.process_time() - self._cpu
        server_cpu = self._server.cpu_seconds() - self._server_cpu
        return Run(delivered=delivered, wall=wall, cpu=cpu, server_cpu=server_cpu, dropped=dropped)


async def run_bare(server: common.ServerProcess, frames: int, backend: str) -> Run:
    """A bare websockets client: read each frame and ``json.loads`` it."""
    connect: Any
    if backend == "trio":
        from websockets.trio.client import connect
    else:
        from websockets.asyncio.client import connect
    timer = _Timer(server)
    async with connect(server.ws_url) as ws:
        await ws.send(_sub(_blast_channel(frames)))
        json.loads(await ws.recv())  # the __qr__ ack
        timer.start()
        for _ in range(frames):
            json.loads(await ws.recv())
        run = timer.stop(frames)
    return run


async def _consume(subscription: Subscription, frames: int, timer: _Timer) -> Run:
    await subscription.wait_subscribed()
    timer.start()
    delivered = 0
    async for event in subscription:
        if isinstance(event, Change):
            delivered += 1
        if delivered + subscription.dropped >= frames:
            break
    return timer.stop(delivered, subscription.dropped)


async def run_sdk(server: common.ServerProcess, frames: int) -> Run:
    """The SDK: a RealtimeConnection subscription consumed with ``async for``."""
    async with (
        RealtimeConnection(
            socket_url=server.router_url, token_provider=common.static_token_provider()
        ) as connection,
        connection.subscribe(_blast_channel(frames)) as subscription,
    ):
        return await _consume(subscription, frames, _Timer(server))


async def run_visitor(server: common.ServerProcess, frames: int) -> Run:
    """The SDK through a full Visitor (auth by FakeGiosg, socket to the bench router)."""
    from giosg_visitor import Visitor

    async with (
        Visitor(common.ORG_ID, base_url=server.base_url) as visitor,
        visitor.subscribe(_blast_channel(frames)) as subscription,
    ):
        return await _consume(subscription, frames, _Timer(server))


def main() -> None:
    """Parse arguments, run the alternating measurements, print tables and the ratio."""
    parser = common.parser(__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=100_000, help="notifications per run")
    parser.add_argument("--repeats", type=int, default=7, help="runs of each client")
    parser.add_argument(
        "--via",
        choices=["connection", "visitor"],
        default="connection",
        help="SDK entry point: RealtimeConnection, or a full Visitor (auth via FakeGiosg)",
    )
    parser.add_argument(
        "--decoder",
        choices=["default", "stdlib"],
        default="default",
        help="the SDK's JSON decoder: its default (orjson, json.loads where they differ),"
        " or json.loads like the baseline (to show what the decoder contributes)",
    )
    args = parser.parse_args()
    if args.decoder == "stdlib":
        from giosg_visitor.realtime import protocol

        protocol._decode = json.loads
    frames: int = args.frames
    server_args = ["--fake"] if args.via == "visitor" else []
    sdk_fn = run_visitor if args.via == "visitor" else run_sdk

    with common.ServerProcess(*server_args) as server:
        common.print_header(
            "bench_receive: change notifications per second delivered to the app",
            backend=args.backend,
            frames_per_run=f"{frames:,} (~{len(changed_frame('/bench/blast/1', 0))} B each)",
            repeats=f"{args.repeats} (bare and SDK alternate, order flipped every repeat)",
            sdk=f"{args.via} (async for over a subscription, counting Change events)",
            sdk_decoder=(
                "json.loads (--decoder stdlib)"
                if args.decoder == "stdlib"
                else "the SDK's default (orjson; json.loads where they differ)"
            ),
            baseline="websockets recv() + json.loads (always)",
            server="bench/_server.py in its own process; frames pre-serialised, one write",
        )

        async def session() -> tuple[list[float], list[Run], list[Run]]:
            sinks: list[float] = []
            bares: list[Run] = []
            sdks: list[Run] = []
            # Warm-up: the server serialises each channel's frames once, both clients get
            # one untimed run.
            await run_sink(server, frames)
            await run_bare(server, frames, args.backend)
            await sdk_fn(server, frames)
            for i in range(args.repeats):
                sinks.append(await run_sink(server, frames))
                if i % 2 == 0:
                    bares.append(await run_bare(server, frames, args.backend))
                    sdks.append(await sdk_fn(server, frames))
                else:
                    sdks.append(await sdk_fn(server, frames))
                    bares.append(await run_bare(server, frames, args.backend))
            return sinks, bares, sdks

        sinks, bares, sdks = common.run(session, args.backend)

    rows: list[list[object]] = []
    wall_ratios = [s.rate / b.rate for b, s in zip(bares, sdks, strict=True)]
    cpu_ratios = [s.cpu_rate / b.cpu_rate for b, s in zip(bares, sdks, strict=True)]
    for i, (sink, bare, sdk) in enumerate(zip(sinks, bares, sdks, strict=True)):
        rows.append(
            [
                f"run {i + 1}",
                sink,
                bare.rate,
                sdk.rate,
                wall_ratios[i],
                bare.cpu_rate,
                sdk.cpu_rate,
                cpu_ratios[i],
                f"{bare.client_util:.2f}/{sdk.client_util:.2f}",
                max(bare.server_util, sdk.server_util),
                f"{100 * sdk.dropped / frames:.1f} %",
            ]
        )
    rows.append(
        [
            "median",
            common.median(sinks),
            common.median([b.rate for b in bares]),
            common.median([s.rate for s in sdks]),
            common.median(wall_ratios),
            common.median([b.cpu_rate for b in bares]),
            common.median([s.cpu_rate for s in sdks]),
            common.median(cpu_ratios),
            "",
            "",
            f"{100 * common.median([s.dropped for s in sdks]) / frames:.1f} %",
        ]
    )
    common.print_table(
        [
            "",
            "server alone/s",
            "bare/s",
            "sdk/s",
            "sdk/bare",
            "bare/cpu-s",
            "sdk/cpu-s",
            "sdk/bare cpu",
            "cpu util b/s",
            "server util",
            "sdk dropped",
        ],
        rows,
    )
    server_util = max(max(r.server_util for r in bares), max(r.server_util for r in sdks))
    lowest_util = min(min(r.client_util for r in bares), min(r.client_util for r in sdks))
    headroom = common.median(sinks) / common.median([b.rate for b in bares])
    print(
        f"The server alone sends {headroom:.0f}x"
        f" what the bare client reads and used at most {server_util:.2f} of a core during"
        " the client runs: it is NOT the bottleneck; the clients are CPU-bound"
        f" (lowest client CPU utilisation {lowest_util:.2f})."
    )
    print(
        "sdk/bare is the ratio of wall-clock rates of adjacent runs; sdk/bare cpu the ratio"
        " of rates per client CPU-second (the same on an idle machine, robust to other load)."
    )
    if any(s.dropped for s in sdks):
        print(
            "The SDK dropped notifications (counted in its stats, Gap markers queued): its"
            " read loop filled the subscription buffer before the consumer ran."
        )
    if lowest_util < 0.9:
        print("NOTE: a client got < 0.9 of a core: the machine was busy; trust the cpu ratio.")
    common.ratio_line("receive_sdk_over_bare", common.median(wall_ratios), ">=", TARGET)


if __name__ == "__main__":
    main()
