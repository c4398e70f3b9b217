"""A :class:`Chat`: send, receive (history then live, gap-free), typing, members, end."""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Final, Self, final

import anyio

from ._api import MAX_MESSAGE_LENGTH, VisitorAPI
from ._dedupe import SeenWindow
from ._facts import MEMBER_ID_KEY, choice_body
from ._lifecycle import AsyncResource
from .errors import (
    APIError,
    ChatEndedError,
    DeliveryUnknownError,
    GiosgError,
    MessageTooLongError,
    NotChoosableError,
    ProtocolError,
    TransportError,
)
from .models import Action, ChatInfo, Membership, Message
from .notebook import Transcript
from .realtime.events import Change


if TYPE_CHECKING:
    from .realtime.connection import RealtimeConnection
    from .realtime.streams import Subscription

__all__ = ["Chat", "MemberStream", "MessageStream"]

logger = logging.getLogger("giosg_visitor.chat")

#: Backfill attempts after a reconnect before the stream reports the failure upward.
_BACKFILL_ATTEMPTS: Final = 5
#: How far the server's clock may be behind ours, seconds. The message API takes no
#: idempotency key (a repeated POST is a second message), so a send with a lost response
#: is matched on read-back by text, sender, being unclaimed, and ``created_at`` no earlier
#: than the send's start minus this margin: an older message of the same text is never
#: taken for it.
READ_BACK_CLOCK_SKEW: Final = 120.0


