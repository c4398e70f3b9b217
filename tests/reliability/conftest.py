"""Fixtures and hooks of the reliability suite.

* ``secret_sentinel`` (autouse, :mod:`tests.reliability.canary`): around every test, no
  secret in any log record, warning, exception or repr.
* ``figures``: the counters printed by ``scripts/reliability``.
* Long runs are marked ``slow`` and skipped unless ``-m slow`` selects them (or
  ``GIOSG_RELIABILITY_LONG=1``); the default suite keeps a short version of each.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from .canary import Sentinel, secret_sentinel
from .figures import FIGURES, FIGURES_ENV, Figures


__all__ = ["figures", "secret_sentinel"]

_HERE = os.path.dirname(os.path.abspath(__file__))
LONG_ENV = "GIOSG_RELIABILITY_LONG"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "canary_fakes_only: the secret sentinel watches only the fakes' secrets and explicit "
        "canaries (for tests that build secrets from generated data)",
    )


def _in_suite(item: pytest.Item) -> bool:
    return str(item.path).startswith(_HERE + os.sep)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    selected = config.getoption("markexpr", "") or ""
    if "slow" in selected or os.environ.get(LONG_ENV) == "1":
        return
    skip = pytest.mark.skip(reason="long run: scripts/reliability --long (or -m slow)")
    for item in items:
        if _in_suite(item) and item.get_closest_marker("slow") is not None:
            item.add_marker(skip)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    whole = os.environ.get("GIOSG_RELIABILITY_WHOLE") == "1"
    if not whole and not report.nodeid.startswith("tests/reliability/"):
        return
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        if hasattr(report, "wasxfail"):
            FIGURES.add("tests.xfailed" if report.skipped else "tests.failed")
        else:
            FIGURES.add(f"tests.{report.outcome}")
    elif report.when == "teardown" and report.failed:
        FIGURES.add("tests.failed")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    path = os.environ.get(FIGURES_ENV)
    if path:
        FIGURES.write(path)


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Figures:
    """The counters of this run (see :mod:`tests.reliability.figures`).

    A test marked ``xfail`` (a known bug) counts into a scratch copy instead: its lost
    messages or leaks are the bug it documents, reported by pytest, not by the figures.
    """
    if request.node.get_closest_marker("xfail") is not None:
        return Figures()
    return FIGURES


@pytest.fixture(autouse=True)
def count_faults(secret_sentinel: Sentinel) -> Iterator[None]:
    """After each test, add the faults its fakes injected to the figures."""
    yield
    for fake in secret_sentinel.fakes:
        FIGURES.add("faults.fake_http", fake.faults.injected)
    for router in secret_sentinel.routers:
        FIGURES.add("faults.refused_handshakes", router.refused_handshakes)
