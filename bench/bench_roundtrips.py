"""(d) Start-up round trips: auth + socket + N subscriptions.

Network latency is modelled by the server (``bench/_server.py``, its own process): every
auth response, every WebSocket handshake answer and every ``__qr__`` acknowledgement is
held back ``--delay`` seconds (``__qr__`` without holding up the frames behind it), so
that elapsed time / delay = request/response round trips. (TCP and TLS handshakes are not
delayed: they add the same to the SDK and the baseline.)

For N channels it runs:

* ``bare (pipelined)``: the minimum. httpx POSTs auth; websockets opens the socket; all N
  ``sub`` frames are written, then the N acks read. 3 round trips.
* ``bare (one by one)``: the same, but each ``sub`` waits for its ack (N + 2 round trips),
  to show what not pipelining costs.
* ``Visitor + subscribe_many``: ``async with Visitor(...)`` then
  ``visitor.realtime.subscribe_many(channels)``, waiting until all are confirmed.
* ``Visitor + N x subscribe``: the same with N ``visitor.subscribe()`` calls in a row.
* ``open socket + N x subscribe``: subscriptions made after the socket is open (round
  trips for the subscriptions alone; minimum 1).

The server also groups each connection's ``sub`` frames into batches: a batch ends when a
``__qr__`` leaves, so with delayed acks a batch is what the client sent without waiting
for an answer ("100" = all pipelined; "1+100" = the Visitor's own chats channel, then the
N channels; "1 x 100" = one by one).
Target: the SDK needs no more round trips than the pipelined minimum (3, or 1 for the
subscriptions alone on an open socket).
"""

from __future__ import annotations

import json
import time
from typing import Any

import _common as common
import anyio
import httpx

from giosg_visitor import Visitor
from giosg_visitor.realtime import Subscription


async def _server_stats(server: common.ServerProcess, backend: str) -> dict[str, Any]:
    """The router's record of the connection before this one."""
    connect: Any
    if backend == "trio":
        from websockets.trio.client import connect
    else:
        from websockets.asyncio.client import connect
    async with connect(server.ws_url) as ws:
        await ws.send(json.dumps(["bench_stats", [], {}]))
        history = json.loads(await ws.recv())[1]
    return dict(history[-1])


async def bare(
    server: common.ServerProcess, channels: list[str], backend: str, *, pipelined: bool
) -> dict[str, float]:
    """Auth with httpx, open a websockets socket, subscribe N channels."""
    connect: Any
    if backend == "trio":
        from websockets.trio.client import connect
    else:
        from websockets.asyncio.client import connect
    started, cpu = time.perf_counter(), time.process_time()
    async with httpx.AsyncClient() as client:
        response = await client.post(
            f"{server.base_url}/api/v5/public/orgs/{common.ORG_ID}/auth",
            json={"visitor_secret_id": None},
        )
        auth = response.json()
    authed = time.perf_counter()
    url = auth["socket_url"].replace("http://", "ws://", 1) + "/websocket"
    token = auth["access_token"]
    async with connect(url) as ws:
        opened = time.perf_counter()
        if pipelined:
            for query, channel in enumerate(channels, 1):
                await ws.send(json.dumps(["sub", [channel, token], {"query": query}]))
            for _ in channels:
                await ws.recv()
        else:
            for query, channel in enumerate(channels, 1):
                await ws.send(json.dumps(["sub", [channel, token], {"query": query}]))
                await ws.recv()
        done = time.perf_counter()
    return {
        "auth": authed - started,
        "open": opened - started,
        "total": done - started,
        "cpu": time.process_time() - cpu,
    }


async def _wait_all(subscriptions: list[Subscription]) -> None:
    for subscription in subscriptions:
        await subscription.wait_subscribed()


async def sdk(
    server: common.ServerProcess, channels: list[str], mode: str, delay: float
) -> dict[str, float]:
    """A Visitor, then N subscriptions in the given mode."""
    started, cpu = time.perf_counter(), time.process_time()
    opened: list[float] = []
    async with Visitor(common.ORG_ID, base_url=server.base_url) as visitor:
        authed = time.perf_counter()
        connection = visitor.realtime
        async with anyio.create_task_group() as tg:

            async def note_open() -> None:
                await connection.wait_connected()
                opened.append(time.perf_counter())

            tg.start_soon(note_open)
            if mode == "warm":
                await connection.wait_connected()
                # Let the Visitor's own chats subscription settle first.
                await anyio.sleep(delay * 2 + 0.05)
                started, cpu = time.perf_counter(), time.process_time()
            if mode == "many":
                subscriptions = connection.subscribe_many(channels)
            else:
                subscriptions = [visitor.subscribe(channel) for channel in channels]
            await _wait_all(subscriptions)
            done, cpu = time.perf_counter(), time.process_time() - cpu
        for subscription in subscriptions:
            await subscription.aclose()
    return {
        "auth": authed - started if mode != "warm" else 0.0,
        "open": opened[0] - started if mode != "warm" else 0.0,
        "total": done - started,
        "cpu": cpu,
    }