@final
class Chat:
    """One chat of the visitor.

    Get one from :meth:`Visitor.start_chat`, :meth:`Visitor.chat` or :meth:`Visitor.chats`.
    Its :attr:`info` (and so :attr:`is_ended` and :attr:`is_waiting`) follows the server
    live while the visitor's socket is open.
    """

    def __init__(
        self,
        info: ChatInfo,
        *,
        api: VisitorAPI,
        realtime: Callable[[], RealtimeConnection],
    ) -> None:
        self._info = info
        self._api = api
        self._realtime = realtime
        self._changed = anyio.Event()

    # Live state ---------------------------------------------------------------------------

    @property
    def id(self) -> str:
        """The chat id."""
        return self._info.id

    @property
    def info(self) -> ChatInfo:
        """The latest chat resource."""
        return self._info

    @property
    def room_id(self) -> str | None:
        """The room of the chat."""
        return self._info.room_id

    @property
    def is_ended(self) -> bool:
        """Whether the chat has ended (it then accepts no messages)."""
        return self._info.is_ended

    @property
    def is_waiting(self) -> bool:
        """Whether the visitor is waiting for an operator's reply."""
        return self._info.is_waiting

    def _apply(self, changes: Mapping[str, Any] | ChatInfo) -> None:
        """Fold a ``changed`` notification (partial attributes) or a fresh resource in."""
        try:
            self._info = changes if isinstance(changes, ChatInfo) else self._info.merged(changes)
        except ProtocolError:
            logger.warning("ignored a malformed change of chat %s", self.id)
            return
        event, self._changed = self._changed, anyio.Event()
        event.set()

    async def wait_changed(self) -> ChatInfo:
        """Wait for the next change of :attr:`info` and return it."""
        await self._changed.wait()
        return self._info

    async def wait_ended(self) -> None:
        """Wait until the chat has ended (returns at once if it has)."""
        while not self.is_ended:
            await self.wait_changed()

    async def refresh(self) -> ChatInfo:
        """Fetch the chat from the server and return it."""
        self._apply(await self._api.get_chat(self.id))
        return self._info

    # Messages -----------------------------------------------------------------------------

    async def send(self, text: str) -> Message:
        """Send a text message.

        Not retried blindly: if the response is lost, the SDK reads the chat's messages
        back to learn whether it arrived, instead of sending it twice.

        Raises:
            TypeError: ``text`` is not a string.
            ValueError: ``text`` is empty.
            MessageTooLongError: Longer than the server's 2000-character limit (not sent).
            ChatEndedError: The chat has ended.
            DeliveryUnknownError: The response was lost and the chat could not be read
                back: the message may or may not have arrived (it is not resent).
            TransportError: The response was lost and the read-back shows that the
                message did not arrive.
            GiosgError: Another failure (typed).
        """
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, not {type(text).__name__}")
        if not text:
            raise ValueError("cannot send an empty message")
        if len(text) > MAX_MESSAGE_LENGTH:
            raise MessageTooLongError(len(text), MAX_MESSAGE_LENGTH)
        return await self._post(
            {"type": "msg", "message": text},
            lambda since: self._find_sent(lambda m: m.message == text, since=since),
        )

    async def choose(self, action: Action) -> Message:
        """Send the visitor's choice of a button; returns the choice (a message of type
        ``action`` whose :attr:`~Message.response_to` names the button).

        ``action`` comes from a message of this chat (:attr:`Message.actions` or
        :func:`~giosg_visitor.choosable_actions`): it knows its message and attachment.
        A link button is not chosen: it only opens its ``link_url`` in the visitor's
        browser, so this raises :class:`NotChoosableError` (``reason="link_button"``,
        with the ``link_url``) and sends nothing. Whether a button is still enabled is
        decided by the server; :func:`~giosg_visitor.choosable_actions` tells beforehand.

        Like :meth:`send`, it is not retried blindly: a lost response is settled by
        reading the chat back.

        Raises:
            TypeError: ``action`` is not an :class:`Action`.
            NotChoosableError: A link button, an unknown kind of action, or an action
                without the ids a choice refers to (nothing was sent).
            ChatEndedError: The chat has ended.
            DeliveryUnknownError: The response was lost and the chat could not be read
                back: the choice may or may not have arrived (it is not resent).
            GiosgError: Another failure (typed).
        """
        if not isinstance(action, Action):
            raise TypeError(f"action must be an Action, not {type(action).__name__}")
        if action.is_link:
            raise NotChoosableError(
                "a link button opens its link in the browser; there is no choice to send",
                reason="link_button",
                link_url=action.link_url,
            )
        if action.type != "button":
            raise NotChoosableError(
                f"unknown action type {str(action.type)!r}: not sent", reason="unknown_type"
            )
        if action.message_id is None or action.attachment_id is None or action.id is None:
            raise NotChoosableError(
                "the action lacks its message, attachment or action id", reason="no_id"
            )
        body = choice_body(
            message_id=action.message_id,
            attachment_id=action.attachment_id,
            action_id=action.id,
            text=action.text,
        )
        key = action.key
        return await self._post(
            body,
            lambda since: self._find_sent(
                lambda m: m.response_to is not None and m.response_to.key == key, since=since
            ),
        )

    async def _post(
        self, body: Mapping[str, Any], find: Callable[[float], Awaitable[Message | None]]
    ) -> Message:
        """POST a visitor message; a lost response is settled by ``find`` (a read-back)."""
        if self.is_ended:
            raise ChatEndedError(f"chat {self.id} has ended", status_code=0, method="POST", url="")
        started = self._api.now()
        try:
            return await self._api.send_message(self.id, body)
        except TransportError:
            # The request may or may not have been processed: read back, don't resend.
            try:
                found = await find(started - READ_BACK_CLOCK_SKEW)
            except GiosgError as exc:
                raise DeliveryUnknownError(
                    f"sending to chat {self.id}: the response was lost and reading the chat"
                    f" back failed ({type(exc).__name__}); the message may have arrived",
                    chat_id=self.id,
                ) from exc
            if found is not None:
                return found
            raise  # the chat was read back without it: it was not delivered
        except APIError as exc:
            if exc.status_code in (400, 403, 409):
                info = await self.refresh()
                if info.is_ended:
                    raise ChatEndedError(
                        f"chat {self.id} has ended",
                        status_code=exc.status_code,
                        method=exc.method,
                        url=exc.url,
                        body=exc.body,
                    ) from exc
            raise

    async def _find_sent(
        self, matches: Callable[[Message], bool], *, since: float
    ) -> Message | None:
        """The message a send with a lost response created, if the server has it.

        The newest visitor message that ``matches`` (same text, or same chosen button),
        that no earlier send has claimed and that was not created before ``since`` (UNIX
        time); claimed at once, with no
        checkpoint in between, so two concurrent sends of one text take one each.

        Raises:
            GiosgError: The chat could not be read back (the outcome is unknown).
        """
        latest: Message | None = None
        async for message in self._api.list_messages(self.id):
            if (
                message.is_from_visitor
                and matches(message)
                and not self._api.is_claimed(message.id)
                and (message.created_at is None or message.created_at.timestamp() >= since)
            ):
                latest = message
        if latest is not None:
            self._api.claim_sent(latest.id)
        return latest

    async def history(self) -> list[Message]:
        """Every message so far, oldest first (following every page)."""
        messages = [m async for m in self._api.list_messages(self.id)]
        return _in_order(messages)

    def messages(self, *, include_history: bool = True) -> MessageStream:
        """History, then live messages: each exactly once, in server order, gap-free.

        Subscribes to the chat's message channel *before* reading history, so nothing
        falls between the two; after every reconnect (or dropped notifications) it reads
        the messages back from REST and yields those it has not yielded yet.

        Use ``async for message in chat.messages():`` or, to release the subscription at
        a known point, ``async with chat.messages() as stream: async for message in stream``.

        Args:
            include_history: Yield the messages sent before the call first.
        """
        return MessageStream(self, include_history=include_history)

    def _message_from(self, event: Change) -> Message | None:
        if event.action != "added" or event.resource is None:
            return None
        try:
            return Message.from_api(event.resource, chat_id=self.id)
        except ProtocolError as exc:
            logger.warning("skipped a malformed message notification: %s", exc)
            return None

    async def _backfill(self, seen: SeenWindow) -> list[Message]:
        """Messages not seen yet, from REST, in order (retrying a failing server)."""
        for attempt in range(1, _BACKFILL_ATTEMPTS + 1):
            try:
                messages = await self.history()
            except (TransportError, APIError) as exc:
                if attempt == _BACKFILL_ATTEMPTS:
                    raise
                logger.warning("backfill of chat %s failed (%s); retrying", self.id, exc)
                await self._api.backoff(attempt)
                continue
            fresh = [m for m in messages if m not in seen]
            seen.update(fresh)
            return fresh
        return []  # pragma: no cover - the loop returns or raises

    # Members and typing -----------------------------------------------------------------------

    async def transcript(self, *, title: str | None = None) -> Transcript:
        """The history as a :class:`~giosg_visitor.notebook.Transcript`.

        In Jupyter, ``await chat.transcript()`` as a cell's last line shows it as HTML.

        Args:
            title: The heading (default: ``"Chat <id>"``).
        """
        history = await self.history()
        return Transcript(history, title=f"Chat {self.id}" if title is None else title)

    async def members(self) -> list[Membership]:
        """The chat's participants (visitor and operators)."""
        return [m async for m in self._api.list_memberships(self.id)]

    def member_changes(self) -> MemberStream:
        """Live membership updates: operators joining, typing, leaving.

        Yields the member's full, merged state after each change (typing is
        :attr:`Membership.is_typing`), starting with the current members.
        """
        return MemberStream(self)

    async def typing(self, is_typing: bool = True) -> None:
        """Tell the operators whether the visitor is typing."""
        status = "typing" if is_typing else "idle"
        await self._api.update_chat_membership(self.id, {"composing_status": status})

    async def set_participating(self, is_participating: bool) -> None:
        """Tell the server whether the visitor's chat window is open."""
        await self._api.update_chat_membership(self.id, {"is_participating": is_participating})

    async def end(self) -> ChatInfo:
        """End the chat (permanently: it accepts no more messages)."""
        self._apply(await self._api.end_chat(self.id))
        return self._info

    def __repr__(self) -> str:
        state = "ended" if self.is_ended else ("waiting" if self.is_waiting else "open")
        return f"<Chat {self.id} {state}>"


