"""Typed, frozen value objects parsed tolerantly from the wire.

Parsing rules (one place): known fields are validated and typed; unknown keys are kept in
``extra`` rather than dropped; a missing or mistyped required field raises
:class:`~giosg_visitor.errors.ProtocolError` naming the field (never its value, which may
be a secret).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final, Literal, cast, final, get_args

import attrs

from ._compat import STORE_RECORDS, moved_names
from ._facts import (
    ACTION_LABEL_FIELD,
    CHOICE_DISABLES_WHOLE_MESSAGE,
    CHOICE_MESSAGE_TYPE,
    LATER_CHOICE_IS_VISITOR_MESSAGE,
)
from .errors import ProtocolError


__all__ = [
    "Action",
    "ActionReply",
    "ActionType",
    "Attachment",
    "ChatInfo",
    "IdentityChange",
    "Membership",
    "Message",
    "MessageType",
    "OnlineUser",
    "Room",
    "SenderType",
    "Unrecognized",
    "choosable_actions",
]

# The store records lived here; they are the store protocol's and live in
# giosg_visitor.stores now. This old path keeps working without a warning.
if TYPE_CHECKING:
    from .stores._records import (
        AuthSession as AuthSession,
        OrganizationSession as OrganizationSession,
        StoredToken as StoredToken,
        VisitorRecord as VisitorRecord,
    )

__getattr__ = moved_names(__name__, STORE_RECORDS, deprecated=False)

_EMPTY: Final[Mapping[str, Any]] = MappingProxyType({})


def parse_datetime(value: Any, *, field: str = "datetime") -> datetime | None:
    """Parse a Giosg timestamp (ISO 8601, with or without ``Z``) into an aware UTC datetime.

    ``None`` stays ``None``. A naive timestamp is taken as UTC (the docs show both forms).

    Raises:
        ProtocolError: The value is not a string or not ISO 8601.
    """
    if value is None:
        return None
    if not isinstance(value, str):
        raise ProtocolError(f"{field}: expected an ISO 8601 string, got {type(value).__name__}")
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ProtocolError(f"{field}: not an ISO 8601 timestamp") from None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except OverflowError:
        # 9999-12-31T23:59:59-01:00 is valid ISO 8601 but past datetime.max in UTC.
        raise ProtocolError(f"{field}: timestamp out of range") from None


def _require_str(data: Mapping[str, Any], name: str, *, where: str) -> str:
    value = data.get(name)
    if not isinstance(value, str) or not value:
        state = "missing" if name not in data or value is None else f"a {type(value).__name__}"
        raise ProtocolError(f"{where}: field {name!r} must be a non-empty string, got {state}")
    return value


def _freeze(mapping: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(dict(mapping)) if mapping else _EMPTY


def decode_json_object(content: bytes | str, *, where: str) -> dict[str, Any]:
    """Decode a JSON object body or raise :class:`ProtocolError` naming ``where``."""
    try:
        data = json.loads(content)
    except (ValueError, RecursionError):
        raise ProtocolError(f"{where}: the body is not valid JSON") from None
    if not isinstance(data, dict):
        raise ProtocolError(f"{where}: expected a JSON object, got {type(data).__name__}")
    return data


@final
@attrs.frozen(kw_only=True)
class IdentityChange:
    """The stored secret was rejected and a new visitor was started in its place.

    Only reported when ``on_invalid_secret="new_visitor"`` was chosen.

    Attributes:
        old_visitor_id: The visitor id that was lost (``None`` if none was stored).
        new_visitor_id: The visitor id now in use.
        at: Wall-clock UNIX time of the change.
    """

    old_visitor_id: str | None
    new_visitor_id: str
    at: float


# Chat resources -------------------------------------------------------------------------


def _opt_str(data: Mapping[str, Any], name: str, *, where: str) -> str | None:
    value = data.get(name)
    if value is None or isinstance(value, str):
        return value
    raise ProtocolError(f"{where}: field {name!r} must be a string or null")


def _opt_bool(data: Mapping[str, Any], name: str, *, where: str, default: bool = False) -> bool:
    value = data.get(name, default)
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    raise ProtocolError(f"{where}: field {name!r} must be a boolean")


def _opt_int(data: Mapping[str, Any], name: str, *, where: str) -> int | None:
    value = data.get(name)
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise ProtocolError(f"{where}: field {name!r} must be an integer")


def _opt_id(data: Mapping[str, Any], name: str, *, where: str) -> str | None:
    """An id or value that servers send as a string (numbers are taken as their text)."""
    value = data.get(name)
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise ProtocolError(f"{where}: field {name!r} must be a string or null")


def _opt_list(data: Mapping[str, Any], name: str, *, where: str) -> list[Any]:
    value = data.get(name)
    if value is None:
        return []
    if not isinstance(value, list):
        raise ProtocolError(f"{where}: field {name!r} must be a list or null")
    return value


def _mapping(data: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        raise ProtocolError(f"{where}: expected a JSON object, got {type(data).__name__}")
    return data


_CHAT_FIELDS: Final = frozenset(
    {
        "id",
        "room_id",
        "created_at",
        "updated_at",
        "ended_at",
        "is_ended",
        "is_waiting",
        "waiting_started_at",
        "chat_type",
        "message_count",
    }
)


@final
@attrs.frozen(kw_only=True)
class ChatInfo:
    """A chat resource as the visitor sees it.

    Attributes:
        id: Chat UUID.
        room_id: The room it belongs to.
        created_at: Creation time (aware UTC), if given.
        updated_at: Last change, if given.
        ended_at: When it ended, if it has.
        is_ended: Whether it has ended (then it accepts no more messages).
        is_waiting: Whether the visitor is waiting for an operator's reply.
        waiting_started_at: When waiting started, if it has.
        chat_type: ``"visitor"``, ``"task"`` or ``"external"``.
        message_count: Number of ``msg`` messages, if given.
        extra: Every other key (``token``, counters, ...), kept verbatim.
    """

    id: str
    room_id: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    ended_at: datetime | None = None
    is_ended: bool = False
    is_waiting: bool = False
    waiting_started_at: datetime | None = None
    chat_type: str | None = None
    message_count: int | None = None
    extra: Mapping[str, Any] = attrs.field(default=_EMPTY, repr=False)

    @classmethod
    def from_api(cls, data: Any) -> ChatInfo:
        """Parse a chat object.

        Raises:
            ProtocolError: A field is missing or mistyped.
        """
        where = "chat"
        data = _mapping(data, where)
        return cls(
            id=_require_str(data, "id", where=where),
            room_id=_opt_str(data, "room_id", where=where),
            created_at=parse_datetime(data.get("created_at"), field=f"{where}: created_at"),
            updated_at=parse_datetime(data.get("updated_at"), field=f"{where}: updated_at"),
            ended_at=parse_datetime(data.get("ended_at"), field=f"{where}: ended_at"),
            is_ended=_opt_bool(data, "is_ended", where=where),
            is_waiting=_opt_bool(data, "is_waiting", where=where),
            waiting_started_at=parse_datetime(
                data.get("waiting_started_at"), field=f"{where}: waiting_started_at"
            ),
            chat_type=_opt_str(data, "chat_type", where=where),
            message_count=_opt_int(data, "message_count", where=where),
            extra=_freeze({k: v for k, v in data.items() if k not in _CHAT_FIELDS}),
        )

    def merged(self, changes: Mapping[str, Any]) -> ChatInfo:
        """This chat with a ``changed`` notification's partial attributes applied."""
        raw = {**self.to_api(), **changes}
        return ChatInfo.from_api(raw)

    def to_api(self) -> dict[str, Any]:
        """The chat as a JSON-able dict (datetimes as ISO strings)."""
        out: dict[str, Any] = dict(self.extra)
        for name in _CHAT_FIELDS:
            value = getattr(self, name)
            out[name] = value.isoformat() if isinstance(value, datetime) else value
        return out


