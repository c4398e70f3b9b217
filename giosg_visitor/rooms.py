"""Room helpers: live online-operator status."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Self, final

from ._api import VisitorAPI
from ._lifecycle import AsyncResource
from .errors import ProtocolError
from .models import OnlineUser
from .realtime.events import Change, Gap, Resubscribed


if TYPE_CHECKING:
    from .realtime.connection import RealtimeConnection
    from .realtime.streams import Subscription

__all__ = ["OnlineOperators"]

logger = logging.getLogger("giosg_visitor.rooms")


@final
class OnlineOperators(AsyncResource):
    """The operators online in a room: the current value, then every change.

    Example:
        >>> async with visitor.online_operators(ROOM_ID) as operators:
        ...     print([op.public_name for op in operators.current])
        ...     async for current in operators:  # after each change
        ...         print(len(current), "online")
    """

    def __init__(self, room_id: str, *, api: VisitorAPI, realtime: RealtimeConnection) -> None:
        self.room_id = room_id
        self._api = api
        self._realtime = realtime
        self._subscription: Subscription | None = None
        self._users: dict[str, OnlineUser] = {}
        self._resync_due = False

    @property
    def current(self) -> list[OnlineUser]:
        """The operators online now (as of the last change seen)."""
        return list(self._users.values())

    @property
    def is_online(self) -> bool:
        """Whether any operator is online."""
        return bool(self._users)

    async def _aopen(self) -> None:
        subscription = self._realtime.subscribe(self._api.online_users_channel(self.room_id))
        self._subscription = subscription
        try:
            await subscription.wait_subscribed()
            await self._resync()
        except BaseException:
            await subscription.aclose()
            raise

    async def aclose(self) -> None:
        """Stop following the room (what ``async with`` does on leaving); idempotent."""
        if self._subscription is not None:
            await self._subscription.aclose()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> list[OnlineUser]:
        if self._subscription is None:
            raise RuntimeError("use `async with visitor.online_operators(room_id)` first")
        if self._resync_due:
            with self._api.catching_up():
                await self._resync()  # redone if a caller's timeout cut it short
            self._resync_due = False
            return self.current
        async for event in self._subscription:
            if isinstance(event, Resubscribed | Gap):
                self._resync_due = True
                with self._api.catching_up():
                    await self._resync()
                self._resync_due = False
                return self.current
            if self._apply(event):
                return self.current
        raise StopAsyncIteration

    async def _resync(self) -> None:
        users = [u async for u in self._api.list_online_users(self.room_id)]
        self._users = {u.id: u for u in users}

    def _apply(self, event: Change) -> bool:
        resource: Mapping[str, Any] = event.resource or {}
        user_id = event.resource_id or resource.get("id")
        if not isinstance(user_id, str):
            return False
        if event.action == "removed":
            return self._users.pop(user_id, None) is not None
        base = self._users.get(user_id)
        merged: dict[str, Any] = {}
        if base is not None:
            merged = {**base.extra, "id": base.id, "public_name": base.public_name}
            if base.avatar is not None:
                merged["avatar"] = dict(base.avatar)
        merged.update(resource)
        merged["id"] = user_id
        try:
            self._users[user_id] = OnlineUser.from_api(merged)
        except ProtocolError as exc:
            logger.warning("skipped a malformed online-user notification: %s", exc)
            return False
        return True

    def __repr__(self) -> str:
        return f"<OnlineOperators room={self.room_id} online={len(self._users)}>"
