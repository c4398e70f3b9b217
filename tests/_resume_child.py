"""Run as a subprocess: start a visitor on a shared store and print its id (JSON line)."""

from __future__ import annotations

import json
import sys

import anyio

from giosg_visitor import Visitor
from giosg_visitor.stores import FileStore, SQLiteStore, Store


async def main(argv: list[str]) -> None:
    base_url, org_id, kind, path, key = argv
    store: Store = FileStore(path) if kind == "file" else SQLiteStore(path)
    async with Visitor(org_id, base_url=base_url, store=store, key=key) as visitor:
        print(json.dumps({"visitor_id": visitor.visitor_id}), flush=True)
    if isinstance(store, SQLiteStore):
        await store.aclose()


if __name__ == "__main__":
    anyio.run(main, sys.argv[1:6])
