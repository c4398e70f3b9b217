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

import os
import shutil
from typing import Final, NoReturn

from ._install import apt_install, install_once, unavailable as skip_or_fail


__all__ = [
    "CHROMIUM_ARGS",
    "CHROMIUM_ENV",
    "BrowserUnavailable",
    "find_chromium",
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
_INSTALL_TIMEOUT: Final = 900.0


class BrowserUnavailable(Exception):  # noqa: N818 - a reason to skip, not an error
    """No Chromium could be found or installed; the message says why."""


def unavailable(reason: str) -> NoReturn:
    """Skip the test for ``reason``; in CI, fail instead (browser tests must run there)."""
    skip_or_fail(f"the browser tests need a headless Chromium: {reason}")


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
    found = install_once(
        "chromium",
        _which,
        lambda: apt_install("chromium", error=BrowserUnavailable, timeout=_INSTALL_TIMEOUT),
    )
    if not found:
        raise BrowserUnavailable("apt-get installed chromium but it is not on PATH")
    return found
