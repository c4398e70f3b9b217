"""Run as a subprocess: one of several workers serving the same visitors from a shared store.

Usage: ``python -m tests._renewal_worker '<json options>'`` with the options ``base_url``,
``org_id``, ``kind`` (``"redis"`` or ``"sqlite"``), ``target`` (Redis URL or SQLite
path), ``prefix`` (Redis), ``keys``, ``jitter`` and ``backend``.

The worker imports everything, opens its store, prints ``ready`` and waits for a JSON line
on stdin, ``{"stop_at": <time.monotonic() value>}``, so that every worker starts at the
same moment and stops at a moment the test chose. Then it opens one
``Visitor(realtime=False)`` per key, keeps them all open until ``stop_at`` while making a
request with each now and then, closes them and prints one JSON line:
``{"visitor_ids": {key: visitor_id}, "requests": n, "failures": [...]}``.

Every visitor uses the same random draw (``rng=lambda: jitter``), so all workers reach
each renewal point at the same moment: the worst case for cross-process single-flight.
"""

from __future__ import annotations

import json
import random
import sys
import time
from contextlib import AsyncExitStack
from typing import Any

import anyio
import anyio.to_thread

from giosg_visitor import GiosgError, Visitor
from giosg_visitor.stores import RedisStore, SQLiteStore, Store


async def _traffic(visitor: Visitor, base_url: str, report: dict[str, Any]) -> None:
    url = f"{base_url}/api/v5/public/visitors/{visitor.visitor_id}/chats"
    while True:
        try:
            response = await visitor.http_client.get(url, auth=visitor.auth)
        except GiosgError as exc:
            report["failures"].append(f"{visitor.key}: {type(exc).__name__}: {exc}")
        else:
            report["requests"] += 1
            if response.status_code != 200:
                report["failures"].append(f"{visitor.key}: HTTP {response.status_code}")
        await anyio.sleep(random.uniform(0.1, 0.3))


async def main(options: dict[str, Any]) -> None:
    store: RedisStore | SQLiteStore
    if options["kind"] == "redis":
        store = RedisStore(options["target"], prefix=options["prefix"])
    else:
        store = SQLiteStore(options["target"])
    print("ready", flush=True)
    line = await anyio.to_thread.run_sync(sys.stdin.readline)
    if not line:
        return  # the test gave up before starting us
    # time.monotonic() is one clock for every process (trio's own clock is offset).
    stop_at = json.loads(line)["stop_at"]
    jitter = float(options["jitter"])
    report: dict[str, Any] = {"visitor_ids": {}, "requests": 0, "failures": []}
    async with store, AsyncExitStack() as stack:
        shared: Store = store
        visitors = [
            await stack.enter_async_context(
                Visitor(
                    options["org_id"],
                    base_url=options["base_url"],
                    store=shared,
                    key=key,
                    realtime=False,
                    rng=lambda: jitter,
                )
            )
            for key in options["keys"]
        ]
        with anyio.move_on_after(stop_at - time.monotonic()):
            async with anyio.create_task_group() as tg:
                for visitor in visitors:
                    tg.start_soon(_traffic, visitor, options["base_url"], report)
        report["visitor_ids"] = {visitor.key: visitor.visitor_id for visitor in visitors}
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    settings = json.loads(sys.argv[1])
    anyio.run(main, settings, backend=settings["backend"])
