"""A collection check: every async test is collected for asyncio *and* for trio.

The SDK promises both anyio backends, and the test suite keeps that promise only if each
async test runs on both: a test that overrides ``anyio_backend`` with one value, or a
parametrization that leaves one backend out, silently halves the coverage. This hook looks
at the collected items *before* ``-k``/``-m`` deselection and fails the run (a usage error
listing the offenders) when an async test has only one backend, unless it is marked::

    @pytest.mark.single_backend(reason="why the other backend cannot run it")

(the marker is registered in ``pyproject.toml``).
A ``single_backend`` marker without a non-empty ``reason`` is an error too. Selecting one
parametrization explicitly on the command line (``path::test[asyncio]``) turns the check off
for that run, since the other half was deliberately not asked for.
"""

from __future__ import annotations

import inspect
from collections import defaultdict
from typing import Final

import pytest


__all__ = ["BACKENDS", "MARKER", "problems", "pytest_collection_modifyitems"]

#: The backends every async test runs on.
BACKENDS: Final = frozenset({"asyncio", "trio"})
#: The marker that exempts a test (with a written reason).
MARKER: Final = "single_backend"


def _is_async(item: pytest.Function) -> bool:
    function = item.function
    inner = getattr(getattr(function, "hypothesis", None), "inner_test", function)
    return inspect.iscoroutinefunction(inner) or inspect.isasyncgenfunction(inner)


def _backend(item: pytest.Function) -> str:
    """The backend of ``item``: its parameter, else ``fixed`` (an unparametrized override)."""
    callspec = getattr(item, "callspec", None)
    if callspec is not None and "anyio_backend" in callspec.params:
        value = callspec.params["anyio_backend"]
        name = value[0] if isinstance(value, tuple) else value
        return str(name)
    return "fixed"


def _key(item: pytest.Function) -> str:
    """The test without its backend: the node id with the backend's id part taken out."""
    backend = _backend(item)
    base, bracket, ids = item.nodeid.partition("[")
    if not bracket:
        return base
    parts = ids.rstrip("]").split("-")
    if backend in parts:
        parts.remove(backend)
    return f"{base}[{'-'.join(parts)}]" if parts else base


def _explicit_parametrization(config: pytest.Config) -> bool:
    return any("::" in str(arg) and "[" in str(arg) for arg in config.args)


def problems(items: list[pytest.Item]) -> list[str]:
    """What is wrong with the backends of the async tests among ``items`` (empty: nothing)."""
    found: list[str] = []
    backends: dict[str, set[str]] = defaultdict(set)
    exempt: set[str] = set()
    for item in items:
        if not isinstance(item, pytest.Function) or not _is_async(item):
            continue
        key = _key(item)
        backends[key].add(_backend(item))
        marker = item.get_closest_marker(MARKER)
        if marker is None:
            continue
        reason = marker.kwargs.get("reason", marker.args[0] if marker.args else "")
        if not isinstance(reason, str) or not reason.strip():
            found.append(f"{item.nodeid}: @pytest.mark.{MARKER} needs a written reason=")
        exempt.add(key)
    for name, seen in sorted(backends.items()):
        missing = sorted(BACKENDS - seen)
        if missing and name not in exempt:
            on = ", ".join(sorted(seen))
            found.append(
                f"{name}: collected for {on} but not for {', '.join(missing)} "
                f"(run it on both, or mark it @pytest.mark.{MARKER}(reason=...))"
            )
    return sorted(set(found))


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Fail the run if an async test misses a backend (before ``-k``/``-m`` deselect)."""
    if _explicit_parametrization(config):
        return
    found = problems(items)
    if found:
        raise pytest.UsageError(
            "async tests must run on asyncio and trio:\n  " + "\n  ".join(found)
        )
