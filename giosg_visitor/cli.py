"""The ``giosg-visitor`` command (also ``python -m giosg_visitor``).

* ``demo``: a full conversation against an embedded fake Giosg (no account needed).
* ``chat``: an interactive terminal chat against real Giosg or ``--fake``.
* ``probe``: a diagnostic report of the first contact with an organization.
* ``cluster-status``: a cluster's state as stored in Redis (workers, leases, deliveries).

Each subcommand is an ``_add_<name>`` function that builds its parser and sets its
``handler``; :func:`main` parses, runs the handler and turns expected failures (no
network, a rejected secret, a missing extra) into one line on stderr and a non-zero exit
code, and Ctrl-C into exit code 130, on asyncio and on trio alike.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import anyio

from ._demo import DEMO_ORG_ID, DEMO_ROOM_ID, ChatOptions, CommandError, run_chat, run_demo
from ._extras import TRIO_HINT, missing_module
from ._http import DEFAULT_BASE_URL
from ._paths import user_state_dir
from ._probe import add_probe_arguments, run_probe_command
from ._redact import RedactingFilter
from .errors import GiosgError


__all__ = ["main"]

#: Exit codes: an expected failure, a usage error (argparse's own) and Ctrl-C.
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

Handler = Callable[[argparse.Namespace], Callable[[], Awaitable[int]]]


def build_parser() -> argparse.ArgumentParser:
    """The whole command line: global options, then one subparser per command."""
    parser = argparse.ArgumentParser(prog="giosg-visitor", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    parser.add_argument("--backend", choices=["asyncio", "trio"], default="asyncio")
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="show the SDK's log: -v for its info lines, -vv for debug (secrets are masked)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_demo(commands)
    _add_chat(commands)
    _add_probe(commands)
    _add_cluster_status(commands)
    return parser


def _add_demo(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    demo = commands.add_parser("demo", help="a full conversation against an embedded fake Giosg")
    demo.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help="where the demo keeps its files (default: the user's state folder)",
    )
    demo.add_argument("--lifetime", type=float, default=4.0, help="token lifetime, seconds")
    demo.set_defaults(handler=_demo_job)


def _demo_job(args: argparse.Namespace) -> Callable[[], Awaitable[int]]:
    state_dir: Path = args.state_dir or user_state_dir() / "demo"
    state_dir.mkdir(parents=True, exist_ok=True)
    returning = (state_dir / "visitor.json").exists()

    async def job() -> int:
        await run_demo(state_dir, args.lifetime, returning=returning)
        return 0

    return job


def _add_probe(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    probe = commands.add_parser("probe", help="check auth and each socket strategy; print a report")
    add_probe_arguments(probe)
    # The probe runs its own event loop and prints its own report and error line.
    probe.set_defaults(handler=None)


def _add_cluster_status(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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
    status.set_defaults(handler=_cluster_status_job)


def _cluster_status_job(args: argparse.Namespace) -> Callable[[], Awaitable[int]]:
    from ._cluster_cli import print_cluster_status

    async def job() -> int:
        return await print_cluster_status(args.redis, args.prefix, as_json=args.json)

    return job


def _add_chat(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    chat = commands.add_parser(
        "chat",
        help="an interactive chat in the terminal",
        description=(
            "Chat as a visitor: type a line to send it; /help lists the local commands. "
            "Against real Giosg an organization and a room are required."
        ),
    )
    chat.add_argument(
        "--org", default=os.environ.get("GIOSG_ORG_ID"), help="organization id ($GIOSG_ORG_ID)"
    )
    chat.add_argument(
        "--room", default=os.environ.get("GIOSG_ROOM_ID"), help="room id ($GIOSG_ROOM_ID)"
    )
    where = chat.add_mutually_exclusive_group()
    where.add_argument("--base-url", help=f"API origin (default: {DEFAULT_BASE_URL})")
    where.add_argument("--fake", action="store_true", help="chat with an embedded fake Giosg")
    chat.add_argument(
        "--store",
        type=Path,
        default=None,
        help="the file that keeps the visitor's secret (default: in the user's state folder)",
    )
    chat.set_defaults(handler=_chat_job)


def _chat_job(args: argparse.Namespace) -> Callable[[], Awaitable[int]]:
    if args.fake:
        organization_id = args.org or DEMO_ORG_ID
        room_id = args.room or DEMO_ROOM_ID
        default_store = user_state_dir() / "chat-fake" / "visitor.json"
    else:
        if not args.org:
            raise CommandError(
                "an organization id is required for the real service: pass --org or set "
                "GIOSG_ORG_ID (or use --fake to try it without an account)"
            )
        if not args.room:
            raise CommandError("a room id is required: pass --room or set GIOSG_ROOM_ID")
        organization_id, room_id = args.org, args.room
        default_store = user_state_dir() / "chat" / "visitor.json"
    options = ChatOptions(
        organization_id=organization_id,
        room_id=room_id,
        base_url=args.base_url,
        fake=args.fake,
        store_path=args.store or default_store,
    )

    async def job() -> int:
        return await run_chat(options)

    return job


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``giosg-visitor`` command; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_logging(args.verbose)
    if args.backend == "trio" and missing_module("trio") is not None:
        return _fail(TRIO_HINT)
    if args.command == "probe":
        return run_probe_command(args, backend=args.backend)
    handler: Handler = args.handler
    try:
        job = handler(args)
        return _run(job, args.backend)
    except CommandError as exc:
        return _fail(str(exc))


def _configure_logging(verbosity: int) -> None:
    """Send the SDK's log to stderr: errors only by default, more with ``-v``/``-vv``.

    Without a handler, Python prints warnings through its last-resort handler, and a
    warning the SDK logs on its way to a typed error would then stand beside the one
    line the command prints for that error.
    """
    level = {0: logging.ERROR, 1: logging.INFO}.get(verbosity, logging.DEBUG)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("giosg-visitor: %(levelname)s %(name)s: %(message)s"))
    handler.setLevel(level)
    handler.addFilter(RedactingFilter())  # a second guard: SDK messages are masked already
    sdk = logging.getLogger("giosg_visitor")
    sdk.addHandler(handler)
    sdk.setLevel(min(level, sdk.getEffectiveLevel()))


def _run(job: Callable[[], Awaitable[int]], backend: str) -> int:
    """Run ``job`` on ``backend``; Ctrl-C is 130 and expected failures are one line."""
    try:
        return anyio.run(_interruptible, job, backend=backend)
    except BaseException as exc:
        if _contains(exc, KeyboardInterrupt):
            # Trio delivers Ctrl-C inside the task group, so it may arrive wrapped.
            return EXIT_INTERRUPTED
        if _contains(exc, BrokenPipeError):
            # The reader went away (`giosg-visitor chat | head`): nobody to tell. Point
            # stdout at /dev/null so the interpreter's final flush stays quiet too.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            return EXIT_FAILURE
        message = _failure_message(exc)
        if message is None:
            raise
        return _fail(message)


async def _interruptible(job: Callable[[], Awaitable[int]]) -> int:
    """Run ``job``; Ctrl-C cancels it (its cleanup runs) and makes the exit code 130.

    Catching SIGINT as a signal, rather than as a ``KeyboardInterrupt`` raised wherever
    the code happens to be, lets every ``async with`` close normally on both backends.
    Where signals cannot be received this way (Windows), ``KeyboardInterrupt`` still
    ends the run and :func:`_run` maps it to 130.
    """
    code = 0
    async with anyio.create_task_group() as tg:

        async def on_ctrl_c() -> None:
            nonlocal code
            with anyio.open_signal_receiver(signal.SIGINT) as signals:
                async for _ in signals:
                    code = EXIT_INTERRUPTED
                    tg.cancel_scope.cancel()
                    return

        if sys.platform != "win32":
            tg.start_soon(on_ctrl_c)
        code = await job()
        tg.cancel_scope.cancel()
    return code


def _contains(exc: BaseException, kind: type[BaseException]) -> bool:
    if isinstance(exc, BaseExceptionGroup):
        return any(_contains(inner, kind) for inner in exc.exceptions)
    return isinstance(exc, kind)


def _failure_message(exc: BaseException) -> str | None:
    """The one line for an expected failure (found inside exception groups), else None."""
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            message = _failure_message(inner)
            if message is not None:
                return message
        return None
    if isinstance(exc, CommandError | GiosgError):
        return str(exc)
    if isinstance(exc, ModuleNotFoundError) and ": pip install" in str(exc):
        return str(exc)  # a missing extra, with its install command
    if isinstance(exc, OSError) and exc.filename is not None:
        return f"{exc.filename}: {exc.strerror or exc}"
    return None


def _fail(message: str) -> int:
    print(f"giosg-visitor: error: {message}", file=sys.stderr, flush=True)
    return EXIT_FAILURE


def _version() -> str:
    from . import __version__

    return str(__version__)


if __name__ == "__main__":
    sys.exit(main())
