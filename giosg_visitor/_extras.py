"""Install hints for optional dependencies: a missing extra names the ``pip install`` to run."""

from __future__ import annotations

import importlib.util
from typing import Final


__all__ = ["FAKE_HINT", "TRIO_HINT", "missing_module", "require"]

FAKE_HINT: Final = (
    'the fake Giosg needs its web stack (starlette, uvicorn): pip install "giosg-visitor[fake]"'
)
TRIO_HINT: Final = 'the trio backend needs trio: pip install "giosg-visitor[trio]"'


def missing_module(*names: str) -> str | None:
    """The first of ``names`` that cannot be imported, or ``None`` if all can."""
    for name in names:
        if importlib.util.find_spec(name) is None:
            return name
    return None


def require(*names: str, hint: str) -> None:
    """Raise :class:`ModuleNotFoundError` with ``hint`` if one of ``names`` is missing.

    The error stays a ``ModuleNotFoundError`` (with ``.name`` set), so code that already
    catches the bare one keeps working; only the message gains the install command.
    """
    missing = missing_module(*names)
    if missing is not None:
        raise ModuleNotFoundError(f"No module named {missing!r}: {hint}", name=missing)
