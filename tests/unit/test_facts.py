"""Every inferred protocol fact lives in ``giosg_visitor._facts``, and only there."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from giosg_visitor import _facts


PACKAGE = Path(_facts.__file__).parent
#: Spellings that must come from ``_facts`` in the SDK's own code (the fake server in
#: ``giosg_visitor/testing`` plays the other side of the wire and spells them itself;
#: ``resource_id`` is also the SDK's own attribute name, so only ``resourceId`` is checked).
WIRE_SPELLINGS = (
    "/api/v5/public",
    "resourceId",
    "__qr__",
    "messagerouter",
    "service.giosg.com",
)


def test_every_public_constant_is_a_registered_fact() -> None:
    """Each fact has a name that is this module's constant, an evidence label and a note."""
    constants = {
        name
        for name in _facts.__all__
        if name.isupper() and name not in ("DOCUMENTED", "INFERRED", "FACTS")
    }
    assert constants == set(_facts.FACTS)
    for name, fact in _facts.FACTS.items():
        assert fact.name == name
        assert getattr(_facts, name) == fact.value
        assert fact.evidence in (_facts.DOCUMENTED, _facts.INFERRED)
        assert fact.note
        assert "\n" not in fact.note


def test_a_fact_is_registered_once_with_a_known_evidence() -> None:
    """The registry refuses duplicates and unknown evidence labels."""
    with pytest.raises(ValueError, match="twice"):
        _facts.fact("API_PREFIX", "/x", _facts.DOCUMENTED, "again")
    with pytest.raises(ValueError, match="evidence"):
        _facts.fact("NEW_FACT", 1, "rumoured", "nope")  # type: ignore[arg-type]


def _code_strings(path: Path) -> list[tuple[int, str]]:
    """String constants of a module's code, docstrings excluded."""
    tree = ast.parse(path.read_text())
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                docstrings.add(id(body[0].value))
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in docstrings
    ]


def test_no_module_spells_a_wire_fact_itself() -> None:
    """Outside ``_facts`` (and the fake server), the SDK imports these spellings."""
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE)
        if relative.parts[0] == "testing" or path.name == "_facts.py":
            continue
        for line, value in _code_strings(path):
            for spelling in WIRE_SPELLINGS:
                if spelling in value:
                    offenders.append(f"{relative}:{line}: {value!r}")
    assert offenders == []