#: The documented message kinds (older servers send only the first four).
MessageType = Literal[
    "msg", "autosuggest", "join", "leave", "action", "system", "shoppingcart_locked"
]
#: The documented senders: ``user`` is an operator or a bot (the visitor API does not tell
#: them apart), ``visitor`` the visitor, ``rule`` an automated room rule.
SenderType = Literal["user", "visitor", "rule"]
#: The documented action kinds: a ``button`` is chosen, a ``link_button`` opens a link.
ActionType = Literal["button", "link_button"]

_MESSAGE_TYPES: Final[frozenset[str]] = frozenset(get_args(MessageType))
_SENDER_TYPES: Final[frozenset[str]] = frozenset(get_args(SenderType))
_ACTION_TYPES: Final[frozenset[str]] = frozenset(get_args(ActionType))
#: Message kinds that are events rather than something someone said to the visitor.
SYSTEM_MESSAGE_TYPES: Final[frozenset[str]] = frozenset({"join", "leave", "autosuggest"})


@final
@attrs.frozen
class Unrecognized:
    """A value the server sent that the SDK does not know yet, kept verbatim.

    ``Message.type``, ``Message.sender_type`` and ``Action.type`` are typed as the
    documented literals or this, so that a comparison with an undocumented value
    (``m.sender_type == "operator"``) is a type error under ``mypy --strict`` while a new
    server value still reaches you: ``str(value)`` and :attr:`raw` give the raw string.

    Attributes:
        raw: The string as sent.
    """

    raw: str

    def __str__(self) -> str:
        return self.raw


