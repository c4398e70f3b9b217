"""The coordinator's Redis link: the store's, with failures as transport errors.

The same link as :class:`~giosg_visitor.RedisStore`'s (on asyncio a ``redis.asyncio``
client, on trio the synchronous client with each command in a worker thread); a failure
is a :class:`~giosg_visitor.errors.TransportError`, a
:class:`~giosg_visitor.errors.TransportTimeoutError` or, for an error reply, a
:class:`~giosg_visitor.errors.ProtocolError`. The password never appears in a message.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Final

from giosg_visitor.errors import ProtocolError, TransportError, TransportTimeoutError
from giosg_visitor.stores.redis import _FAILURE_WORDS, _FailureKind, _RedisLink


if TYPE_CHECKING:
    import redis
    import redis.asyncio

__all__ = ["coordinator_link"]

_ERRORS: Final[Mapping[_FailureKind, type[TransportError | ProtocolError]]] = {
    "timeout": TransportTimeoutError,
    "connection": TransportError,
    "reply": ProtocolError,
}


def coordinator_link(
    url_or_client: str | redis.asyncio.Redis | redis.Redis, *, socket_timeout: float
) -> _RedisLink:
    """A link for ``RedisCoordinator`` (closing it ignores an error of the asyncio client)."""

    def translate(kind: _FailureKind, exc: BaseException) -> Exception:
        detail = str(exc) or type(exc).__name__
        if link.password:
            detail = detail.replace(link.password, "***")
        return _ERRORS[kind](f"Redis at {link.target} {_FAILURE_WORDS[kind]}: {detail}")

    link = _RedisLink(
        url_or_client,
        owner="RedisCoordinator",
        socket_timeout=socket_timeout,
        translate=translate,
        quiet_close=True,
    )
    return link
