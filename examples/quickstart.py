"""Quickstart: a visitor that is created once and resumed on every later run."""

from __future__ import annotations

import anyio

from giosg_visitor import FileStore, Visitor
from giosg_visitor.testing import FakeGiosg


ORG_ID = "e6a08f51-c250-4074-847b-58d444dbbeb1"


async def main() -> None:
    # A local, faithful Giosg. Against the real service, drop it and use the default base_url.
    async with FakeGiosg(data_file="fake-giosg.json") as giosg:
        store = FileStore("visitor.json")  # the visitor's secret lives here (mode 0600)
        async with Visitor(ORG_ID, base_url=giosg.base_url, store=store) as visitor:
            print("visitor", visitor.visitor_id, "is", visitor.state.value)


if __name__ == "__main__":
    anyio.run(main)
