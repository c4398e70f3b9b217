"""pytest plugin: ``giosg`` (a running :class:`FakeGiosg`) and ``fake_clock`` fixtures.

Registered through the ``pytest11`` entry point, so installing the package is enough.
The fixtures are async-backend neutral: use them from ``async def`` tests run by anyio.

The plugin imports nothing optional: a project that installs ``giosg-visitor`` without
the ``fake`` extra runs its tests as before, and only a test that asks for the ``giosg``
fixture fails, with the install command in its message.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import pytest


if TYPE_CHECKING:
    from ._clock import FakeClock
    from ._server import FakeGiosg


@pytest.fixture
async def giosg() -> AsyncIterator[FakeGiosg]:
    """A :class:`FakeGiosg` serving on 127.0.0.1 for the duration of the test.

    It knows no rooms yet: register the ones your test uses with
    ``await giosg.add_room(ROOM_ID)`` (or ``start_bot``/``operator_online`` in that room).
    """
    from . import FakeGiosg

    async with FakeGiosg() as fake:
        yield fake


@pytest.fixture
def fake_clock() -> FakeClock:
    """A fresh :class:`FakeClock`."""
    from ._clock import FakeClock

    return FakeClock()
