"""Old import paths of names that moved: a module ``__getattr__`` that forwards them."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from importlib import import_module
from typing import Any


__all__ = ["moved_names"]


def moved_names(
    module: str, moved: Mapping[str, str], *, deprecated: bool = True, stacklevel: int = 2
) -> Callable[[str], Any]:
    """A module ``__getattr__`` that finds each name of ``moved`` in its new module.

    Only names not defined in ``module`` reach a module ``__getattr__``, so the moved
    names cost nothing until an old import asks for one.

    Args:
        module: The old module's ``__name__`` (for the messages).
        moved: Name -> dotted path of the module that now holds it.
        deprecated: Warn (``DeprecationWarning``) on each access.
        stacklevel: Frames from the warning to the importing line: 2 when the result is
            the module's ``__getattr__``, 3 when a ``__getattr__`` of its own calls it.
    """

    def forward(name: str) -> Any:
        home = moved.get(name)
        if home is None:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        if deprecated:
            internal = any(part.startswith("_") for part in home.split("."))
            advice = "it is internal" if internal else f"import it from {home}"
            warnings.warn(
                f"{module}.{name} will be removed: {advice}",
                DeprecationWarning,
                stacklevel=stacklevel,
            )
        return getattr(import_module(home), name)

    return forward
