"""A griffe extension for the API reference: the generated blocking twins as methods.

``giosg_visitor.sync`` builds most of its methods and properties from their async twins
(``send = _blocking(AsyncChat.send)``). Read as source, those are bare assignments with
no signature and no docstring, so the reference would skip them; this extension puts the
imported objects' view in their place (a function with the async signature and
docstring, or a property), before the Sphinx-markup pass rewrites the docstrings.

mkdocstrings loads this file through ``extensions:`` in ``mkdocs.yml``.
"""

from __future__ import annotations

from typing import Any

import griffe


__all__ = ["SyncTwins"]

_GENERATED = ("_blocking(", "_blocking_to(", "_Mirror(")


class SyncTwins(griffe.Extension):
    """Replaces generated twins in ``giosg_visitor.sync`` by their inspected form."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        """Swap the members once the package is loaded."""
        if pkg.path != "giosg_visitor" or "sync" not in pkg.members:
            return
        static = pkg["sync"]
        inspected = griffe.inspect("giosg_visitor.sync")
        for name, cls in static.classes.items():
            for member_name, member in list(cls.members.items()):
                value = str(getattr(member, "value", "") or "")
                if member.is_attribute and value.startswith(_GENERATED):
                    twin = inspected[f"{name}.{member_name}"]
                    if twin.is_attribute:
                        twin.labels.add("property")
                    cls.set_member(member_name, twin)
