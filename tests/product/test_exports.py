"""The public surface: every exported name exists, is documented and has one obvious home.

A public module is one whose dotted name has no part starting with ``_``; its ``__all__``
is its API. An object defined in a private module is public only through a public
``__all__``, and then it must be documented (a docstring and a reference entry).
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
import types
import warnings
from pathlib import Path
from typing import Any

import pytest

import giosg_visitor


ROOT = Path(__file__).parent.parent.parent

#: The store records' old paths: each still resolves, to the same object, silently.
STORE_RECORDS = ["AuthSession", "OrganizationSession", "StoredToken", "VisitorRecord"]
#: Internal names that moved: (old module, name, new module). Each still resolves at its
#: old path, to the same object, with a DeprecationWarning.
MOVED = [
    ("giosg_visitor.realtime", "CloseAction", "giosg_visitor.realtime._backoff"),
    ("giosg_visitor.realtime", "classify_close", "giosg_visitor.realtime._backoff"),
    ("giosg_visitor.realtime", "classify_handshake", "giosg_visitor.realtime._backoff"),
    ("giosg_visitor.realtime", "socket_endpoint", "giosg_visitor.realtime._urls"),
]


def _is_private(dotted: str) -> bool:
    return any(part.startswith("_") for part in dotted.split("."))


def _public_modules() -> list[types.ModuleType]:
    names = ["giosg_visitor"]
    names += [
        info.name
        for info in pkgutil.walk_packages(giosg_visitor.__path__, "giosg_visitor.")
        if not _is_private(info.name)
    ]
    return [importlib.import_module(name) for name in names]


PUBLIC_MODULES = _public_modules()
#: Every module of the package, private ones included (where constants are assigned).
ALL_MODULES = [
    importlib.import_module(info.name)
    for info in pkgutil.walk_packages(giosg_visitor.__path__, "giosg_visitor.")
    if not info.name.endswith("__main__")
]
#: Modules whose ``__all__`` is their API (the pytest plugin is found by entry point).
WITH_ALL = [module for module in PUBLIC_MODULES if hasattr(module, "__all__")]
EXPORTS = [
    (module, name) for module in WITH_ALL for name in module.__all__ if name != "__version__"
]


def _home(obj: Any) -> str:
    """The nearest public module at or above where ``obj`` is defined."""
    parts = obj.__module__.split(".")
    while _is_private(".".join(parts)):
        parts.pop()
    return ".".join(parts)


def _reference_directives() -> set[str]:
    text = "\n".join(p.read_text() for p in (ROOT / "docs" / "reference").glob("*.md"))
    return set(re.findall(r"^::: ([\w.]+)", text, flags=re.MULTILINE))


def _has_doc_comment(module: types.ModuleType, name: str) -> bool:
    """Whether ``name``'s assignment in ``module`` has a ``#:`` comment or a docstring."""
    lines = inspect.getsource(module).splitlines()
    for index, line in enumerate(lines):
        if re.match(rf"{re.escape(name)}\s*(:[^=]*)?=", line):
            above = lines[index - 1].lstrip() if index else ""
            below = lines[index + 1].lstrip() if index + 1 < len(lines) else ""
            return above.startswith("#:") or below.startswith('"""')
    return False


def test_root_all_is_exactly_the_public_namespace() -> None:
    """The root ``__all__`` is sorted and names every public attribute, and no other."""
    public = {
        name
        for name, value in vars(giosg_visitor).items()
        if not name.startswith(("_", "@"))  # "@py_*": pytest's assertion rewriting
        and not isinstance(value, types.ModuleType)
        and name != "annotations"  # from __future__
    }
    assert giosg_visitor.__all__ == sorted(giosg_visitor.__all__)
    assert set(giosg_visitor.__all__) - {"__version__"} == public


@pytest.mark.parametrize("module", WITH_ALL, ids=lambda module: module.__name__)
def test_every_name_exists_without_a_warning(module: types.ModuleType) -> None:
    """Each ``__all__`` name resolves (a deprecated alias would warn, and warnings fail)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        missing = [name for name in module.__all__ if not hasattr(module, name)]
    assert missing == []


@pytest.mark.parametrize("module", WITH_ALL, ids=lambda module: module.__name__)
def test_every_class_defined_in_a_public_module_is_in_its_all(module: types.ModuleType) -> None:
    """``__all__`` is not stale: a public class defined here is listed here."""
    unlisted = [
        name
        for name, value in vars(module).items()
        if inspect.isclass(value)
        and value.__module__ == module.__name__
        and not name.startswith("_")
        and name not in module.__all__
    ]
    assert unlisted == []


def test_every_export_is_documented() -> None:
    """Classes and functions have docstrings; constants and aliases a ``#:`` comment."""
    undocumented = []
    for module, name in EXPORTS:
        value = getattr(module, name)
        if inspect.isclass(value) or inspect.isroutine(value):
            documented = bool(inspect.getdoc(value))
        else:
            documented = any(_has_doc_comment(m, name) for m in ALL_MODULES)
        if not documented:
            undocumented.append(f"{module.__name__}.{name}")
    assert undocumented == []


