"""Where the ``giosg-visitor`` command keeps its files: the user's state folder.

The same rule as platformdirs' ``user_state_dir``, written out because it is short: the
command's files (a visitor's secret among them) must never land in the current folder,
where they end up in commits and source archives.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path


__all__ = ["user_state_dir"]

APP_NAME = "giosg-visitor"


def user_state_dir(
    *, environ: Mapping[str, str] | None = None, platform: str | None = None
) -> Path:
    """The folder for the command's state (not created here).

    * Linux and other Unix: ``$XDG_STATE_HOME/giosg-visitor``, by default
      ``~/.local/state/giosg-visitor``;
    * macOS: ``~/Library/Application Support/giosg-visitor``;
    * Windows: ``%LOCALAPPDATA%\\giosg-visitor``.
    """
    env = os.environ if environ is None else environ
    platform = sys.platform if platform is None else platform
    home = Path(env.get("HOME") or Path.home())
    if platform == "win32":
        local = env.get("LOCALAPPDATA")
        base = Path(local) if local else home / "AppData" / "Local"
    elif platform == "darwin":
        base = home / "Library" / "Application Support"
    else:
        # The XDG spec ignores a relative value: it would depend on the current folder.
        xdg = env.get("XDG_STATE_HOME", "")
        base = Path(xdg) if xdg and Path(xdg).is_absolute() else home / ".local" / "state"
    return base / APP_NAME
