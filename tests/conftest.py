"""Every async test runs on asyncio and on trio (``_backend_guard`` fails the run otherwise)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from giosg_visitor._budget import PROCESS_RETRY_BUDGET
from giosg_visitor.realtime._strategy import forget_discovered_strategies
from giosg_visitor.testing import FakeGiosg

# The backend coverage guard, a collection hook (re-exported so pytest finds it here).
from ._backend_guard import pytest_collection_modifyitems as pytest_collection_modifyitems
from ._helpers import ROOM_ID
from ._sockjs_router import (
    SockJSRouter,
    SockJSRouterUnavailable,
    start_sockjs_router,
    unavailable as unavailable_sockjs,
)
from .redis_server import RedisUnavailable, redis_server, unavailable


@pytest.fixture(autouse=True)
def _full_retry_budget() -> None:
    """Every test starts with the process-wide retry budget full, as a fresh process does.

    The budget is process-wide by design (visitors failing together back off together);
    without this, a test that exhausts it against
    a failing fake would change what the next test sees.
    """
    PROCESS_RETRY_BUDGET.reset()


@pytest.fixture
async def giosg() -> AsyncIterator[FakeGiosg]:
    """The plugin's ``giosg`` fixture with the tests' room registered.

    The fake answers rooms it does not know with 404, as Giosg does; this is how a
    project registers the rooms its own tests use.
    """
    async with FakeGiosg(rooms=[ROOM_ID]) as fake:
        yield fake


@pytest.fixture(autouse=True)
def _no_remembered_socket_strategy() -> None:
    """Every test starts without a remembered socket strategy, as a fresh process does.

    Ports are reused between tests: a strategy one test's server taught the process must
    not steer the next test's connections.
    """
    forget_discovered_strategies()


@pytest.fixture(params=[pytest.param("asyncio", id="asyncio"), pytest.param("trio", id="trio")])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL of a private redis-server (installed if missing); skips, or fails in CI."""
    try:
        with redis_server(tmp_path_factory.mktemp("redis")) as url:
            yield url
    except RedisUnavailable as exc:
        unavailable(str(exc))


@pytest.fixture
def sockjs_router() -> Iterator[SockJSRouter]:
    """A fresh sockjs-node message router (0.25 s heartbeats); see tests/_sockjs_router.py.

    Installs its npm packages on first use; skips without Node.js/npm, fails in CI.
    """
    try:
        with start_sockjs_router() as router:
            yield router
    except SockJSRouterUnavailable as exc:
        unavailable_sockjs(str(exc))