def test_every_export_has_one_obvious_home() -> None:
    """Each exported class or function is listed where it lives.

    Its home is the nearest public module at or above the module that defines it
    (``giosg_visitor.stores._records`` -> ``giosg_visitor.stores``): re-exports elsewhere
    (the root package's conveniences) are aliases of that one object.
    """
    homeless = []
    for module, name in EXPORTS:
        value = getattr(module, name)
        if not (inspect.isclass(value) or inspect.isfunction(value)):
            continue
        home = importlib.import_module(_home(value))
        if getattr(home, name, None) is not value or name not in getattr(home, "__all__", ()):
            homeless.append(f"{module.__name__}.{name} (home {home.__name__})")
    assert homeless == []


def test_objects_of_private_modules_are_documented_where_exported() -> None:
    """An object defined in a private module has a reference entry under a public path."""
    directives = _reference_directives()
    module_directives = [d for d in directives if d != "giosg_visitor"]
    public_paths: dict[int, set[str]] = {}
    for module, name in EXPORTS:
        public_paths.setdefault(id(getattr(module, name)), set()).add(f"{module.__name__}.{name}")
    leaks = []
    for module, name in EXPORTS:
        value = getattr(module, name)
        if not (inspect.isclass(value) or inspect.isfunction(value)):
            continue
        if not _is_private(value.__module__):
            continue
        paths = public_paths[id(value)]
        if not any(
            path in directives or any(path.startswith(f"{d}.") for d in module_directives)
            for path in paths
        ):
            leaks.append(f"{module.__name__}.{name} ({value.__module__})")
    assert sorted(set(leaks)) == []


@pytest.mark.parametrize(("old", "name", "new"), MOVED)
def test_moved_names_still_import_with_a_deprecation_warning(old: str, name: str, new: str) -> None:
    """Old import paths keep working: the same object, and a DeprecationWarning."""
    module = importlib.import_module(old)
    assert name not in module.__all__
    with pytest.warns(DeprecationWarning, match=name):
        value = getattr(module, name)
    assert value is getattr(importlib.import_module(new), name)


@pytest.mark.parametrize("old", ["giosg_visitor", "giosg_visitor.models"])
def test_store_records_keep_their_old_paths_silently(old: str) -> None:
    """The root package and ``models`` still hand out the store records, without a warning."""
    import giosg_visitor.stores

    module = importlib.import_module(old)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for name in STORE_RECORDS:
            assert getattr(module, name) is getattr(giosg_visitor.stores, name)
            assert name not in module.__all__
            assert name in giosg_visitor.stores.__all__


def test_socket_errors_live_in_errors_and_are_re_exported() -> None:
    """The socket errors are defined in errors.py; their old homes hand out the same class."""
    from giosg_visitor import errors, realtime
    from giosg_visitor.realtime import _transport

    for name in ("HandshakeRejectedError", "BinaryFrameError"):
        cls = getattr(errors, name)
        assert cls.__module__ == "giosg_visitor.errors"
        assert name in errors.__all__
        assert getattr(_transport, name) is cls
    assert realtime.HandshakeRejectedError is errors.HandshakeRejectedError
    assert giosg_visitor.HandshakeRejectedError is errors.HandshakeRejectedError


def test_an_unknown_name_is_an_attribute_error() -> None:
    """The forwarding ``__getattr__`` answers only for the names that moved."""
    with pytest.raises(AttributeError, match="no_such_name"):
        _ = giosg_visitor.no_such_name
    with pytest.raises(AttributeError, match="no_such_name"):
        _ = giosg_visitor.realtime.no_such_name


def test_the_test_kit_exports_what_its_tests_annotate_and_check_with() -> None:
    """The kit's control types and the leak-check forms come from ``giosg_visitor.testing``."""
    from typing import get_type_hints

    from giosg_visitor import _secret, testing

    assert get_type_hints(testing.FakeGiosg.drop_sockets)["mode"] == testing.DropMode
    assert get_type_hints(testing.MessageRouter.drop_all)["mode"] == testing.DropMode
    rotation = get_type_hints(testing.FakeGiosg.__init__)["rotate_secrets"]
    assert rotation == testing.RotationMode | None
    value = "a+secret/with=everything\u00e9"
    assert testing.secret_forms(value) == _secret.secret_forms(value)
