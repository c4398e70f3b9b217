"""The ``giosg-visitor`` command (also ``python -m giosg_visitor``).

* ``demo``: a full conversation against an embedded fake Giosg (no account needed).
* ``chat``: an interactive terminal chat against real Giosg or ``--fake``.
* ``cluster-status``: a cluster's state as stored in Redis (workers, leases, deliveries).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import anyio

from ._demo import DEMO_ORG_ID, DEMO_ROOM_ID, run_chat, run_demo


__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``giosg-visitor`` command."""
    parser = argparse.ArgumentParser(prog="giosg-visitor", description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["asyncio", "trio"], default="asyncio")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="a full conversation against an embedded fake Giosg")
    demo.add_argument(
        "--state-dir", type=Path, default=Path(".demo"), help="where the demo keeps its files"
    )
    demo.add_argument("--lifetime", type=float, default=4.0, help="token lifetime, seconds")
    chat = commands.add_parser("chat", help="an interactive chat in the terminal")
    chat.add_argument("--org", default=DEMO_ORG_ID, help="organization id")
    chat.add_argument("--room", default=DEMO_ROOM_ID, help="room id")
    where = chat.add_mutually_exclusive_group()
    where.add_argument("--base-url", help="API origin (default: https://service.giosg.com)")
    where.add_argument("--fake", action="store_true", help="chat with an embedded fake Giosg")
    chat.add_argument(
        "--store", type=Path, default=Path("giosg-visitor.json"), help="where the secret is kept"
    )
    status = commands.add_parser(
        "cluster-status", help="a cluster's state from Redis (workers, leases, deliveries)"
    )
    status.add_argument(
        "--redis",
        default=os.environ.get("REDIS_URL", "redis://localhost:6379/0"),
        help="Redis URL (default: $REDIS_URL or redis://localhost:6379/0)",
    )
    status.add_argument("--prefix", default="giosg:", help="the coordinator's key prefix")
    status.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args(argv)
    if args.command == "cluster-status":
        from ._cluster_cli import print_cluster_status

        return anyio.run(
            partial(print_cluster_status, args.redis, args.prefix, as_json=args.json),
            backend=args.backend,
        )
    if args.command == "demo":
        state_dir: Path = args.state_dir
        state_dir.mkdir(parents=True, exist_ok=True)
        returning = (state_dir / "visitor.json").exists()
        job = partial(run_demo, state_dir, args.lifetime, returning=returning)
    else:
        job = partial(
            run_chat,
            args.org,
            args.room,
            base_url=args.base_url,
            fake=args.fake,
            store_path=args.store,
        )
    try:
        anyio.run(job, backend=args.backend)
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
