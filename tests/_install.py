"""Getting the real servers the test command needs: skip or fail, install once, apt-get.

Shared by ``redis_server.py`` (Debian's ``redis-server``), ``_browser.py`` (Debian's
``chromium``) and ``_sockjs_router.py`` (the router's npm packages):

* :func:`unavailable` skips a test whose server cannot be had, except in CI (the ``CI``
  environment variable is set), where it fails, so those tests never vanish silently;
* :func:`install_once` runs an install under a lock file, so parallel test runs do not
  fight over dpkg or ``node_modules``, and skips it when another run got there first;
* :func:`run_installer` and :func:`apt_install` run the installer, non-interactive,
  raising the caller's "unavailable" exception with the tail of its output on failure;
* :func:`stop_process` stops a server process the tests started.
"""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import NoReturn, TypeVar

import pytest


__all__ = [
    "apt_install",
    "in_ci",
    "install_once",
    "run_installer",
    "stop_process",
    "unavailable",
]

T = TypeVar("T")


def in_ci() -> bool:
    """Whether the ``CI`` environment variable is set (to anything but a false value)."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def unavailable(message: str) -> NoReturn:
    """Skip the test with ``message``; in CI, fail instead (these tests must run there)."""
    if in_ci():
        pytest.fail(f"{message} (CI is set, so this is a failure, not a skip)", pytrace=False)
    pytest.skip(message)


def install_once(name: str, find: Callable[[], T | None], install: Callable[[], None]) -> T | None:
    """``find()``, after ``install()`` under the lock file ``name`` if it found nothing.

    Found again once the lock is held: another test run may have installed it meanwhile.
    """
    lock = Path(tempfile.gettempdir()) / f"giosg-visitor-{name}-install.lock"
    with lock.open("a") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            found = find()
            if found is None:
                install()
                found = find()
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)
    return found


def run_installer(
    command: Sequence[str],
    *,
    error: type[Exception],
    timeout: float,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    name: str | None = None,
) -> None:
    """Run ``command``; raise ``error`` with the tail of its output if it fails.

    ``name`` is how messages call the command (default: the whole command line).
    """
    said = name or " ".join(command)
    try:
        result = subprocess.run(
            list(command),
            cwd=cwd,
            env=None if env is None else dict(env),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise error(f"{said} failed: {exc}") from exc
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-5:]
        raise error(f"{said} exited with {result.returncode}: {' | '.join(tail)}")


def apt_install(
    package: str, *, error: type[Exception], timeout: float, options: Sequence[str] = ()
) -> None:
    """``apt-get update`` then ``apt-get install package`` (non-interactive)."""
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    # Wait for a dpkg lock held by someone else instead of failing at once.
    wait_for_lock = ["-o", "DPkg::Lock::Timeout=300"]
    for command in (
        ["apt-get", *wait_for_lock, "update", "-qq"],
        ["apt-get", *wait_for_lock, "install", "-y", "-qq", *options, package],
    ):
        run_installer(command, error=error, timeout=timeout, env=env)


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """Stop ``process`` if it still runs: SIGTERM, then SIGKILL after 5 s."""
    if process.poll() is None:
        process.send_signal(signal.SIGCONT)  # a frozen (SIGSTOP) process cannot handle SIGTERM
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
