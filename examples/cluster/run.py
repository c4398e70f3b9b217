"""Run a clustered bridge locally: a fake Giosg with a bot, Redis, and N worker processes.

Each end user's message goes to a random worker (as a load balancer would); the bot's
answer comes back on whichever worker the cluster picks, once. Then one worker is stopped
with SIGTERM (its visitors are handed over at once) and every user writes again.

    python examples/cluster/run.py --redis redis://localhost:6379/0 --workers 3 --users 6

Without ``--redis`` it starts a private ``redis-server`` from PATH.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from giosg_visitor.testing import FakeGiosg


HERE = Path(__file__).resolve().parent
ORG_ID = "e6a08f51-c250-4074-847b-58d444dbbeb1"
ROOM_ID = "9926bdfa-56e0-11e5-b98c-6c4008c08dfe"


def private_redis(workdir: str) -> tuple[subprocess.Popen[bytes], str]:
    executable = shutil.which("redis-server")
    if executable is None:
        raise SystemExit("no redis-server on PATH: pass --redis redis://...")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [executable, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", workdir],
        stdout=subprocess.DEVNULL,
    )
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            break
        except OSError:
            time.sleep(0.05)
    return process, f"redis://127.0.0.1:{port}/0"


class Worker:
    """A bridge.py process; its stdout lines are collected by a thread."""

    def __init__(self, name: str, redis_url: str, base_url: str) -> None:
        self.name = name
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            [sys.executable, str(HERE / "bridge.py"), "--redis", redis_url,
             "--base-url", base_url, "--worker", name, "--lease", "3"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    def say(self, user_id: str, text: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(f"{user_id} {text}\n")
        self.process.stdin.flush()


def answers(workers: list[Worker]) -> Counter[str]:
    return Counter(line for w in workers for line in w.lines if " <- " in line)


def wait_for(predicate: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis", help="Redis URL (default: a private redis-server)")
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--users", type=int, default=6)
    args = parser.parse_args()
    rng = random.Random(1)
    with tempfile.TemporaryDirectory() as workdir:
        redis_process = None
        redis_url = args.redis
        if redis_url is None:
            redis_process, redis_url = private_redis(workdir)
        giosg = FakeGiosg(rooms=[ROOM_ID])
        giosg.start()
        workers: list[Worker] = []
        try:
            import anyio

            anyio.run(lambda: giosg.start_bot(ROOM_ID, organization_id=ORG_ID))
            workers = [
                Worker(f"worker-{n}", redis_url, giosg.base_url) for n in range(args.workers)
            ]
            wait_for(lambda: all(w.lines for w in workers), 30)
            users = [f"whatsapp:+35840{n:07d}" for n in range(args.users)]
            for user in users:
                rng.choice(workers).say(user, "Hello!")
            want = {f"{u} <- Hello! I'm the demo bot. Ask me anything." for u in users}
            wait_for(lambda: want <= set(answers(workers)), 60)
            leaving = workers.pop(0)
            leaving.process.send_signal(signal.SIGTERM)
            leaving.process.wait(timeout=30)
            print(f"{leaving.name} left (SIGTERM): its visitors were handed over")
            for user in users:
                rng.choice(workers).say(user, "bye")
            want_bye = {f"{u} <- Goodbye, and thanks for chatting!" for u in users}
            wait_for(lambda: want_bye <= set(answers([leaving, *workers])), 60)
            counted = answers([leaving, *workers])
            for line in sorted(counted):
                print(f"{counted[line]}x {line}")
            ok = all(counted[line] == 1 for line in want | want_bye)
            print("every answer relayed exactly once" if ok else "MISSING OR DUPLICATED ANSWERS")
            return 0 if ok else 1
        finally:
            for worker in workers:
                worker.process.send_signal(signal.SIGTERM)
            for worker in workers:
                try:
                    worker.process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    worker.process.kill()
            giosg.stop()
            if redis_process is not None:
                redis_process.terminate()
                redis_process.wait()


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