def _kind(
    data: Mapping[str, Any], name: str, known: frozenset[str], *, where: str
) -> str | Unrecognized | None:
    """A documented value as itself (callers narrow it to their literal), else wrapped."""
    value = data.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ProtocolError(f"{where}: field {name!r} must be a string or null")
    return value if value in known else Unrecognized(value)


_ACTION_FIELDS: Final = frozenset(
    {
        "id",
        "text",
        "type",
        "value",
        "style",
        "link_url",
        "link_target",
        "is_disabled_on_selection",
        "is_disabled_on_visitor_message",
    }
)


@final
@attrs.frozen(kw_only=True)
class Action:
    """A button of an :class:`Attachment`.

    A ``button`` is answered with :meth:`Chat.choose <giosg_visitor.Chat.choose>`; a
    ``link_button`` only opens :attr:`link_url` in the visitor's browser and sends
    nothing. Which buttons can still be chosen: :func:`choosable_actions`.

    Attributes:
        id: The action id (what a choice refers to), if the server gave one.
        text: The label shown on the button.
        type: ``"button"``, ``"link_button"`` or an :class:`Unrecognized` kind.
        value: What a choice of it reports as ``response_value``.
        style: A presentation hint (``"brand_primary"``...), if any.
        link_url: Where a link button leads.
        link_target: How a link button opens it (``"_blank"``...).
        is_disabled_on_selection: Disabled once the visitor chose an action of the message.
        is_disabled_on_visitor_message: Disabled once the visitor sent a later message.
        message_id: The message that carries it (filled in by the SDK, not a wire field).
        attachment_id: The attachment that carries it (filled in by the SDK).
        extra: Every other key, kept verbatim.
    """

    id: str | None = None
    text: str | None = None
    type: ActionType | Unrecognized = "button"
    value: str | None = None
    style: str | None = None
    link_url: str | None = None
    link_target: str | None = None
    is_disabled_on_selection: bool = False
    is_disabled_on_visitor_message: bool = False
    message_id: str | None = None
    attachment_id: str | None = None
    extra: Mapping[str, Any] = attrs.field(default=_EMPTY, repr=False)

    @property
    def is_link(self) -> bool:
        """Whether it is a link button (it opens a link and sends nothing)."""
        return self.type == "link_button"

    @property
    def key(self) -> tuple[str | None, str | None, str | None]:
        """``(message_id, attachment_id, id)``: what identifies it within a chat."""
        return (self.message_id, self.attachment_id, self.id)

    @classmethod
    def from_api(
        cls, data: Any, *, message_id: str | None = None, attachment_id: str | None = None
    ) -> Action:
        """Parse an action object.

        Raises:
            ProtocolError: A field is mistyped.
        """
        where = "action"
        data = _mapping(data, where)
        kind = cast(
            "ActionType | Unrecognized | None", _kind(data, "type", _ACTION_TYPES, where=where)
        )
        return cls(
            id=_opt_id(data, "id", where=where),
            text=_opt_str(data, ACTION_LABEL_FIELD, where=where),
            type="button" if kind is None else kind,
            value=_opt_str(data, "value", where=where),
            style=_opt_str(data, "style", where=where),
            link_url=_opt_str(data, "link_url", where=where),
            link_target=_opt_str(data, "link_target", where=where),
            is_disabled_on_selection=_opt_bool(data, "is_disabled_on_selection", where=where),
            is_disabled_on_visitor_message=_opt_bool(
                data, "is_disabled_on_visitor_message", where=where
            ),
            message_id=message_id,
            attachment_id=attachment_id,
            extra=_freeze({k: v for k, v in data.items() if k not in _ACTION_FIELDS}),
        )


