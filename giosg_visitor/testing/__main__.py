"""``python -m giosg_visitor.testing``: serve the fake Giosg standalone until Ctrl-C.

Point any client (this SDK in another process, curl, a browser front end) at the printed
base URL. With ``--bot ROOM_ID`` a scripted operator answers in that room; ``--room``
registers more rooms (unknown rooms get 404, as from Giosg) and ``--any-room`` accepts
every room id.
"""

from __future__ import annotations

import argparse
import sys
import threading
from collections.abc import Sequence

import anyio

from .._extras import FAKE_HINT, missing_module


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(prog="python -m giosg_visitor.testing", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="loopback address to bind")
    parser.add_argument("--port", type=int, default=0, help="port (0: a free one)")
    parser.add_argument("--token-lifetime", type=float, default=1800.0, help="seconds")
    parser.add_argument("--bot", metavar="ROOM_ID", help="run a scripted operator in this room")
    parser.add_argument("--org", metavar="ORG_ID", help="the bot's organization (with --bot)")
    parser.add_argument(
        "--room", metavar="ROOM_ID", action="append", default=[], help="a room that exists"
    )
    parser.add_argument("--any-room", action="store_true", help="every room id exists")
    parser.add_argument("--strict-socket-expiry", action="store_true")
    args = parser.parse_args(argv)
    if args.bot and not args.org:
        parser.error("--bot needs --org")
    if missing_module("starlette", "uvicorn") is not None:
        print(f"{parser.prog}: {FAKE_HINT}", file=sys.stderr)
        return 1
    from ._server import FakeGiosg

    giosg = FakeGiosg(
        rooms=args.room,
        accept_any_room=args.any_room,
        host=args.host,
        port=args.port,
        token_lifetime=args.token_lifetime,
        strict_socket_expiry=args.strict_socket_expiry,
    )
    giosg.start()
    try:
        if args.bot:
            anyio.run(lambda: giosg.start_bot(args.bot, organization_id=args.org))
        print(f"FakeGiosg API: {giosg.base_url}", flush=True)
        print(f"socket_url:    {giosg.socket_url}", flush=True)
        print("Ctrl-C stops it.", flush=True)
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        giosg.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
