"""A headless Chromium for the browser tests: Debian's ``chromium``, installed if missing.

:func:`find_chromium` looks for Chromium (``GIOSG_VISITOR_TEST_CHROMIUM``, then
``/usr/bin/chromium`` and ``PATH``); if there is none and we are root with ``apt-get``, it
installs Debian's ``chromium`` package (non-interactive, serialised by a lock file so
parallel test runs do not fight over dpkg). Playwright drives it through
``executable_path``: ``playwright install`` (a browser download) is never needed.

When no browser can be had, :func:`unavailable` skips with the reason, except in CI (the
``CI`` environment variable is set): there it fails, so the browser tests never vanish
silently.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Final, NoReturn

import pytest


__all__ = [
    "CHROMIUM_ARGS",
    "CHROMIUM_ENV",
    "BrowserUnavailable",
    "find_chromium",
    "in_ci",
    "unavailable",
]

#: Set this to a Chromium executable to use it instead of looking for one.
CHROMIUM_ENV: Final = "GIOSG_VISITOR_TEST_CHROMIUM"
#: Chromium in a container, as root, with no network but the test's own loopback servers.
CHROMIUM_ARGS: Final = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
_CANDIDATES: Final = ("/usr/bin/chromium", "chromium", "chromium-browser")
_INSTALL_LOCK: Final = Path(tempfile.gettempdir()) / "giosg-visitor-chromium-install.lock"
_INSTALL_TIMEOUT: Final = 900.0


class BrowserUnavailable(Exception):  # noqa: N818 - a reason to skip, not an error
    """No Chromium could be found or installed; the message says why."""


def in_ci() -> bool:
    """Whether the ``CI`` environment variable is set (to anything but a false value)."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def unavailable(reason: str) -> NoReturn:
    """Skip the test for ``reason``; in CI, fail instead (browser tests must run there)."""
    message = f"the browser tests need a headless Chromium: {reason}"
    if in_ci():
        pytest.fail(f"{message} (CI is set, so this is a failure, not a skip)", pytrace=False)
    pytest.skip(message)


def _which() -> str | None:
    configured = os.environ.get(CHROMIUM_ENV)
    if configured:
        return shutil.which(configured)
    for candidate in _CANDIDATES:
        found = shutil.which(candidate)
        if found:
            return found
    return None


def find_chromium() -> str:
    """The path of a Chromium executable, installing Debian's package first if needed.

    Raises:
        BrowserUnavailable: It is missing and cannot be installed here.
    """
    found = _which()
    if found:
        return found
    if os.environ.get(CHROMIUM_ENV):
        raise BrowserUnavailable(f"{CHROMIUM_ENV}={os.environ[CHROMIUM_ENV]} is not executable")
    if shutil.which("apt-get") is None:
        raise BrowserUnavailable(
            f"no chromium on PATH and no apt-get to install it (set {CHROMIUM_ENV})"
        )
    if os.geteuid() != 0:
        raise BrowserUnavailable(
            "no chromium on PATH and installing it needs root (run: sudo apt-get install chromium)"
        )
    with _INSTALL_LOCK.open("a") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            found = _which()  # another test run may have installed it meanwhile
            if not found:
                _apt_install("chromium")
                found = _which()
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)
    if not found:
        raise BrowserUnavailable("apt-get installed chromium but it is not on PATH")
    return found


def _apt_install(package: str) -> None:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    wait_for_lock = ["-o", "DPkg::Lock::Timeout=300"]  # wait for another dpkg, do not fail
    for command in (
        ["apt-get", *wait_for_lock, "update", "-qq"],
        ["apt-get", *wait_for_lock, "install", "-y", "-qq", package],
    ):
        try:
            result = subprocess.run(
                command,
                env=env,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=_INSTALL_TIMEOUT,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise BrowserUnavailable(f"{' '.join(command)} failed: {exc}") from exc
        if result.returncode != 0:
            tail = (result.stderr or result.stdout).strip().splitlines()[-5:]
            raise BrowserUnavailable(
                f"{' '.join(command)} exited with {result.returncode}: {' | '.join(tail)}"
            )
