"""pytest plugin: ``giosg`` (a running :class:`FakeGiosg`) and ``fake_clock`` fixtures.

Registered through the ``pytest11`` entry point, so installing the package is enough.
The fixtures are async-backend neutral: use them from ``async def`` tests run by anyio.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from ._clock import FakeClock
from ._server import FakeGiosg


@pytest.fixture
async def giosg() -> AsyncIterator[FakeGiosg]:
    """A :class:`FakeGiosg` serving on 127.0.0.1 for the duration of the test."""
    async with FakeGiosg() as fake:
        yield fake


@pytest.fixture
def fake_clock() -> FakeClock:
    """A fresh :class:`FakeClock`."""
    return FakeClock()