class _ChannelStream(AsyncResource):
    """Shared machinery: subscribe first, then read state from REST, then follow live."""

    def __init__(self, chat: Chat, channel: str) -> None:
        self._chat = chat
        self._channel = channel
        self._subscription: Subscription | None = None
        self._started = False
        self._closed = False

    async def _aopen(self) -> None:
        await self._ensure_started()

    def __aiter__(self) -> Self:
        return self

    async def aclose(self) -> None:
        """Stop following the channel."""
        self._closed = True
        if self._subscription is not None:
            await self._subscription.aclose()

    async def _ensure_started(self) -> Subscription:
        if self._closed:
            raise RuntimeError("the stream is closed")
        if self._subscription is not None and self._started:
            return self._subscription
        subscription = self._chat._realtime().subscribe(self._channel)
        self._subscription = subscription
        try:
            await subscription.wait_subscribed()
            await self._on_start()
        except BaseException:
            await subscription.aclose()
            raise
        self._started = True
        return subscription

    async def _on_start(self) -> None:
        raise NotImplementedError


@final
class MessageStream(_ChannelStream):
    """The messages of a chat: history, then live; each once, in order (see
    :meth:`Chat.messages`)."""

    def __init__(self, chat: Chat, *, include_history: bool) -> None:
        super().__init__(chat, chat._api.messages_channel(chat.id))
        self._include_history = include_history
        self._pending: deque[Message] = deque()
        # Bounded: a long chat must not grow the stream's memory (see SeenWindow).
        self._seen = SeenWindow()
        self._backfill_due = False

    async def _on_start(self) -> None:
        backlog = await self._chat._backfill(self._seen)
        if self._include_history:
            self._pending.extend(backlog)

    async def __anext__(self) -> Message:
        subscription = await self._ensure_started()
        while True:
            if self._backfill_due:
                # Cleared only after it succeeded: a backfill cut short by a caller's
                # timeout is redone on the next call, never lost with its marker.
                with self._chat._api.catching_up():
                    self._pending.extend(await self._chat._backfill(self._seen))
                self._backfill_due = False
            if self._pending:
                return self._pending.popleft()
            event = await anext(subscription)
            if isinstance(event, Change):
                live = self._chat._message_from(event)
                if live is not None and live not in self._seen:
                    self._seen.add(live)
                    return live
            else:
                # Resubscribed or Gap: notifications may be missing, read them back.
                self._backfill_due = True