_ATTACHMENT_FIELDS: Final = frozenset(
    {
        "id",
        "title",
        "title_link_url",
        "text",
        "image_url",
        "image_link_url",
        "link_target",
        "actions",
    }
)


@final
@attrs.frozen(kw_only=True)
class Attachment:
    """A rich part of a message: a card with a title, text, an image and buttons.

    Attributes:
        id: The attachment id (what a choice refers to), if the server gave one.
        title: The card's title.
        title_link_url: Where the title links to.
        text: The card's text.
        image_url: An image to show.
        image_link_url: Where the image links to.
        link_target: How its links open (``"_blank"``...).
        actions: Its buttons, in order.
        message_id: The message that carries it (filled in by the SDK, not a wire field).
        extra: Every other key, kept verbatim.
    """

    id: str | None = None
    title: str | None = None
    title_link_url: str | None = None
    text: str | None = None
    image_url: str | None = None
    image_link_url: str | None = None
    link_target: str | None = None
    actions: tuple[Action, ...] = ()
    message_id: str | None = None
    extra: Mapping[str, Any] = attrs.field(default=_EMPTY, repr=False)

    @classmethod
    def from_api(cls, data: Any, *, message_id: str | None = None) -> Attachment:
        """Parse an attachment object (and its actions).

        Raises:
            ProtocolError: A field is mistyped.
        """
        where = "attachment"
        data = _mapping(data, where)
        attachment_id = _opt_id(data, "id", where=where)
        actions = tuple(
            Action.from_api(item, message_id=message_id, attachment_id=attachment_id)
            for item in _opt_list(data, "actions", where=where)
        )
        return cls(
            id=attachment_id,
            title=_opt_str(data, "title", where=where),
            title_link_url=_opt_str(data, "title_link_url", where=where),
            text=_opt_str(data, "text", where=where),
            image_url=_opt_str(data, "image_url", where=where),
            image_link_url=_opt_str(data, "image_link_url", where=where),
            link_target=_opt_str(data, "link_target", where=where),
            actions=actions,
            message_id=message_id,
            extra=_freeze({k: v for k, v in data.items() if k not in _ATTACHMENT_FIELDS}),
        )


