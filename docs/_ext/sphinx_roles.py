"""A griffe extension for the API reference: Sphinx markup in docstrings becomes Markdown.

The SDK's docstrings use Google sections with a few reStructuredText habits:

* roles such as :class:`~giosg_visitor.MemoryStore`, :meth:`Visitor.start_chat` or
  :meth:`title <giosg_visitor.realtime.RealtimeConnection.events>` become cross-references
  (``<autoref optional>``): a link when the target is rendered somewhere in the site, plain
  code otherwise, and never a broken-link warning;
* a paragraph ending in ``::`` (a literal block follows) ends in ``:`` instead, as
  reStructuredText renders it; the indented block below stays a code block.

mkdocstrings loads this file through ``extensions:`` in ``mkdocs.yml``.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from functools import partial
from typing import Any

import griffe


__all__ = ["SphinxMarkup"]

_ROLE = re.compile(
    r":(?:py:)?(?:class|meth|func|attr|data|exc|mod|obj|const):`(?P<tilde>~?)(?P<body>[^`]+)`"
)
_TITLED = re.compile(r"(?P<title>.*?)\s*<(?P<target>[^<>]+)>\s*", flags=re.DOTALL)
# "text::" at the end of a paragraph line, then a blank line: a literal block follows.
_LITERAL_INTRO = re.compile(r"(?m)(?<=\S)( ?)::$(?=\n\s*\n)")


class SphinxMarkup(griffe.Extension):
    """Rewrites Sphinx roles and literal-block markers in every docstring of the package."""

    def on_package(self, *, pkg: griffe.Module, loader: griffe.GriffeLoader, **kwargs: Any) -> None:
        """Rewrite the docstrings once the whole package is loaded (so targets resolve)."""
        for obj in _walk(pkg):
            docstring = obj.docstring
            if docstring is None:
                continue
            text = _ROLE.sub(partial(_reference, obj, loader=loader), docstring.value)
            docstring.value = _LITERAL_INTRO.sub(":", text)


def _walk(obj: griffe.Object) -> Iterator[griffe.Object]:
    yield obj
    for member in obj.members.values():
        if not member.is_alias and isinstance(member, griffe.Object):
            yield from _walk(member)


def _reference(obj: griffe.Object, match: re.Match[str], *, loader: griffe.GriffeLoader) -> str:
    body = " ".join(match["body"].split())
    titled = _TITLED.fullmatch(body)
    if titled is not None:
        title, target = titled["title"], titled["target"]
    else:
        target = body
        title = target.rsplit(".", 1)[-1] if match["tilde"] else target
    identifier = _resolve(obj, target.lstrip("~."), loader) or target
    return (
        f'<autoref identifier="{html.escape(identifier)}" optional>'
        f"<code>{html.escape(title)}</code></autoref>"
    )


def _resolve(obj: griffe.Object, target: str, loader: griffe.GriffeLoader) -> str | None:
    """The canonical path of ``target`` as seen from ``obj`` (Python's lookup order)."""
    scopes: list[griffe.Object] = []
    scope: griffe.Object | None = obj
    while scope is not None:
        scopes.append(scope)
        scope = scope.parent
    candidates = [f"{scope.path}.{target}" for scope in scopes]
    # Names a module imported (``from .models import Message``) resolve through it.
    candidates.append(target)
    for candidate in candidates:
        try:
            found = loader.modules_collection[candidate]
            return str(found.canonical_path)
        except (KeyError, ValueError, griffe.AliasResolutionError, griffe.CyclicAliasError):
            continue
    return None