@final
class MemberStream(_ChannelStream):
    """Membership updates of a chat (see :meth:`Chat.member_changes`)."""

    def __init__(self, chat: Chat) -> None:
        super().__init__(chat, chat._api.memberships_channel(chat.id))
        self._known: dict[str, dict[str, Any]] = {}
        self._pending: deque[Membership] = deque()
        self._resync_due = False

    async def _on_start(self) -> None:
        await self._resync()

    async def _resync(self) -> None:
        members = await self._chat.members()
        self._known = {m.member_id: _raw_member(m) for m in members}
        self._pending.extend(members)

    async def __anext__(self) -> Membership:
        subscription = await self._ensure_started()
        while True:
            if self._resync_due:
                with self._chat._api.catching_up():
                    await self._resync()  # redone if a caller's timeout cut it short
                self._resync_due = False
            if self._pending:
                return self._pending.popleft()
            event = await anext(subscription)
            if isinstance(event, Change):
                merged = _merge_member(self._known, event)
                if merged is not None:
                    return merged
            else:
                self._resync_due = True


def _in_order(messages: list[Message]) -> list[Message]:
    """Server order: by ``created_at`` (stable, so ties keep the server's list order)."""
    if all(m.created_at is not None for m in messages):
        return sorted(messages, key=lambda m: m.created_at)  # type: ignore[arg-type,return-value]
    return messages


def _raw_member(member: Membership) -> dict[str, Any]:
    return {
        **member.extra,
        "member_id": member.member_id,
        "member_type": member.member_type,
        "member_public_name": member.member_public_name,
        "chat_id": member.chat_id,
        "is_participating": member.is_participating,
        "is_present": member.is_present,
        "composing_status": member.composing_status,
        "message_count": member.message_count,
    }


def _merge_member(known: dict[str, dict[str, Any]], event: Change) -> Membership | None:
    member_id = event.resource_id or (event.resource or {}).get(MEMBER_ID_KEY)
    if not isinstance(member_id, str):
        return None
    if event.action == "removed":
        known.pop(member_id, None)
        return None
    merged = {**known.get(member_id, {}), **(event.resource or {}), MEMBER_ID_KEY: member_id}
    try:
        member = Membership.from_api(merged)
    except ProtocolError as exc:
        logger.warning("skipped a malformed membership notification: %s", exc)
        return None
    known[member_id] = merged
    return member