@final
@attrs.frozen(kw_only=True)
class ActionReply:
    """What a visitor's choice (a message of type ``action``) answers.

    Attributes:
        message_id: The message whose button was chosen.
        attachment_id: The attachment of that button.
        action_id: The button.
        value: The button's value (``response_value``), as the server reports it.
    """

    message_id: str | None = None
    attachment_id: str | None = None
    action_id: str | None = None
    value: str | None = None

    @property
    def key(self) -> tuple[str | None, str | None, str | None]:
        """``(message_id, attachment_id, action_id)``, comparable with :attr:`Action.key`."""
        return (self.message_id, self.attachment_id, self.action_id)


_REPLY_FIELDS: Final = {
    "message_id": "response_to_message_id",
    "attachment_id": "response_to_attachment_id",
    "action_id": "response_to_action_id",
    "value": "response_value",
}

_MESSAGE_FIELDS: Final = frozenset(
    {
        "id",
        "type",
        "chat_id",
        "created_at",
        "sender_type",
        "sender_id",
        "sender_public_name",
        "message",
        "attachments",
        *_REPLY_FIELDS.values(),
    }
)


@final
@attrs.frozen(kw_only=True)
class Message:
    """A chat message.

    Attributes:
        id: Message UUID (the deduplication key).
        type: ``msg``, ``autosuggest``, ``join``, ``leave``, ``action`` (a visitor's
            choice), ``system``, ``shoppingcart_locked``, or an :class:`Unrecognized` kind.
        chat_id: The chat, if the server said (the SDK fills it in otherwise).
        created_at: When it was created (aware UTC).
        sender_type: ``"user"`` (an operator or a bot: the visitor API does not tell them
            apart), ``"visitor"``, ``"rule"`` (an automated room rule), an
            :class:`Unrecognized` kind, or ``None`` if not sent.
        sender_id: The sender's id.
        sender_public_name: The name shown to the visitor (``None`` for anonymous).
        message: The text (``None`` for join/leave).
        attachments: Rich cards with buttons (see :class:`Attachment`).
        response_to: For a choice (``type == "action"``): what it answers.
        extra: Every other key (avatars, ``response_to_action``, ...), kept verbatim.
    """

    id: str
    type: MessageType | Unrecognized = "msg"
    chat_id: str | None = None
    created_at: datetime | None = None
    sender_type: SenderType | Unrecognized | None = None
    sender_id: str | None = None
    sender_public_name: str | None = None
    message: str | None = None
    attachments: tuple[Attachment, ...] = ()
    response_to: ActionReply | None = None
    extra: Mapping[str, Any] = attrs.field(default=_EMPTY, repr=False)

    @property
    def is_from_visitor(self) -> bool:
        """Whether the visitor sent it."""
        return self.sender_type == "visitor"

    @property
    def is_from_operator(self) -> bool:
        """Whether an operator or a bot sent it (``sender_type == "user"``).

        The visitor API gives bots and people the same sender type, so this is true for
        both; messages of automated room rules (``"rule"``) are not included.
        """
        return self.sender_type == "user"

    @property
    def is_system(self) -> bool:
        """Whether it is an event (``join``, ``leave``, ``autosuggest``), not a reply."""
        return isinstance(self.type, str) and self.type in SYSTEM_MESSAGE_TYPES

    @property
    def is_choice(self) -> bool:
        """Whether it is a visitor's choice of a button (see :attr:`response_to`)."""
        return self.type == CHOICE_MESSAGE_TYPE

    @property
    def actions(self) -> tuple[Action, ...]:
        """Every action of every attachment, in order."""
        return tuple(action for attachment in self.attachments for action in attachment.actions)

    @property
    def text(self) -> str:
        """What to show for it: the text, else a choice's value, else its kind."""
        if self.message:
            return self.message
        if self.response_to is not None and self.response_to.value:
            return self.response_to.value
        return str(self.type)

    @classmethod
    def from_api(cls, data: Any, *, chat_id: str | None = None) -> Message:
        """Parse a message object.

        Raises:
            ProtocolError: A field is missing or mistyped.
        """
        where = "message"
        data = _mapping(data, where)
        message_id = _require_str(data, "id", where=where)
        kind = cast(
            "MessageType | Unrecognized | None", _kind(data, "type", _MESSAGE_TYPES, where=where)
        )
        attachments = tuple(
            Attachment.from_api(item, message_id=message_id)
            for item in _opt_list(data, "attachments", where=where)
        )
        reply = {attr: _opt_id(data, key, where=where) for attr, key in _REPLY_FIELDS.items()}
        return cls(
            id=message_id,
            type="msg" if kind is None else kind,
            chat_id=_opt_str(data, "chat_id", where=where) or chat_id,
            created_at=parse_datetime(data.get("created_at"), field=f"{where}: created_at"),
            sender_type=cast(
                "SenderType | Unrecognized | None",
                _kind(data, "sender_type", _SENDER_TYPES, where=where),
            ),
            sender_id=_opt_str(data, "sender_id", where=where),
            sender_public_name=_opt_str(data, "sender_public_name", where=where),
            message=_opt_str(data, "message", where=where),
            attachments=attachments,
            response_to=ActionReply(**reply)
            if any(v is not None for v in reply.values())
            else None,
            extra=_freeze({k: v for k, v in data.items() if k not in _MESSAGE_FIELDS}),
        )


