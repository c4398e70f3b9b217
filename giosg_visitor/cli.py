"""The ``giosg-visitor`` command (also ``python -m giosg_visitor``)."""

from __future__ import annotations

import argparse
import os
import stat
import sys
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import anyio

from .stores.file import FileStore
from .visitor import Visitor


__all__ = ["main"]

DEMO_ORG_ID = "e6a08f51-c250-4074-847b-58d444dbbeb1"


def _say(text: str = "") -> None:
    print(text, flush=True)


async def demo(state_dir: Path, lifetime: float, *, returning: bool) -> None:
    """A visitor's life against an embedded FakeGiosg: new or resumed, persisted, renewed."""
    from .testing import FakeGiosg

    store_path = state_dir / "visitor.json"
    async with FakeGiosg(token_lifetime=lifetime, data_file=state_dir / "fake-giosg.json") as giosg:
        _say(f"Fake Giosg listening on {giosg.base_url} (tokens live {lifetime:g} s)")
        store = FileStore(store_path)
        async with Visitor(DEMO_ORG_ID, base_url=giosg.base_url, store=store) as visitor:
            first_id = visitor.visitor_id
            kind = "returning visitor resumed" if returning else "new visitor created"
            _say(f"1. {kind}: visitor_id={first_id}")
            mode = stat.S_IMODE(os.stat(store_path).st_mode)
            record = await store.load(visitor.key)
            saved = record is not None and record.visitor_secret_id is not None
            _say(f"2. secret persisted in {store_path} (mode {mode:o}): {saved}; shown as ***")
            auths_before = len(giosg.auth_requests)
            _say(f"3. waiting {lifetime * 1.5:g} s while the token renews in the background ...")
            await anyio.sleep(lifetime * 1.5)
            renewals = len(giosg.auth_requests) - auths_before
            expired = len(giosg.expired_token_requests)
            _say(f"   renewals: {renewals}; requests with an expired token: {expired}")
        async with Visitor(DEMO_ORG_ID, base_url=giosg.base_url, store=store) as again:
            same = again.visitor_id == first_id
            _say(f"4. resumed from the store: visitor_id={again.visitor_id} (same visitor: {same})")
        _say(f"Run the demo again: the same visitor comes back from {store_path}.")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``giosg-visitor`` command."""
    parser = argparse.ArgumentParser(prog="giosg-visitor", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run_demo = commands.add_parser("demo", help="a visitor's life against an embedded fake Giosg")
    run_demo.add_argument(
        "--state-dir", type=Path, default=Path(".demo"), help="where the demo keeps its files"
    )
    run_demo.add_argument("--lifetime", type=float, default=3.0, help="token lifetime, seconds")
    args = parser.parse_args(argv)
    if args.command == "demo":
        state_dir: Path = args.state_dir
        state_dir.mkdir(parents=True, exist_ok=True)
        returning = (state_dir / "visitor.json").exists()
        try:
            anyio.run(partial(demo, state_dir, args.lifetime, returning=returning))
        except KeyboardInterrupt:
            return 130
        return 0
    parser.error(f"unknown command {args.command!r}")  # pragma: no cover - argparse exits
    return 2


if __name__ == "__main__":
    sys.exit(main())
