"""Run as a subprocess: read-modify-write one record of a shared store, under its lock.

Usage: ``python -m tests.reliability._rmw_child '<json>'`` with ``kind`` (``"file"`` or
``"sqlite"``), ``path``, ``key``, ``count`` and ``name``. Prints ``ready``, waits for a line
on stdin, then ``count`` times: takes ``store.lock(key)``, loads the record, saves it with
``version + 1`` and a secret that names the new version. Prints one JSON line:
``{"bad_reads": n, "done": count}`` (a bad read is a record that failed to parse).
"""

from __future__ import annotations

import json
import sys
from typing import Any

import anyio
import anyio.to_thread

from giosg_visitor import ProtocolError, Secret
from giosg_visitor.stores import FileStore, SQLiteStore, VisitorRecord


async def main(options: dict[str, Any]) -> None:
    """Increment the record's version ``count`` times, each under the store's lock."""
    store: FileStore | SQLiteStore
    if options["kind"] == "file":
        store = FileStore(options["path"])
    else:
        store = SQLiteStore(options["path"])
    key = options["key"]
    print("ready", flush=True)
    await anyio.to_thread.run_sync(sys.stdin.readline)
    bad_reads = 0
    done = 0
    while done < options["count"]:
        async with store.lock(key):
            try:
                record = await store.load(key)
            except ProtocolError:
                bad_reads += 1
                continue
            version = record.version if record is not None else 0
            secret = Secret(f"secret-{version + 1}-{options['name']}")
            await store.save(key, VisitorRecord(visitor_secret_id=secret, version=version + 1))
            done += 1
    if isinstance(store, SQLiteStore):
        await store.aclose()
    print(json.dumps({"bad_reads": bad_reads, "done": done}), flush=True)


if __name__ == "__main__":
    anyio.run(main, json.loads(sys.argv[1]))
