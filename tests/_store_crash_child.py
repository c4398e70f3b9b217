"""Helper process for the multi-process store tests (run as a script, not a test module).

Usage: ``python _store_crash_child.py '<json command>'`` where the command's ``mode`` is:

``zygote``
    Read one JSON ``crash`` command per line from stdin. For each, fork a writer that
    prints ``ready <pid>``, then saves ``build_record(seed, n)`` under ``key`` for
    n = stored version + 1, + 2, ... forever, printing ``saved <n>`` after each save. The
    test SIGKILLs the writer by pid; the zygote then prints ``exit <code>``. Forking from
    a process that has already imported everything makes a trial cost milliseconds.
``rmw``
    Print ``ready``, wait for a line on stdin, save ``count`` records under the keys
    ``<prefix>-0`` ... ``<prefix>-<count - 1>``, print ``done``.
``hold``
    Take ``lock(key)``, print ``locked``, wait for a line on stdin, release, print
    ``released``.

Every command names the store: ``kind`` (``"file"`` or ``"sqlite"``), ``path`` and, for
SQLite, an optional ``lease`` in seconds.
"""

from __future__ import annotations

import json
import os
import random
import sys
import traceback
from typing import Any

import anyio
import anyio.to_thread

from giosg_visitor import Secret
from giosg_visitor.stores import (
    FileStore,
    OrganizationSession,
    SQLiteStore,
    StoredToken,
    VisitorRecord,
)


def build_record(seed: int, version: int) -> VisitorRecord:
    """The record a writer saves as ``version``: deterministic, of random size (0-300 KB)."""
    rng = random.Random(f"{seed}:{version}")

    def text(size: int) -> str:
        return "".join(rng.choices("abcdefghijklmnopqrstuvwxyz0123456789-_é✓", k=size))

    padding = int(10 ** rng.uniform(0, 5.5))
    sessions = {
        f"org-{i}": OrganizationSession(
            organization_id=f"org-{i}",
            visitor_id=text(32),
            socket_url="https://messagerouter.giosg.com",
            access_token=Secret(text(40)),
            expires_at=1_700_000_000.0 + version,
            lifetime=3600.0,
            extra={"padding": text(padding // (i + 1))},
        )
        for i in range(rng.randint(0, 3))
    }
    tokens = {"oauth": StoredToken(access_token=Secret(text(40)), expires_at=1.5, lifetime=2.0)}
    return VisitorRecord(
        visitor_secret_id=Secret(text(48)), sessions=sessions, tokens=tokens, version=version
    )


def make_store(command: dict[str, Any]) -> FileStore | SQLiteStore:
    """The store a command names."""
    if command["kind"] == "file":
        return FileStore(command["path"])
    return SQLiteStore(command["path"], lease_seconds=command.get("lease", 30.0))


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def _close(store: FileStore | SQLiteStore) -> None:
    if isinstance(store, SQLiteStore):
        await store.aclose()


async def _write_forever(command: dict[str, Any]) -> None:
    store = make_store(command)
    key, seed = command["key"], command["seed"]
    current = await store.load(key)
    version = current.version if current is not None else 0
    _say(f"ready {os.getpid()}")
    while True:
        version += 1
        await store.save(key, build_record(seed, version))
        _say(f"saved {version}")


def _zygote() -> None:
    for line in sys.stdin:
        command = json.loads(line)
        sys.stdout.flush()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                anyio.run(_write_forever, command)
            except BaseException:
                traceback.print_exc()
            finally:
                os._exit(code)  # never fall back into the zygote's loop
        _, status = os.waitpid(pid, 0)
        _say(f"exit {os.waitstatus_to_exitcode(status)}")


async def _read_and_modify(command: dict[str, Any]) -> None:
    store = make_store(command)
    _say("ready")
    await anyio.to_thread.run_sync(sys.stdin.readline)
    for i in range(command["count"]):
        key = f"{command['prefix']}-{i}"
        await store.save(key, VisitorRecord(visitor_secret_id=Secret(key), version=i))
    await _close(store)
    _say("done")


async def _hold(command: dict[str, Any]) -> None:
    store = make_store(command)
    async with store.lock(command["key"]):
        _say("locked")
        await anyio.to_thread.run_sync(sys.stdin.readline)
    await _close(store)
    _say("released")


def main() -> None:
    """Run the command given as the first argument."""
    command = json.loads(sys.argv[1])
    mode = command["mode"]
    if mode == "zygote":
        _zygote()
    elif mode == "rmw":
        anyio.run(_read_and_modify, command)
    elif mode == "hold":
        anyio.run(_hold, command)
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main()
