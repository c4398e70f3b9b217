"""Serve the web chat against an embedded fake Giosg with a bot that answers.

    python examples/web_chat/run.py [--port 8000]

Open the printed URL, write something, reload: the same visitor and its history come back.
The state lives in the working directory (``web_chat.db``: each session's visitor;
``fake-giosg.json``: what the fake remembers), so a restarted server resumes them too.
Against the real service, serve ``create_app(...)`` without ``base_url`` instead.
"""

from __future__ import annotations

import argparse
import signal
import socket
import sys
from pathlib import Path

import anyio
import uvicorn

from giosg_visitor.testing import FakeGiosg


if __package__ in (None, ""):  # run as a script: make the `web_chat` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from web_chat.app import create_app


ORG_ID = "e6a08f51-c250-4074-847b-58d444dbbeb1"
ROOM_ID = "9926bdfa-56e0-11e5-b98c-6c4008c08dfe"


async def main(host: str, port: int) -> None:
    """Start the fake Giosg and its bot, then serve the app until interrupted."""
    async with FakeGiosg(data_file="fake-giosg.json") as giosg:
        await giosg.start_bot(ROOM_ID, organization_id=ORG_ID)
        app = create_app(
            organization_id=ORG_ID,
            room_id=ROOM_ID,
            base_url=giosg.base_url,
            store_path="web_chat.db",
        )
        config = uvicorn.Config(
            app,
            log_level="warning",
            ws="websockets-sansio",
            ws_max_size=64 * 1024,
            timeout_graceful_shutdown=2,
        )
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            sock.listen()  # connections wait in the backlog until uvicorn serves them
            print(f"Web chat on http://{host}:{sock.getsockname()[1]}/ (Ctrl+C to stop)")
            sys.stdout.flush()
            # uvicorn stops on ^C and then raises the signal again; received here instead
            # of as KeyboardInterrupt, it lets the fake stop cleanly (and save its state).
            with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM):
                await uvicorn.Server(config).serve(sockets=[sock])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="interface (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port (0: any free one)")
    args = parser.parse_args()
    anyio.run(main, args.host, args.port)
