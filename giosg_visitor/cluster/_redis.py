"""One Redis connection shape for asyncio and trio (redis-py's asyncio client is asyncio-only).

The same approach as :class:`~giosg_visitor.RedisStore`: on asyncio a ``redis.asyncio``
client, on trio the synchronous client with each command in a worker thread. Errors are
mapped to the SDK's tree; the password never appears in a message.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, final

import anyio
import anyio.to_thread

from giosg_visitor.errors import ProtocolError, TransportError, TransportTimeoutError
from giosg_visitor.stores.redis import _connection, _current_backend, _import_redis


if TYPE_CHECKING:
    import redis
    import redis.asyncio


@final
class RedisLink:
    """Runs commands and scripts on the client that fits the running backend."""

    def __init__(
        self, url_or_client: str | redis.asyncio.Redis | redis.Redis, *, socket_timeout: float
    ) -> None:
        self._redis = _import_redis()
        self._socket_timeout = socket_timeout
        connection = _connection(self._redis, url_or_client, owner="RedisCoordinator")
        self._url = connection.url
        self._password = connection.password
        self.target = connection.target
        self._async_client = connection.async_client
        self._sync_client = connection.sync_client
        self.owns_client = connection.owns_client

    async def aclose(self) -> None:
        """Close the clients this link created (a client passed in stays open)."""
        if not self.owns_client:
            return
        async_client, self._async_client = self._async_client, None
        sync_client, self._sync_client = self._sync_client, None
        with anyio.CancelScope(shield=True):
            if async_client is not None:
                with contextlib.suppress(Exception):
                    await async_client.aclose()
            if sync_client is not None:
                await anyio.to_thread.run_sync(sync_client.close)

    async def execute(self, *command: str | int | float | bytes) -> Any:
        """Run one command."""
        if _current_backend() == "asyncio" and self._sync_client is None:
            async_client = self._async_client
            if async_client is None:
                async_client = self._async_client = self._from_url(self._redis.asyncio.Redis)
            with self._map_errors():
                return await async_client.execute_command(*command)
        sync_client = self._sync_client
        if sync_client is None:
            if not self.owns_client:
                raise RuntimeError(
                    "a redis.asyncio.Redis client works on asyncio only; on trio pass a URL "
                    "or a redis.Redis client to RedisCoordinator"
                )
            sync_client = self._sync_client = self._from_url(self._redis.Redis)
        client = sync_client
        with self._map_errors():
            return await anyio.to_thread.run_sync(lambda: client.execute_command(*command))

    async def script(
        self, source: str, keys: list[str], args: list[str | int | float | bytes]
    ) -> Any:
        """Run a Lua script (``EVAL``: Redis caches the compiled script by its digest)."""
        return await self.execute("EVAL", source, len(keys), *keys, *args)

    def _from_url(self, client_class: Any) -> Any:
        assert self._url is not None
        return client_class.from_url(
            self._url,
            socket_timeout=self._socket_timeout,
            socket_connect_timeout=self._socket_timeout,
        )

    @contextlib.contextmanager
    def _map_errors(self) -> Iterator[None]:
        exceptions = self._redis.exceptions
        try:
            yield
        except exceptions.TimeoutError as exc:
            raise TransportTimeoutError(self._message("timed out", exc)) from exc
        except exceptions.ConnectionError as exc:
            raise TransportError(self._message("could not be reached", exc)) from exc
        except exceptions.RedisError as exc:
            raise ProtocolError(self._message("answered with an error", exc)) from exc
        except TimeoutError as exc:
            raise TransportTimeoutError(self._message("timed out", exc)) from exc
        except OSError as exc:
            raise TransportError(self._message("could not be reached", exc)) from exc

    def _message(self, what: str, exc: BaseException) -> str:
        detail = str(exc) or type(exc).__name__
        if self._password:
            detail = detail.replace(self._password, "***")
        return f"Redis at {self.target} {what}: {detail}"
