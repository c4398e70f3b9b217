"""Every async test runs on asyncio and on trio (``_backend_guard`` fails the run otherwise)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from giosg_visitor._budget import PROCESS_RETRY_BUDGET

# The backend coverage guard, a collection hook (re-exported so pytest finds it here).
from ._backend_guard import pytest_collection_modifyitems as pytest_collection_modifyitems
from .redis_server import RedisUnavailable, redis_server, unavailable


@pytest.fixture(autouse=True)
def _full_retry_budget() -> None:
    """Every test starts with the process-wide retry budget full, as a fresh process does.

    The budget is shared by design (T22); without this, a test that exhausts it against
    a failing fake would change what the next test sees.
    """
    PROCESS_RETRY_BUDGET.reset()


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
