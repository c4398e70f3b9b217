"""Every async test runs on asyncio and on trio."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .redis_server import RedisUnavailable, redis_server, unavailable


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
