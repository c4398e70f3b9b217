"""A throwaway ``redis-server`` for the tests, installed from Debian's package if missing.

:func:`redis_server` finds ``redis-server`` on ``PATH``; if it is missing and we are root
with ``apt-get``, it installs the ``redis-server`` package (non-interactive, serialised
by a lock file so that parallel test runs do not fight over dpkg). It then starts the
server on a free port of 127.0.0.1 without persistence, waits until it answers ``PING``
and stops it on exit.

Set ``GIOSG_VISITOR_TEST_REDIS_URL`` to use a Redis you run yourself instead (tests only
touch keys under their own random prefixes, and may leave some behind).

When no Redis can be had, :func:`unavailable` skips with the reason, except in CI (the
``CI`` environment variable is set): there it fails, so that the Redis tests never
vanish silently.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Final, NoReturn

from ._install import apt_install, install_once, stop_process, unavailable as skip_or_fail


__all__ = ["REDIS_URL_ENV", "RedisUnavailable", "redis_server", "unavailable"]

REDIS_URL_ENV: Final = "GIOSG_VISITOR_TEST_REDIS_URL"
_INSTALL_TIMEOUT: Final = 600.0
_START_TIMEOUT: Final = 10.0
_START_ATTEMPTS: Final = 3


class RedisUnavailable(Exception):  # noqa: N818 - a reason to skip, not an error
    """No ``redis-server`` could be found, installed or started; the message says why."""


def unavailable(reason: str) -> NoReturn:
    """Skip the test for ``reason``; in CI, fail instead (Redis tests must run there)."""
    skip_or_fail(f"Redis tests need a redis-server: {reason}")


def find_redis_server() -> str:
    """The path of ``redis-server``, installing the Debian package first if needed.

    Raises:
        RedisUnavailable: It is missing and cannot be installed here.
    """
    found = shutil.which("redis-server")
    if found:
        return found
    if shutil.which("apt-get") is None:
        raise RedisUnavailable("redis-server is not on PATH and apt-get is not available")
    if os.geteuid() != 0:
        raise RedisUnavailable(
            "redis-server is not on PATH and installing it needs root "
            "(run: sudo apt-get install redis-server)"
        )
    found = install_once(
        "redis",
        lambda: shutil.which("redis-server"),
        lambda: apt_install(
            "redis-server",
            error=RedisUnavailable,
            timeout=_INSTALL_TIMEOUT,
            options=["--no-install-recommends"],
        ),
    )
    if not found:
        raise RedisUnavailable("apt-get installed redis-server but it is not on PATH")
    return found


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _answers_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def _start(executable: str, workdir: Path) -> tuple[subprocess.Popen[bytes], int]:
    """Start redis-server on a free port; retried because the port may be taken meanwhile."""
    problem = "it did not start"
    for attempt in range(_START_ATTEMPTS):
        port = _free_port()
        log = workdir / f"redis-{attempt}.log"
        with log.open("wb") as log_file:
            # Redis cannot pick a port itself (--port 0 disables TCP), hence _free_port().
            process = subprocess.Popen(
                [
                    executable,
                    "--port",
                    str(port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--daemonize",
                    "no",
                    "--dir",
                    str(workdir),
                    "--loglevel",
                    "warning",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                cwd=workdir,
            )
        deadline = time.monotonic() + _START_TIMEOUT
        while time.monotonic() < deadline and process.poll() is None:
            if _answers_ping(port):
                return process, port
            time.sleep(0.05)
        stop_process(process)
        output = log.read_text(errors="replace").strip().splitlines()[-3:]
        problem = f"exit code {process.returncode}: {' | '.join(output) or 'no output'}"
    raise RedisUnavailable(f"redis-server did not answer PING on 127.0.0.1 ({problem})")


@contextlib.contextmanager
def redis_server(workdir: Path) -> Iterator[str]:
    """Run a private redis-server on 127.0.0.1 and yield its URL; stop it on exit.

    ``GIOSG_VISITOR_TEST_REDIS_URL``, if set, is yielded instead and nothing is started.

    Args:
        workdir: An empty folder for the server's working directory and logs.

    Raises:
        RedisUnavailable: No redis-server could be found, installed or started.
    """
    configured = os.environ.get(REDIS_URL_ENV)
    if configured:
        yield configured
        return
    process, port = _start(find_redis_server(), workdir)
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        stop_process(process)
