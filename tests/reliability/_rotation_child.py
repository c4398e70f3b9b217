"""Helper process of the secret-rotation SIGKILL trials (run as a module, not a test).

``python -m tests.reliability._rotation_child`` is a zygote: it imports everything once,
then reads one JSON command per line from stdin and forks a worker for each (a trial
costs milliseconds, not an interpreter start). The worker, on the backend the command
names, starts a :class:`~giosg_visitor.Visitor` on the store the command names against
the fake Giosg at ``base_url`` (which runs in the test's process), renews once (a
restored token alone would not show whether the stored secret still works), prints
``ready <pid> <visitor_id>`` (or ``lost <error type>``), then loops forever: renew, then one
API request. The test SIGKILLs it; the zygote then prints ``exit <code>``.

Events, one line each, with ``time.monotonic()`` (one clock for every process on Linux):

``sent <t>``
    the visitor is about to send an auth request (``VisitorSession._post_auth`` entered);
``recv <t>``
    the auth response is parsed: the (maybe rotated) secret is known to the process;
``saved <t>``
    the store's ``save`` of the record returned: the new secret is durable;
``next <t>``
    the next (non-auth) request is about to be sent.

Store kinds: ``file`` (``path``), ``sqlite`` (``path``), ``redis`` (``url``, ``prefix``,
``lease_seconds``: the test explains the short lease).
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from typing import Any

import anyio

from giosg_visitor import GiosgError, RenewalPolicy, Secret, Visitor, visitor as visitor_module
from giosg_visitor._auth import VisitorSession
from giosg_visitor.stores import (
    AuthSession,
    FileStore,
    RedisStore,
    SQLiteStore,
    Store,
    VisitorRecord,
)


ORG_ID = "e6a08f51-c250-4074-847b-58d444dbbeb1"
ROOM_ID = "9926bdfa-56e0-11e5-b98c-6c4008c08dfe"
#: Back-to-back renewals (the default spacing would make every cycle wait 5 s).
FAST_RENEWAL = RenewalPolicy(min_spacing=0.001)


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _event(name: str) -> None:
    _say(f"{name} {time.monotonic():.6f}")


def _instrument() -> None:
    """Report the auth request, its answer and the durable save (in this process only)."""
    post_auth = VisitorSession._post_auth
    save = VisitorSession._save

    async def reporting_post_auth(self: VisitorSession, secret: Secret | None) -> AuthSession:
        _event("sent")
        answer = await post_auth(self, secret)
        _event("recv")
        return answer

    async def reporting_save(self: VisitorSession, record: VisitorRecord) -> None:
        await save(self, record)
        _event("saved")

    VisitorSession._post_auth = reporting_post_auth  # type: ignore[method-assign]
    VisitorSession._save = reporting_save  # type: ignore[method-assign]


def make_store(command: dict[str, Any]) -> Store:
    """The store a command names."""
    kind = command["kind"]
    if kind == "file":
        return FileStore(command["path"])
    if kind == "sqlite":
        return SQLiteStore(command["path"])
    if kind == "redis":
        return RedisStore(
            command["url"], prefix=command["prefix"], lease_seconds=command["lease_seconds"]
        )
    raise ValueError(f"unknown store kind {kind!r}")


async def _work(command: dict[str, Any]) -> None:
    store = make_store(command)
    try:
        async with Visitor(
            ORG_ID,
            base_url=command["base_url"],
            store=store,
            key=command["key"],
            realtime=False,
            renewal=FAST_RENEWAL,
        ) as visitor:
            await visitor.renew()
            _say(f"ready {os.getpid()} {visitor.visitor_id}")
            while True:
                await visitor.renew()
                _event("next")
                await visitor.room(ROOM_ID)
    except GiosgError as exc:
        _say(f"lost {type(exc).__name__}")


def _zygote() -> None:
    _instrument()
    # Paid once here, not in every forked worker: the trio and redis-py imports (RedisStore
    # imports redis-py when it is created: 0.1 s per worker) and the CA bundle.
    import redis.asyncio  # noqa: F401
    import trio  # noqa: F401

    visitor_module._shared_ssl_context()
    for line in sys.stdin:
        command = json.loads(line)
        sys.stdout.flush()
        pid = os.fork()
        if pid == 0:
            try:
                anyio.run(_work, command, backend=command["backend"])
            except BaseException:
                traceback.print_exc()
            finally:
                os._exit(1)  # never fall back into the zygote's loop
        _, status = os.waitpid(pid, 0)
        _say(f"exit {os.waitstatus_to_exitcode(status)}")


if __name__ == "__main__":
    _zygote()
