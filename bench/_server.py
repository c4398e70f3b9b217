"""The benchmark server process: a minimal message router, optionally with ``FakeGiosg``.

Run by the benchmarks as a child process (``python bench/_server.py [options]``), so that
its CPU and memory are not the client's: on a 2-core machine the server gets one core and
the measured client the other. It prints one JSON line with its URLs, then serves until
its stdin closes.

The router speaks just enough of the message-router protocol (raw WebSocket framing, one
JSON message per text frame) for every benchmark:

* ``["sub", [channel, token], {"query": n}]`` is answered with ``["__qr__", [[]],
  {"query": n}]`` (after ``--ack-delay`` seconds, without holding up later frames);
* a ``sub`` to ``/bench/blast/<n>`` is answered, then followed at once by ``n``
  pre-generated ``["changed", [channel, {...}]]`` frames. They are serialised once per
  channel and written to the TCP transport in one call, so the server does no per-frame
  work while blasting and cannot be the bottleneck of a receive benchmark. A channel
  ending in ``/close`` half-closes the TCP connection after the last frame (for the raw sink
  that measures the server's own send rate);
* ``unsub`` is answered with ``__qr__``; ``["bench_stats", [], {}]`` is answered with
  each connection's ``sub`` frames grouped in batches (a batch ends when a ``__qr__``
  leaves: with delayed acks, frames of one batch were sent without waiting for an
  answer); anything else is ignored.

With ``--fake``, a :class:`~giosg_visitor.testing.FakeGiosg` (HTTP API on uvicorn, in a
thread of this process) serves auth and chats, and hands out this router's URL as
``socket_url``; ``--auth-delay`` adds latency to every auth response; ``GET /_bench/stats``
answers the fake's journal counts (requests, auth calls, expired-token requests).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import socket
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from websockets.asyncio.server import ServerConnection, serve
from websockets.frames import Frame, Opcode
from websockets.http11 import Request


#: The resource of every blasted notification: a chat message of realistic size.
MESSAGE_RESOURCE: dict[str, Any] = {
    "id": "",
    "chat_id": "3f5a3cfe-2b6c-4d38-9ad1-6f2b2a0b8c11",
    "type": "msg",
    "message": "Hello! I would like to know more about the pricing of your product.",
    "sender_type": "user",
    "sender_id": "0c9b6b1e-9d57-4a63-9e57-7a1c7f3b7b2e",
    "sender_public_name": "Olivia",
    "created_at": "2025-01-01T12:00:00.000Z",
    "attachments": [],
}


def changed_frame(channel: str, index: int) -> str:
    """The text of one ``changed`` notification (the fake router's frame shape)."""
    resource_id = f"msg-{index:08d}"
    body = {
        "action": "added",
        "resourceId": resource_id,
        "resource_id": resource_id,
        "resource": {**MESSAGE_RESOURCE, "id": resource_id},
        "channel": channel,
    }
    return json.dumps(["changed", [channel, body]])


def blast_frames(channel: str, count: int) -> list[str]:
    """The ``count`` notification texts sent after a ``sub`` to a blast channel."""
    return [changed_frame(channel, i) for i in range(count)]


def blast_count(channel: str) -> int | None:
    """How many frames a ``sub`` to ``channel`` asks for (``None``: not a blast channel)."""
    parts = channel.split("/")
    # "/bench/blast/<n>[/close]" -> ["", "bench", "blast", "<n>", ...]
    if len(parts) >= 4 and parts[1] == "bench" and parts[2] == "blast" and parts[3].isdigit():
        return int(parts[3])
    return None


class BenchRouter:
    """The router's state: counters, delays and the blast cache."""

    def __init__(self, *, ack_delay: float, handshake_delay: float) -> None:
        self.ack_delay = ack_delay
        self.handshake_delay = handshake_delay
        self.connections = 0
        self.subs = 0
        #: Per connection, newest last: its ``sub`` frames in batches (a new batch starts
        #: with the first ``sub`` after a ``__qr__`` left), for bench_roundtrips.
        self.history: list[dict[str, Any]] = []
        self._ids = 0
        self._blobs: dict[str, bytes] = {}

    async def process_request(self, connection: ServerConnection, request: Request) -> None:
        """Delay the handshake answer (a stand-in for network latency)."""
        if self.handshake_delay:
            await asyncio.sleep(self.handshake_delay)

    def _blob(self, channel: str, count: int) -> bytes:
        blob = self._blobs.get(channel)
        if blob is None:
            blob = b"".join(
                Frame(Opcode.TEXT, text.encode()).serialize(mask=False)
                for text in blast_frames(channel, count)
            )
            self._blobs[channel] = blob
        return blob

    async def handle(self, ws: ServerConnection) -> None:
        """Serve one client until it goes away."""
        self.connections += 1
        self._ids += 1
        loop = asyncio.get_running_loop()
        pending: set[asyncio.Task[None]] = set()
        stats: dict[str, Any] = {
            "id": self._ids,
            "opened": loop.time(),
            "subs": 0,
            "batches": [],
            "acked": True,
        }
        self.history = [*self.history[-99:], stats]
        try:
            async for text in ws:
                if not isinstance(text, str):
                    continue
                try:
                    message = json.loads(text)
                    method, args, kwargs = message[0], message[1], message[2]
                except (ValueError, IndexError, TypeError, KeyError):
                    continue
                query = kwargs.get("query") if isinstance(kwargs, dict) else None
                ack = json.dumps(["__qr__", [[]], {"query": query}])
                if method == "bench_stats":
                    await ws.send(json.dumps(["bench_stats", self.history[:-1]]))
                    continue
                if method == "sub" and args and isinstance(args[0], str):
                    self.subs += 1
                    stats["subs"] += 1
                    if stats["acked"]:
                        stats["batches"].append(0)
                        stats["acked"] = False
                    stats["batches"][-1] += 1
                    channel = args[0]
                    count = blast_count(channel)
                    if count is not None:
                        blob = self._blob(channel, count)  # before the ack: not timed
                        await ws.send(ack)
                        ws.transport.write(blob)
                        if channel.endswith("/close"):
                            ws.transport.write_eof()  # the sink reads to EOF
                    elif self.ack_delay:
                        # Delayed without blocking the frames behind it (pipelining shows).
                        task = loop.create_task(self._send_later(ws, ack, self.ack_delay, stats))
                        pending.add(task)
                        task.add_done_callback(pending.discard)
                    else:
                        stats["acked"] = True
                        await ws.send(ack)
                elif method in ("unsub", "uns"):
                    await ws.send(ack)
        except Exception:  # a client that vanished mid-frame: nothing to do
            pass
        finally:
            self.connections -= 1
            for task in pending:
                task.cancel()

    @staticmethod
    async def _send_later(
        ws: ServerConnection, text: str, delay: float, stats: dict[str, Any]
    ) -> None:
        await asyncio.sleep(delay)
        stats["acked"] = True
        try:
            await ws.send(text)
        except Exception:
            pass


def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def _wait_for_stdin_eof() -> None:
    loop = asyncio.get_running_loop()
    while await loop.run_in_executor(None, sys.stdin.readline):
        pass


async def main(args: argparse.Namespace) -> None:
    """Serve until stdin closes."""
    _raise_fd_limit()
    router = BenchRouter(ack_delay=args.ack_delay, handshake_delay=args.handshake_delay)
    async with serve(
        router.handle,
        "127.0.0.1",
        0,
        process_request=router.process_request if args.handshake_delay else None,
        compression=None,
        ping_interval=None,
        max_size=2**20,
        backlog=4096,
    ) as server:
        port = server.sockets[0].getsockname()[1]
        router_url = f"http://127.0.0.1:{port}/router"
        info: dict[str, Any] = {"router_url": router_url}
        stop_fake: Callable[[], Awaitable[None]] | None = None
        if args.fake:
            info["base_url"], stop_fake = await _start_fake(args, router_url)
        print(json.dumps(info), flush=True)
        try:
            await _wait_for_stdin_eof()
        finally:
            if stop_fake is not None:
                await stop_fake()


async def _start_fake(
    args: argparse.Namespace, router_url: str
) -> tuple[str, Callable[[], Awaitable[None]]]:
    """Serve FakeGiosg's HTTP API; return its base URL and a coroutine that stops it.

    ``--fake-mode nodelay`` (default) serves ``FakeGiosg.app`` with uvicorn on this loop
    from a socket made with ``IPPROTO_TCP``, so asyncio sets ``TCP_NODELAY`` on accepted
    connections. ``FakeGiosg.start()`` binds a socket made without it (proto 0), asyncio
    then leaves Nagle on, and every request after the first on a keep-alive connection
    waits ~40 ms for a delayed ACK; ``--fake-mode shipped`` keeps that behaviour.
    """
    import uvicorn

    from giosg_visitor.testing import FakeGiosg

    # Benchmarks measure the SDK, not the fake's room checks: every room id exists.
    fake = FakeGiosg(token_lifetime=args.token_lifetime, accept_any_room=True)
    if args.auth_delay:
        fake.inject(endpoint="auth", latency=args.auth_delay, times=10**9)
    if args.fake_mode == "shipped":
        await loop_to_thread(fake.start)
        fake.state.socket_url = router_url

        async def stop_thread() -> None:
            await loop_to_thread(fake.stop)

        return fake.base_url, stop_thread
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    base_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    fake.state.base_url = base_url
    fake.state.socket_url = router_url
    config = uvicorn.Config(
        _with_stats(fake),
        log_level="warning",
        lifespan="off",
        ws="none",
        access_log=False,
        backlog=4096,
        timeout_graceful_shutdown=1,
    )
    server = uvicorn.Server(config)
    serving = asyncio.ensure_future(server.serve(sockets=[sock]))
    while not server.started:
        if serving.done():
            serving.result()
            raise RuntimeError("uvicorn stopped before it started")
        await asyncio.sleep(0.005)

    async def stop_uvicorn() -> None:
        server.should_exit = True
        await asyncio.wait_for(serving, timeout=5)

    return base_url, stop_uvicorn


def _with_stats(fake: Any) -> Any:
    """``fake.app`` plus ``GET /_bench/stats``: the fake's journal counts, for bench_scale.

    The journal lives in this process; the benchmark asks for the counts over HTTP (works
    from either backend) instead of sharing memory.
    """
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Mount, Route

    async def stats(request: Any) -> JSONResponse:
        journal = fake.state.requests
        return JSONResponse(
            {
                "requests": len(journal),
                "auth": sum(1 for r in journal if r.token_status == "none"),
                "expired": sum(1 for r in journal if r.token_status == "expired"),
                "statuses": _count(str(r.status) for r in journal),
                "max_auth_in_flight": fake.state.max_auth_in_flight,
            }
        )

    return Starlette(routes=[Route("/_bench/stats", stats), Mount("/", app=fake.app)])


def _count(values: Any) -> dict[str, int]:
    result: dict[str, int] = {}
    for value in values:
        result[value] = result.get(value, 0) + 1
    return result


async def loop_to_thread(fn: Any) -> Any:
    """Run a blocking call in the default executor."""
    return await asyncio.get_running_loop().run_in_executor(None, fn)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ack-delay", type=float, default=0.0, help="seconds before __qr__")
    parser.add_argument("--handshake-delay", type=float, default=0.0, help="seconds")
    parser.add_argument("--fake", action="store_true", help="also serve FakeGiosg's HTTP API")
    parser.add_argument("--auth-delay", type=float, default=0.0, help="seconds (with --fake)")
    parser.add_argument("--token-lifetime", type=float, default=1800.0, help="with --fake")
    parser.add_argument(
        "--fake-mode",
        choices=["nodelay", "shipped"],
        default="nodelay",
        help="serve FakeGiosg.app with TCP_NODELAY, or FakeGiosg.start() as shipped",
    )
    asyncio.run(main(parser.parse_args()))
