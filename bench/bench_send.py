"""(c) Send path: ``chat.send`` per second vs bare httpx POSTs with the same header and pool.

One visitor, one chat. The SDK side calls ``await chat.send(text)`` from ``--concurrency``
tasks; the baseline POSTs the same JSON body to the same URL with the same
``Authorization``, ``Accept`` and ``User-Agent`` headers, through the very same
``httpx.AsyncClient`` (the one the visitor uses: same pool, same limits, warm
connections), from the same number of tasks, and decodes the JSON answer. Runs alternate.

The server is ``FakeGiosg``'s HTTP app (uvicorn + Starlette, storing every message) in
its own process (``bench/_server.py --fake``), served from a ``TCP_NODELAY`` socket
(``--fake-mode shipped`` uses ``FakeGiosg.start()`` as is: ~40 ms per keep-alive
request, see ``bench/README.md``). The server's CPU time is sampled around every run:
its capacity is the request rate divided by its CPU utilisation; when that is well above
what the clients reach, and the clients use a full core, the clients are the bottleneck.
The ratio is taken at the highest concurrency (client-bound); lower levels are shown.
Target: SDK / bare >= 0.9.
"""

from __future__ import annotations

import json
import time
from typing import Any

import _common as common
import anyio
import httpx

from giosg_visitor import Timeouts, Visitor


TARGET = 0.9


class Run:
    """One timed run: messages sent, wall and CPU seconds."""

    def __init__(self, *, sent: int, wall: float, cpu: float, server_cpu: float) -> None:
        self.sent = sent
        self.wall = wall
        self.cpu = cpu
        self.server_cpu = server_cpu

    @property
    def rate(self) -> float:
        """Messages per wall-clock second."""
        return self.sent / self.wall

    @property
    def cpu_rate(self) -> float:
        """Messages per client CPU-second."""
        return self.sent / self.cpu

    @property
    def client_util(self) -> float:
        """Client CPU seconds per wall second."""
        return self.cpu / self.wall

    @property
    def server_util(self) -> float:
        """Server CPU seconds per wall second."""
        return self.server_cpu / self.wall


def make_client() -> httpx.AsyncClient:
    """An ``httpx.AsyncClient`` configured exactly like the one a Visitor makes itself."""
    from giosg_visitor._http import USER_AGENT

    return httpx.AsyncClient(
        timeout=Timeouts().httpx_timeout(),
        follow_redirects=False,
        headers={"User-Agent": USER_AGENT},
    )


async def timed(
    server: common.ServerProcess | None, count: int, concurrency: int, send: Any
) -> Run:
    """Send ``count`` messages from ``concurrency`` tasks with ``send(i)``."""
    per_task = count // concurrency

    async def worker(offset: int) -> None:
        for i in range(per_task):
            await send(offset + i)

    server_cpu0 = server.cpu_seconds() if server is not None else 0.0
    wall0, cpu0 = time.perf_counter(), time.process_time()
    async with anyio.create_task_group() as tg:
        for t in range(concurrency):
            tg.start_soon(worker, t * per_task)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    server_cpu = (server.cpu_seconds() - server_cpu0) if server is not None else 0.0
    return Run(sent=per_task * concurrency, wall=wall, cpu=cpu, server_cpu=server_cpu)


async def bare_sender(client: httpx.AsyncClient, url: str, authorization: str) -> Any:
    """The baseline: ``client.post`` with the SDK's headers and body; decode the answer."""
    headers = {"Accept": "application/json", "Authorization": authorization}

    async def send(i: int) -> None:
        response = await client.post(
            url, json={"type": "msg", "message": f"hello {i}"}, headers=headers
        )
        if response.status_code != 201:
            raise RuntimeError(f"POST failed: {response.status_code}")
        json.loads(response.content)

    return send


async def authorization_of(visitor: Visitor) -> str:
    """The ``Authorization`` header the visitor's auth puts on a request (public API)."""
    request = httpx.Request("GET", str(visitor.base_url))
    flow = visitor.auth.async_auth_flow(request)
    signed = await flow.__anext__()
    await flow.aclose()
    return signed.headers["Authorization"]


