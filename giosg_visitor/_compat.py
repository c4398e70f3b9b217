"""Old import paths of names that moved: a module ``__getattr__`` that forwards them."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from importlib import import_module
from typing import Any


__all__ = ["STORE_RECORDS", "moved_names"]

#: The store records, once exported by the root package and ``models``, and their home.
STORE_RECORDS: Mapping[str, str] = dict.fromkeys(
    ["AuthSession", "OrganizationSession", "StoredToken", "VisitorRecord"], "giosg_visitor.stores"
)


def moved_names(
    module: str, moved: Mapping[str, str], *, deprecated: bool = True
) -> Callable[[str], Any]:
    """A module ``__getattr__`` that finds each name of ``moved`` in its new module.

    Only names not defined in ``module`` reach a module ``__getattr__``, so the moved
    names cost nothing until an old import asks for one.

    Args:
        module: The old module's ``__name__`` (for the messages).
        moved: Name -> dotted path of the module that now holds it.
        deprecated: Warn (``DeprecationWarning``, at the importing line) on each access;
            the result must then be the module's ``__getattr__`` itself.
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
                stacklevel=2,
            )
        return getattr(import_module(home), name)

    return forward