SCENARIOS = [
    ("bare (pipelined)", "bare-pipelined", 3),
    ("bare (one by one)", "bare-serial", None),
    ("Visitor + subscribe_many", "many", 3),
    ("Visitor + N x subscribe", "loop", 3),
    ("open socket + N x subscribe", "warm", 1),
]


def _batches(batches: list[int]) -> str:
    if len(batches) > 3 and len(set(batches)) == 1:
        return f"{batches[0]} x {len(batches)}"
    return "+".join(map(str, batches))


def main() -> None:
    """Parse arguments, run every scenario for every N, print the table and the ratio."""
    parser = common.parser(__doc__.splitlines()[0])
    parser.add_argument("--channels", type=str, default="1,10,100", help="values of N")
    parser.add_argument("--delay", type=float, default=0.1, help="seconds per response")
    parser.add_argument(
        "--serial-max", type=int, default=10, help="largest N for the one-by-one baseline"
    )
    args = parser.parse_args()
    sizes = [int(x) for x in args.channels.split(",")]
    delay: float = args.delay
    server_args = [
        "--fake",
        f"--auth-delay={delay}",
        f"--handshake-delay={delay}",
        f"--ack-delay={delay}",
    ]

    with common.ServerProcess(*server_args) as server:
        common.print_header(
            "bench_roundtrips: round trips for auth + socket + N subscriptions",
            backend=args.backend,
            delay=f"{delay * 1000:.0f} ms on every auth response, handshake answer and __qr__",
            channels=", ".join(map(str, sizes)),
        )

        async def session() -> list[list[object]]:
            rows: list[list[object]] = []
            # Warm-up (imports, first connections).
            await bare(server, ["/warm/up"], args.backend, pipelined=True)
            await sdk(server, ["/warm/up"], "many", delay)
            for n in sizes:
                channels = [f"/api/v5/public/bench/channels/{i}" for i in range(n)]
                for label, mode, minimum in SCENARIOS:
                    if mode == "bare-serial" and n > args.serial_max:
                        continue
                    if mode.startswith("bare"):
                        times = await bare(
                            server, channels, args.backend, pipelined=mode == "bare-pipelined"
                        )
                    else:
                        times = await sdk(server, channels, mode, delay)
                    stats = await _server_stats(server, args.backend)
                    # Wall time the client did not spend computing was spent waiting.
                    trips = (times["total"] - times["cpu"]) / delay
                    rows.append(
                        [
                            f"N={n}: {label}",
                            f"{times['auth'] * 1000:.0f}" if times["auth"] else "-",
                            f"{times['open'] * 1000:.0f}" if times["open"] else "-",
                            f"{times['total'] * 1000:.0f}",
                            f"{times['cpu'] * 1000:.0f}",
                            f"{trips:.2f}",
                            round(trips),
                            "-" if minimum is None else minimum,
                            stats["subs"],
                            _batches(stats["batches"]),
                        ]
                    )
            return rows

        rows = common.run(session, args.backend)

    common.print_table(
        [
            "scenario",
            "auth ms",
            "socket open ms",
            "all acked ms",
            "client cpu ms",
            "waiting/delay",
            "round trips",
            "minimum",
            "subs sent",
            "sub batches",
        ],
        rows,
    )
    worst = 0.0
    subs_alone = 0
    for row in rows:
        minimum, trips = row[7], row[6]
        if isinstance(minimum, int) and isinstance(trips, int) and "bare" not in str(row[0]):
            worst = max(worst, trips / minimum)
            if "open socket" in str(row[0]):
                subs_alone = max(subs_alone, trips)
    print(
        f"N subscriptions on an open socket: at most {subs_alone} round trip(s) for all of"
        f" them ({'pipelined' if subs_alone == 1 else 'NOT pipelined'})."
    )
    print(
        "The server only sleeps before answering (CPU ~0): it is not a bottleneck."
        " round trips = (elapsed - client CPU time) / delay, rounded."
    )
    common.ratio_line("roundtrips_sdk_over_minimum", worst, "<=", 1.0)


if __name__ == "__main__":
    main()