def main() -> None:
    """Parse arguments, run the alternating measurements, print tables and the ratio."""
    parser = common.parser(__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000, help="messages per run")
    parser.add_argument(
        "--concurrency", type=str, default="1,10", help="comma-separated task counts"
    )
    parser.add_argument("--repeats", type=int, default=5, help="runs of each client")
    parser.add_argument(
        "--fake-mode",
        choices=["nodelay", "shipped"],
        default="nodelay",
        help="how bench/_server.py serves FakeGiosg (see its --fake-mode)",
    )
    args = parser.parse_args()
    levels = [int(x) for x in args.concurrency.split(",")]
    server_args = ["--fake", "--fake-mode", args.fake_mode]

    with common.ServerProcess(*server_args) as server:
        common.print_header(
            "bench_send: chat.send per second vs bare httpx POSTs",
            backend=args.backend,
            server=f"FakeGiosg HTTP app in its own process (--fake-mode {args.fake_mode})",
            messages_per_run=args.messages,
            concurrency=", ".join(map(str, levels)),
            repeats=f"{args.repeats} (alternating, order flipped every repeat)",
            http_client="one httpx.AsyncClient shared by both (the Visitor's defaults)",
        )

        async def session() -> dict[int, tuple[list[Run], list[Run]]]:
            results: dict[int, tuple[list[Run], list[Run]]] = {}
            async with (
                make_client() as client,
                Visitor(
                    common.ORG_ID, base_url=server.base_url, http_client=client, realtime=False
                ) as visitor,
            ):
                chat = await visitor.start_chat(common.ROOM_ID)
                authorization = await authorization_of(visitor)
                url = (
                    f"{server.base_url}/api/v5/public/visitors/{visitor.visitor_id}"
                    f"/chats/{chat.id}/messages"
                )
                bare = await bare_sender(client, url, authorization)

                async def sdk(i: int) -> None:
                    await chat.send(f"hello {i}")

                for conc in levels:
                    # Warm-up: fill the pool to this concurrency on both paths.
                    await timed(None, conc * 20, conc, bare)
                    await timed(None, conc * 20, conc, sdk)
                    bares: list[Run] = []
                    sdks: list[Run] = []
                    for i in range(args.repeats):
                        pair = [(bares, bare), (sdks, sdk)]
                        for target, fn in pair if i % 2 == 0 else pair[::-1]:
                            target.append(await timed(server, args.messages, conc, fn))
                    results[conc] = (bares, sdks)
            return results

        results = common.run(session, args.backend)

    rows: list[list[object]] = []
    ratios_at: dict[int, float] = {}
    capacity_at: dict[int, float] = {}
    for conc, (bares, sdks) in results.items():
        wall = [s.rate / b.rate for b, s in zip(bares, sdks, strict=True)]
        cpu = [s.cpu_rate / b.cpu_rate for b, s in zip(bares, sdks, strict=True)]
        ratios_at[conc] = common.median(wall)
        # Requests the server could answer per second of its CPU (it is single-threaded).
        capacity_at[conc] = common.median([r.sent / r.server_cpu for r in bares + sdks])
        rows.append(
            [
                f"concurrency {conc}",
                common.median([b.rate for b in bares]),
                common.median([s.rate for s in sdks]),
                common.median(wall),
                common.median([b.cpu_rate for b in bares]),
                common.median([s.cpu_rate for s in sdks]),
                common.median(cpu),
                f"{common.median([b.client_util for b in bares]):.2f}"
                f"/{common.median([s.client_util for s in sdks]):.2f}",
                max(r.server_util for r in bares + sdks),
                capacity_at[conc],
            ]
        )
    common.print_table(
        [
            "",
            "bare/s",
            "sdk/s",
            "sdk/bare",
            "bare/cpu-s",
            "sdk/cpu-s",
            "sdk/bare cpu",
            "client util b/s",
            "server util",
            "server capacity/s",
        ],
        rows,
    )
    top = max(levels)
    fastest = max(b.rate for b in results[top][0])
    headroom = capacity_at[top] / fastest
    print(
        f"At concurrency {top} the server could answer ~{capacity_at[top]:,.0f} requests/s"
        f" (rate / its CPU utilisation), {headroom:.1f}x the fastest client run: the server"
        f" was {'NOT ' if headroom > 1.5 else ''}the bottleneck."
    )
    util = common.median([r.client_util for r in results[top][0] + results[top][1]])
    if util < 0.5:
        print(
            f"WARNING: the clients used only {util:.2f} of a core: the runs were bound by"
            " latency (e.g. --fake-mode shipped: ~40 ms per keep-alive request), not by"
            " CPU on either side; the ratio says little about the SDK's overhead."
        )
    print(
        "sdk/bare: median ratio of wall-clock rates of adjacent runs; sdk/bare cpu: per"
        " client CPU-second (robust to other load on the machine)."
    )
    common.ratio_line("send_sdk_over_bare", ratios_at[top], ">=", TARGET)


if __name__ == "__main__":
    main()