def choosable_actions(history: Iterable[Message]) -> list[Action]:
    """The buttons of a chat the visitor can still choose, oldest message first.

    ``history`` is the chat's messages in server order (:meth:`Chat.history
    <giosg_visitor.Chat.history>`, or what :meth:`Chat.messages
    <giosg_visitor.Chat.messages>` yielded so far). Link buttons are never included
    (they open a link and send nothing), nor actions without ids or of an unknown kind.
    An action with ``is_disabled_on_selection`` is left out once the visitor chose an
    action of its message; one with ``is_disabled_on_visitor_message`` once the visitor
    sent any later message (a choice included).
    """
    messages = list(history)
    chosen_in: set[str] = set()
    last_visitor_index: int = -1
    for index, message in enumerate(messages):
        if not message.is_from_visitor:
            continue
        if message.type == "msg" or (message.is_choice and LATER_CHOICE_IS_VISITOR_MESSAGE):
            last_visitor_index = index
        if message.response_to is not None and message.response_to.message_id is not None:
            chosen_in.add(message.response_to.message_id)
    chosen_actions = {
        m.response_to.key for m in messages if m.is_from_visitor and m.response_to is not None
    }
    out: list[Action] = []
    for index, message in enumerate(messages):
        for action in message.actions:
            if action.type != "button" or action.id is None or action.attachment_id is None:
                continue
            if action.is_disabled_on_selection and (
                message.id in chosen_in
                if CHOICE_DISABLES_WHOLE_MESSAGE
                else action.key in chosen_actions
            ):
                continue
            if action.is_disabled_on_visitor_message and last_visitor_index > index:
                continue
            out.append(action)
    return out


_MEMBER_FIELDS: Final = frozenset(
    {
        "member_id",
        "member_type",
        "member_public_name",
        "chat_id",
        "is_participating",
        "is_present",
        "composing_status",
        "message_count",
    }
)

#: composing_status values that mean "typing right now" (both vocabularies of the docs).
TYPING_STATUSES: Final = frozenset({"typing", "composing"})


