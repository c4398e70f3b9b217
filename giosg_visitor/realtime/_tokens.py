"""Where a connection's tokens come from: one object it asks, never a call back up.

A :class:`RealtimeConnection <giosg_visitor.realtime.RealtimeConnection>` asks its
:class:`TokenSource` for the token of each batch of ``sub`` messages (and waits while a
renewal is in progress), tells it when the server rejected the credential (an auth close
code, a 401/403 handshake) and hands it a refused ``sub``'s token. Every one of those
triggers ends in the source's one renewal path. A :class:`~giosg_visitor.Visitor` passes
the source over its session (:class:`giosg_visitor._auth.SocketTokens`); the older
``token_provider`` / ``renew_token`` / ``token_refused`` callables are wrapped in
:class:`CallbackTokens`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Final, Protocol, final, runtime_checkable

from giosg_visitor._clock import Clock
from giosg_visitor._secret import Secret


__all__ = ["CallbackTokens", "TokenSource"]

logger = logging.getLogger("giosg_visitor.realtime")

#: A refusal of a token a refusal-triggered renewal issued less than this long ago is
#: final (a SubscriptionError): renewing again could not help. (The renewal spacing
#: of a visitor's session, 5 s by default, plays the same part.)
FRESH_TOKEN_WINDOW: Final = 5.0


@runtime_checkable
class TokenSource(Protocol):
    """What a real-time connection needs to know about tokens."""

    async def fresh(self) -> Secret:
        """The freshest usable access token, renewing first (or waiting for the renewal)."""
        ...

    async def renew(self) -> None:
        """The server rejected our credential: renew before the next attempt."""
        ...

    async def refused(self, token: Secret) -> bool:
        """The server refused ``token`` in a ``sub``: renew it (single-flight).

        Returns:
            ``True`` when another token may now be had; ``False`` when renewing cannot
            help (the token was issued a moment ago), which makes the refusal final.
        """
        ...

    def is_fresh(self, token: Secret) -> bool:
        """Whether a refusal of ``token`` is final at once (no retry is even queued)."""
        ...


@final
class CallbackTokens:
    """A :class:`TokenSource` made of the connection's separate callables.

    Args:
        provider: Returns the freshest usable token, renewing first if needed.
        renew: Forces a renewal (optional: without it nothing is renewed).
        refused: Judges a refused token itself (see :meth:`TokenSource.refused`); without
            it a refusal renews through ``renew``, and a refusal of the token that renewal
            issued less than five seconds ago is final.
        clock: Tells how long ago that renewal was.
    """

    __slots__ = ("_after_refusal", "_clock", "_fresh", "_provider", "_refused", "_renew")

    def __init__(
        self,
        provider: Callable[[], Awaitable[Secret]],
        *,
        renew: Callable[[], Awaitable[object]] | None,
        refused: Callable[[Secret], Awaitable[bool]] | None,
        clock: Clock,
    ) -> None:
        self._provider = provider
        self._renew = renew
        self._refused = refused
        self._clock = clock
        # The token a refusal-triggered renewal issued, and when.
        self._fresh: tuple[Secret, float] | None = None
        # The refused token, until the next fresh() tells what the renewal issued.
        self._after_refusal: Secret | None = None

    def __repr__(self) -> str:
        return "<CallbackTokens>"

    async def fresh(self) -> Secret:
        token = await self._provider()
        if not isinstance(token, Secret):
            raise TypeError("token_provider must return a giosg_visitor Secret")
        refused, self._after_refusal = self._after_refusal, None
        if refused is not None and token != refused:
            self._fresh = (token, self._clock.monotonic())
        return token

    async def renew(self) -> None:
        if self._renew is not None:
            await self._renew()

    async def refused(self, token: Secret) -> bool:
        if self._refused is not None:
            return await self._refused(token)
        if self._renew is None:
            return False
        logger.info("the server refused the socket token; renewing it")
        await self._renew()
        self._after_refusal = token
        return True

    def is_fresh(self, token: Secret) -> bool:
        # With a ``refused`` callable the owner judges freshness (it knows when tokens
        # were issued); this covers ``renew`` alone.
        fresh = self._fresh
        return (
            self._refused is None
            and fresh is not None
            and fresh[0] == token
            and self._clock.monotonic() - fresh[1] < FRESH_TOKEN_WINDOW
        )
