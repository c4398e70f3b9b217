"""Cluster soak: workers are SIGKILLed while operators talk; nothing may be lost or acked twice.

Runs, each in its own process: the fake Giosg (with an operator loop), a private
redis-server (unless ``--redis`` names one), and ``--workers`` worker processes, each a
tiny bridge that consumes ``pool.inbound()`` and records every acknowledged message id
in a line-buffered log (a SIGKILL loses nothing written before it). Every
``--kill-every`` seconds a random worker is SIGKILLed and restarted at once.

At the end operators stop, the workers drain, and the script prints: messages sent by
operators, acknowledged, lost, acknowledged twice, redelivered, takeover time p50/p99
(kill -> another worker holds the lease of each of the victim's visitors), auth calls
per visitor, and sockets per visitor with an open chat. It exits 1 unless lost = 0,
acknowledged twice = 0 and every visitor has exactly one socket.

Usage (see docs/guides/scaling.md for the recorded figures)::

    scripts/cluster-soak                                   # 1,000 visitors, 10 minutes
    scripts/cluster-soak --visitors 40 --duration 45       # the short version in the tests
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import anyio


ORG_ID = "e6a08f51-c250-4074-847b-58d444dbbeb1"
ROOM_ID = "9926bdfa-56e0-11e5-b98c-6c4008c08dfe"
HERE = Path(__file__).resolve()
ROOT = HERE.parent.parent


# The fake Giosg and its operators (own process) ------------------------------------------------


def serve(args: argparse.Namespace) -> int:
    """Serve the fake; send operator messages between the ``start`` and ``stop`` files."""
    from giosg_visitor.testing import FakeGiosg

    out = Path(args.out)
    giosg = FakeGiosg(token_lifetime=args.token_lifetime, rooms=[ROOM_ID])
    giosg.start()
    (out / "server.json.tmp").write_text(json.dumps({"base_url": giosg.base_url}))
    (out / "server.json.tmp").rename(out / "server.json")
    try:
        anyio.run(_operate, giosg, out, args.rate)
    finally:
        giosg.stop()
    return 0


async def _wait_for_file(path: Path) -> None:
    """The driver signals phases with files (another process: nothing to wait on)."""
    while not await anyio.Path(path).exists():  # noqa: ASYNC110
        await anyio.sleep(0.1)


async def _operate(giosg: Any, out: Path, rate: float) -> None:
    await _wait_for_file(out / "start")
    operator = await giosg.operator_online(ROOM_ID, "Soak Operator", organization_id=ORG_ID)
    chats = await giosg.call(
        lambda: [c for c, chat in giosg.state.chats.chats.items() if not chat.resource["is_ended"]]
    )
    rng = random.Random(7)
    with (out / "sent.log").open("a", buffering=1) as sent:
        started = time.monotonic()
        n = 0
        while not (out / "stop").exists():
            n += 1
            chat_id = rng.choice(chats)
            said = await giosg.operator_says(chat_id, operator, f"soak {n}")
            sent.write(f"{said['id']} {time.time():.3f}\n")
            await anyio.sleep(max(0.0, started + n / rate - time.monotonic()))
    (out / "sent.done").write_text("")
    await _wait_for_file(out / "final")

    def census() -> dict[str, Any]:
        state = giosg.state
        visitors = {chat.visitor_id for chat in state.chats.chats.values()}
        return {
            "sockets": {
                v: giosg.router.subscriber_count(state.chats.chats_channel(v)) for v in visitors
            },
            "auth_requests": len(state.auth_requests),
            "visitors": len(state.visitors),
        }

    final = await giosg.call(census)
    (out / "final.json.tmp").write_text(json.dumps(final))
    (out / "final.json.tmp").rename(out / "final.json")
    await _wait_for_file(out / "exit")


# A worker: the tiny bridge (own process) --------------------------------------------------------


def work(args: argparse.Namespace) -> int:
    """Consume pool.inbound() and log each acknowledged id; SIGTERM leaves cleanly."""
    import logging

    logging.basicConfig(
        level=logging.WARNING,
        filename=str(Path(args.out) / f"{args.name}.err"),
        format=f"%(asctime)s {os.getpid()} %(name)s %(levelname)s %(message)s",
    )
    anyio.run(_bridge, args, backend=args.backend)
    return 0


async def _bridge(args: argparse.Namespace) -> None:
    from giosg_visitor import DeliveryLostError, RedisCoordinator, RedisStore, VisitorPool

    out = Path(args.out)
    base_url = json.loads((out / "server.json").read_text())["base_url"]
    coordinator = RedisCoordinator(
        args.redis,
        prefix=args.prefix,
        worker_id=f"{args.name}-{os.getpid()}",
        lease_seconds=args.lease,
        redeliver_after=args.redeliver,
    )
    log = (out / f"acked-{args.name}.log").open("a", buffering=1)
    async with (
        RedisStore(args.redis, prefix=args.prefix) as store,
        VisitorPool(ORG_ID, store=store, base_url=base_url, coordinator=coordinator) as pool,
        anyio.create_task_group() as tg,
    ):

        async def stop_on_sigterm() -> None:
            with anyio.open_signal_receiver(signal.SIGTERM) as signals:
                async for _ in signals:
                    tg.cancel_scope.cancel()
                    return

        tg.start_soon(stop_on_sigterm)
        (out / f"{args.name}.ready").write_text(coordinator.worker_id)
        async with pool.inbound() as deliveries:
            async for delivery in deliveries:
                if delivery.message.message is None:  # the operator's "join" entry
                    await delivery.ack()
                    continue
                # "A" before the ack and "K" after: a kill between the two is resolved
                # against Redis's acknowledged set at the end.
                log.write(f"A {delivery.message.id} {int(delivery.redelivered)}\n")
                try:
                    await delivery.ack()
                except DeliveryLostError:
                    log.write(f"R {delivery.message.id}\n")
                    continue
                log.write(f"K {delivery.message.id}\n")
    log.close()


# The driver ------------------------------------------------------------------------------------


class Soak:
    """Starts and kills the processes; computes the figures."""

    def __init__(self, args: argparse.Namespace, out: Path, redis_url: str) -> None:
        self.args = args
        self.out = out
        self.redis_url = redis_url
        self.prefix = f"soak-{os.getpid()}:"
        self.workers: dict[str, subprocess.Popen[bytes]] = {}
        self.rng = random.Random(args.seed)
        import redis

        self.redis = redis.Redis.from_url(redis_url)
        self.base = f"{self.prefix}{{cluster}}:"
        self.keys = [f"soak-user-{n}" for n in range(args.visitors)]
        self.takeovers: list[float] = []
        self.kills = 0

    def python(self, *extra: str) -> list[str]:
        return [sys.executable, str(HERE), *extra]

    def start_worker(self, name: str) -> None:
        ready = self.out / f"{name}.ready"
        ready.unlink(missing_ok=True)
        self.workers[name] = subprocess.Popen(
            self.python(
                "worker",
                "--name", name,
                "--out", str(self.out),
                "--redis", self.redis_url,
                "--prefix", self.prefix,
                "--lease", str(self.args.lease),
                "--redeliver", str(self.args.redeliver),
                "--backend", self.worker_backend(name),
            ),
            cwd=ROOT,
        )  # fmt: skip

    def worker_backend(self, name: str) -> str:
        if self.args.backend != "mixed":
            return str(self.args.backend)
        return "trio" if int(name[1:]) % 2 else "asyncio"

    def lease_holders(self) -> dict[str, str | None]:
        pipe = self.redis.pipeline()
        for key in self.keys:
            pipe.get(f"{self.base}lease:{key}")
        values = pipe.execute()
        return {
            k: (v.decode().rsplit("|", 1)[0] if v else None)
            for k, v in zip(self.keys, values, strict=True)
        }

    def wait_all_owned(self, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if all(self.lease_holders().values()):
                return True
            time.sleep(0.2)
        return False

    def setup_visitors(self, base_url: str) -> None:
        """Create the visitors and their chats (as the bridge's front door would)."""

        async def create() -> None:
            from giosg_visitor import RedisCoordinator, RedisStore, VisitorPool

            coordinator = RedisCoordinator(self.redis_url, prefix=self.prefix, worker_id="setup")
            async with (
                RedisStore(self.redis_url, prefix=self.prefix) as store,
                VisitorPool(
                    ORG_ID, store=store, base_url=base_url, realtime=False, idle_timeout=None
                ) as pool,
            ):

                async def one(key: str) -> None:
                    async with pool.visitor(key) as visitor:
                        await visitor.start_chat(ROOM_ID)
                    await coordinator.activate(key)

                limiter = anyio.Semaphore(20)

                async def limited(key: str) -> None:
                    async with limiter:
                        await one(key)

                async with anyio.create_task_group() as tg:
                    for key in self.keys:
                        tg.start_soon(limited, key)
            await coordinator.aclose()

        anyio.run(create)

    def kill_one(self) -> None:
        name = self.rng.choice(sorted(self.workers))
        process = self.workers[name]
        worker_id = (
            (self.out / f"{name}.ready").read_text()
            if (self.out / f"{name}.ready").exists()
            else None
        )
        victims = [k for k, h in self.lease_holders().items() if h is not None and h == worker_id]
        killed_at = time.monotonic()
        process.send_signal(signal.SIGKILL)
        process.wait()
        self.kills += 1
        self.start_worker(name)
        pending = set(victims)
        deadline = killed_at + 10 * self.args.lease + 30
        while pending and time.monotonic() < deadline:
            holders = self.lease_holders()
            now = time.monotonic()
            for key in list(pending):
                if holders[key] is not None and holders[key] != worker_id:
                    self.takeovers.append(now - killed_at)
                    pending.discard(key)
            time.sleep(0.05)
        self.takeovers.extend(float("inf") for _ in pending)

    def run(self) -> dict[str, Any]:
        args = self.args
        server = subprocess.Popen(
            self.python("serve", "--out", str(self.out), "--rate", str(args.rate),
                        "--token-lifetime", str(args.token_lifetime)),
            cwd=ROOT,
        )  # fmt: skip
        try:
            while not (self.out / "server.json").exists():
                if server.poll() is not None:
                    raise SystemExit("the fake Giosg did not start")
                time.sleep(0.1)
            base_url = json.loads((self.out / "server.json").read_text())["base_url"]
            self.setup_visitors(base_url)
            for n in range(args.workers):
                self.start_worker(f"w{n}")
            if not self.wait_all_owned(60 + args.visitors / 10):
                print("warning: not every visitor was owned before the traffic started")
            time.sleep(args.lease)  # owners subscribe
            (self.out / "start").write_text("")
            started = time.monotonic()
            next_kill = started + args.kill_every
            while time.monotonic() - started < args.duration:
                if time.monotonic() >= next_kill:
                    self.kill_one()
                    next_kill += args.kill_every
                time.sleep(0.1)
            (self.out / "stop").write_text("")
            while not (self.out / "sent.done").exists():
                time.sleep(0.1)
            sent = self.sent_ids()
            drain_deadline = time.monotonic() + args.drain
            while time.monotonic() < drain_deadline:
                if sent <= self.confirmed_acks()[0]:
                    break
                time.sleep(0.5)
            self.wait_all_owned(args.lease * 4)
            time.sleep(args.lease)  # let hand-overs settle
            (self.out / "final").write_text("")
            while not (self.out / "final.json").exists():
                time.sleep(0.1)
            final = json.loads((self.out / "final.json").read_text())
            return self.figures(sent, final, time.monotonic() - started)
        finally:
            for process in self.workers.values():
                process.send_signal(signal.SIGTERM)
            for process in self.workers.values():
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    process.kill()
            (self.out / "exit").write_text("")
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()

    def sent_ids(self) -> set[str]:
        path = self.out / "sent.log"
        return (
            {line.split()[0] for line in path.read_text().splitlines() if line}
            if path.exists()
            else set()
        )

    def log_lines(self) -> list[list[str]]:
        lines: list[list[str]] = []
        for path in sorted(self.out.glob("acked-*.log")):
            lines += [line.split() for line in path.read_text().splitlines() if line.strip()]
        return lines

    def confirmed_acks(self) -> tuple[set[str], Counter[str], int, int]:
        """(acked ids, ack count per id, deliveries flagged redelivered, refused acks)."""
        lines = self.log_lines()
        counts: Counter[str] = Counter(parts[1] for parts in lines if parts[0] == "K")
        attempted = {parts[1] for parts in lines if parts[0] == "A"}
        refused = sum(1 for parts in lines if parts[0] == "R")
        redelivered = sum(1 for parts in lines if parts[0] == "A" and parts[2] == "1")
        # An "A" without its "K": the worker was killed between the ack and the log line.
        # Redis knows whether that ack went through.
        unresolved = sorted(attempted - set(counts))
        if unresolved:
            scores = self.redis.zmscore(f"{self.base}acked", unresolved)
            for message_id, score in zip(unresolved, scores, strict=True):
                if score is not None:
                    counts[message_id] += 1
        return set(counts), counts, redelivered, refused

    def figures(self, sent: set[str], final: dict[str, Any], seconds: float) -> dict[str, Any]:
        acked, counts, redelivered, refused = self.confirmed_acks()
        takeovers = sorted(self.takeovers)
        finite = [t for t in takeovers if t != float("inf")]
        sockets = Counter(final["sockets"].values())

        def pct(q: float) -> float | None:
            if not finite:
                return None
            return round(finite[min(len(finite) - 1, int(q * len(finite)))], 2)

        return {
            "visitors": self.args.visitors,
            "workers": self.args.workers,
            "backend": self.args.backend,
            "seconds": round(seconds, 1),
            "kills": self.kills,
            "lease_seconds": self.args.lease,
            "sent": len(sent),
            "acked": len(acked & sent),
            "lost": len(sent - acked),
            "acked_twice": sum(1 for n in counts.values() if n > 1),
            "redelivered": redelivered,
            "acks_refused": refused,
            "takeovers": len(takeovers),
            "takeover_never": len(takeovers) - len(finite),
            "takeover_p50": pct(0.5),
            "takeover_p99": pct(0.99),
            "takeover_mean": round(statistics.fmean(finite), 2) if finite else None,
            "auth_per_visitor": round(final["auth_requests"] / max(1, final["visitors"]), 3),
            "token_lifetime": self.args.token_lifetime,
            "sockets_per_visitor": {str(k): v for k, v in sorted(sockets.items())},
        }


def drive(args: argparse.Namespace) -> int:
    with ExitStack() as stack:
        out = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="cluster-soak-")))
        if args.keep:
            out = Path(tempfile.mkdtemp(prefix="cluster-soak-kept-"))
        redis_url = args.redis
        if redis_url is None:
            sys.path.insert(0, str(ROOT))
            from tests.redis_server import redis_server

            (out / "redis").mkdir()
            redis_url = stack.enter_context(redis_server(out / "redis"))
        figures = Soak(args, out, redis_url).run()
    ok = figures["lost"] == 0 and figures["acked_twice"] == 0
    ok = ok and figures["sockets_per_visitor"] == {"1": args.visitors}
    ok = ok and figures["takeover_never"] == 0
    if args.json:
        print(json.dumps({**figures, "ok": ok}))
    else:
        print(
            f"visitors {figures['visitors']}, workers {figures['workers']} ({args.backend}), "
            f"{figures['seconds']} s, {figures['kills']} SIGKILLs, lease {args.lease} s"
        )
        print(f"operator messages sent:     {figures['sent']}")
        print(f"acknowledged:               {figures['acked']}")
        print(f"lost:                       {figures['lost']}")
        print(f"acknowledged twice:         {figures['acked_twice']}")
        print(
            f"redelivered:                {figures['redelivered']} "
            f"(acks refused: {figures['acks_refused']})"
        )
        print(
            f"takeover p50 / p99:         {figures['takeover_p50']} s / "
            f"{figures['takeover_p99']} s "
            f"({figures['takeovers']} takeovers, {figures['takeover_never']} never)"
        )
        print(
            f"auth calls per visitor:     {figures['auth_per_visitor']} "
            f"(token lifetime {args.token_lifetime:g} s)"
        )
        print(f"sockets per visitor (end):  {figures['sockets_per_visitor']} (count: visitors)")
        print("OK" if ok else "FAILED")
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command")
    server = commands.add_parser("serve")
    server.add_argument("--out", required=True)
    server.add_argument("--rate", type=float, required=True)
    server.add_argument("--token-lifetime", type=float, default=1800.0)
    worker = commands.add_parser("worker")
    for name in ("--name", "--out", "--redis", "--prefix"):
        worker.add_argument(name, required=True)
    worker.add_argument("--lease", type=float, required=True)
    worker.add_argument("--redeliver", type=float, required=True)
    worker.add_argument("--backend", default="asyncio")
    parser.add_argument("--visitors", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of traffic")
    parser.add_argument("--rate", type=float, default=20.0, help="operator messages per second")
    parser.add_argument("--kill-every", type=float, default=15.0, help="seconds")
    parser.add_argument("--lease", type=float, default=5.0, help="lease_seconds")
    parser.add_argument("--redeliver", type=float, default=10.0, help="redeliver_after")
    parser.add_argument("--drain", type=float, default=90.0, help="max seconds to drain")
    parser.add_argument("--token-lifetime", type=float, default=1800.0)
    parser.add_argument(
        "--backend",
        choices=["asyncio", "trio", "mixed"],
        default="mixed",
        help="the workers' backend (mixed: every other worker on trio)",
    )
    parser.add_argument("--redis", help="a Redis URL (default: start a private redis-server)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--keep", action="store_true", help="keep the logs folder")
    args = parser.parse_args(argv)
    if args.command == "serve":
        return serve(args)
    if args.command == "worker":
        return work(args)
    return drive(args)


if __name__ == "__main__":
    sys.exit(main())