@final
@attrs.frozen(kw_only=True)
class Membership:
    """A participant of a chat (memberships have no ``id``: ``member_id`` identifies them).

    Attributes:
        member_id: User UUID or visitor id.
        member_type: ``"visitor"`` or ``"user"``.
        member_public_name: Name shown to the visitor.
        chat_id: The chat.
        is_participating: Chat window open.
        is_present: Present in the chat.
        composing_status: ``idle``/``typing``/``typed`` (or ``composing``/``has_composed``).
        message_count: Messages sent by this member, if given.
        extra: Every other key, kept verbatim.
    """

    member_id: str
    member_type: str | None = None
    member_public_name: str | None = None
    chat_id: str | None = None
    is_participating: bool = False
    is_present: bool = False
    composing_status: str | None = None
    message_count: int | None = None
    extra: Mapping[str, Any] = attrs.field(default=_EMPTY, repr=False)

    @property
    def is_typing(self) -> bool:
        """Whether the member is typing now (either vocabulary)."""
        return self.composing_status in TYPING_STATUSES

    @property
    def is_operator(self) -> bool:
        """Whether the member is an operator or bot (a Giosg user)."""
        return self.member_type == "user"

    @classmethod
    def from_api(cls, data: Any) -> Membership:
        """Parse a membership object.

        Raises:
            ProtocolError: A field is missing or mistyped.
        """
        where = "membership"
        data = _mapping(data, where)
        return cls(
            member_id=_require_str(data, "member_id", where=where),
            member_type=_opt_str(data, "member_type", where=where),
            member_public_name=_opt_str(data, "member_public_name", where=where),
            chat_id=_opt_str(data, "chat_id", where=where),
            is_participating=_opt_bool(data, "is_participating", where=where),
            is_present=_opt_bool(data, "is_present", where=where),
            composing_status=_opt_str(data, "composing_status", where=where),
            message_count=_opt_int(data, "message_count", where=where),
            extra=_freeze({k: v for k, v in data.items() if k not in _MEMBER_FIELDS}),
        )


@final
@attrs.frozen(kw_only=True)
class Room:
    """A room as the visitor sees it.

    Attributes:
        id: Room UUID.
        display_name: Public name.
        language_code: ISO 639-1 code or ``None``.
        is_online: Whether any operator who can chat with the visitor is online.
        brand: The brand object, or ``None``.
        extra: Every other key, kept verbatim.
    """

    id: str
    display_name: str | None = None
    language_code: str | None = None
    is_online: bool = False
    brand: Mapping[str, Any] | None = None
    extra: Mapping[str, Any] = attrs.field(default=_EMPTY, repr=False)

    @classmethod
    def from_api(cls, data: Any) -> Room:
        """Parse a room object.

        Raises:
            ProtocolError: A field is missing or mistyped.
        """
        where = "room"
        data = _mapping(data, where)
        brand = data.get("brand")
        if brand is not None and not isinstance(brand, Mapping):
            raise ProtocolError(f"{where}: field 'brand' must be an object or null")
        known = {"id", "display_name", "language_code", "is_online", "brand"}
        return cls(
            id=_require_str(data, "id", where=where),
            display_name=_opt_str(data, "display_name", where=where),
            language_code=_opt_str(data, "language_code", where=where),
            is_online=_opt_bool(data, "is_online", where=where),
            brand=_freeze(brand) if brand else None,
            extra=_freeze({k: v for k, v in data.items() if k not in known}),
        )


@final
@attrs.frozen(kw_only=True)
class OnlineUser:
    """An operator online in a room.

    Attributes:
        id: User UUID.
        public_name: Alias or real name.
        avatar: ``{"id", "url"}`` or ``None``.
        extra: Every other key, kept verbatim.
    """

    id: str
    public_name: str | None = None
    avatar: Mapping[str, Any] | None = None
    extra: Mapping[str, Any] = attrs.field(default=_EMPTY, repr=False)

    @classmethod
    def from_api(cls, data: Any) -> OnlineUser:
        """Parse an online-user object.

        Raises:
            ProtocolError: A field is missing or mistyped.
        """
        where = "online user"
        data = _mapping(data, where)
        avatar = data.get("avatar")
        return cls(
            id=_require_str(data, "id", where=where),
            public_name=_opt_str(data, "public_name", where=where),
            avatar=_freeze(avatar) if isinstance(avatar, Mapping) else None,
            extra=_freeze(
                {k: v for k, v in data.items() if k not in {"id", "public_name", "avatar"}}
            ),
        )
