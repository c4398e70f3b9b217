"""The fake Giosg's chats, messages, memberships, rooms and online operators.

Resources have the fields of Giosg's visitor API; every change is published on the
resource's channels (``added``/``changed``/``removed``) with the side effects the real
service has (a message changes its chat, a membership changes the member list).
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final, final

import attrs
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


if TYPE_CHECKING:
    from ._fake import FakeState, TokenInfo

__all__ = ["ChatWorld", "chat_routes"]

MAX_MESSAGE_LENGTH: Final = 2000
_FORBIDDEN: Final = "You do not have permission to perform this action."


@final
@attrs.define(kw_only=True)
class FakeChat:
    """A chat and everything in it."""

    resource: dict[str, Any]
    visitor_id: str
    organization_id: str
    members: dict[str, dict[str, Any]] = attrs.field(factory=dict)
    messages: list[dict[str, Any]] = attrs.field(factory=list)


@final
@attrs.define(kw_only=True)
class FakeRoom:
    """A room, its online operators and present visitors."""

    id: str
    organization_id: str
    display_name: str = "Customer Service"
    online_users: dict[str, dict[str, Any]] = attrs.field(factory=dict)
    presence: dict[str, dict[str, Any]] = attrs.field(factory=dict)
    brand: dict[str, Any] | None = None


@final
class ChatWorld:
    """Chats and rooms of the fake; its methods are the operator controls' bodies."""

    def __init__(self, state: FakeState) -> None:
        self._state = state
        self.rooms: dict[str, FakeRoom] = {}
        #: Room ids registered before any organization used them (``FakeGiosg(rooms=...)``).
        self.registered_room_ids: set[str] = set()
        #: Answer any room id as if it existed (the old, permissive behaviour).
        self.accept_any_room = False
        self.chats: dict[str, FakeChat] = {}
        self.page_size = 50
        #: ``next``/``previous`` as ``?cursor=...`` relative to the page (not absolute).
        self.relative_links = False
        #: Called with (chat, message) after a visitor's message is stored (the bot).
        self.on_visitor_message: list[Callable[[FakeChat, dict[str, Any]], None]] = []
        #: Called with the chat after a visitor started it.
        self.on_chat_started: list[Callable[[FakeChat], None]] = []

    # Channels -----------------------------------------------------------------------------

    @staticmethod
    def chats_channel(visitor_id: str) -> str:
        return f"/api/v5/public/visitors/{visitor_id}/chats"

    def _publish_chat(self, chat: FakeChat, action: str, fields: dict[str, Any] | None) -> None:
        resource = {"id": chat.resource["id"], **(fields or chat.resource)}
        self._state.publish(self.chats_channel(chat.visitor_id), action, resource, None)

    def _publish_message(self, chat: FakeChat, message: dict[str, Any]) -> None:
        channel = f"{self.chats_channel(chat.visitor_id)}/{chat.resource['id']}/messages"
        self._state.publish(channel, "added", message, None)

    def publish_member(self, chat: FakeChat, member: dict[str, Any], action: str) -> None:
        chat_id = chat.resource["id"]
        base = f"/api/v5/public/visitors/{chat.visitor_id}"
        resource = member if action != "removed" else None
        self._state.publish(
            f"{base}/chats/{chat_id}/memberships", action, resource, member["member_id"]
        )
        if member["member_type"] == "visitor":
            for spelling in ("chat_memberships", "chats_memberships"):
                self._state.publish(f"{base}/{spelling}", action, resource, chat_id)

    def _room_channels(self, room: FakeRoom) -> tuple[str, ...]:
        org_form = f"/api/v5/public/orgs/{room.organization_id}/rooms/{room.id}"
        return (org_form, f"/api/v5/public/rooms/{room.id}")

    # Rooms and operators ----------------------------------------------------------------------

    def room(self, organization_id: str, room_id: str) -> FakeRoom:
        """The room, created (and so registered) if it does not exist yet.

        The operator side uses this: an operator coming online, a bot or a brand makes
        the room exist. Visitor endpoints use :meth:`find_room`, which does not create.
        """
        room = self.rooms.get(room_id)
        if room is None:
            room = FakeRoom(id=room_id, organization_id=organization_id)
            self.rooms[room_id] = room
        return room

    def find_room(self, organization_id: str, room_id: str) -> FakeRoom | None:
        """The room as a visitor of ``organization_id`` sees it, or ``None`` (a 404).

        A room exists if it was registered (``FakeGiosg(rooms=...)``, ``add_room``) or
        made by an operator control; another organization's room does not exist for this
        one. With ``accept_any_room`` every id exists, as in older versions of the fake.
        """
        room = self.rooms.get(room_id)
        if room is not None:
            if room.organization_id != organization_id and not self.accept_any_room:
                return None
            return room
        if room_id in self.registered_room_ids or self.accept_any_room:
            return self.room(organization_id, room_id)
        return None

    def room_resource(self, room: FakeRoom) -> dict[str, Any]:
        return {
            "id": room.id,
            "display_name": room.display_name,
            "language_code": "en",
            "is_online": bool(room.online_users),
            "brand": room.brand,
        }

    def operator_online(self, organization_id: str, room_id: str, name: str) -> str:
        """An operator comes online in a room; returns the user id."""
        room = self.room(organization_id, room_id)
        user_id = str(uuid.uuid4())
        user: dict[str, Any] = {"id": user_id, "public_name": name, "avatar": None}
        was_online = bool(room.online_users)
        room.online_users[user_id] = user
        for channel in self._room_channels(room):
            self._state.publish(f"{channel}/online_users", "added", user, None)
            if not was_online:
                self._state.publish(channel, "changed", {"id": room.id, "is_online": True}, None)
        return user_id

    def operator_offline(self, room_id: str, user_id: str) -> None:
        """An operator goes offline."""
        room = self.rooms[room_id]
        room.online_users.pop(user_id, None)
        for channel in self._room_channels(room):
            self._state.publish(f"{channel}/online_users", "removed", None, user_id)
            if not room.online_users:
                self._state.publish(channel, "changed", {"id": room.id, "is_online": False}, None)

    def operator_name(self, user_id: str) -> str:
        for room in self.rooms.values():
            if user_id in room.online_users:
                return str(room.online_users[user_id]["public_name"])
        return "Operator"

    def operator_joins(self, chat_id: str, user_id: str) -> None:
        """An operator joins a chat: a membership and a ``join`` message."""
        chat = self.chats[chat_id]
        if user_id in chat.members:
            return
        member = self._member(chat, user_id, "user", self.operator_name(user_id))
        chat.members[user_id] = member
        self.publish_member(chat, member, "added")
        res = chat.resource
        res["member_count"] += 1
        res["user_member_count"] += 1
        self._publish_chat(chat, "changed", {"member_count": res["member_count"]})
        self._add_message(chat, user_id, "user", None, type_="join")

    def operator_typing(self, chat_id: str, user_id: str, typing: bool) -> None:
        """An operator starts or stops typing."""
        chat = self.chats[chat_id]
        member = chat.members[user_id]
        member["composing_status"] = "typing" if typing else "idle"
        self.publish_member(chat, member, "changed")

    def operator_says(
        self,
        chat_id: str,
        user_id: str,
        text: str | None,
        *,
        attachments: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """An operator sends a message (joining first if needed), rich if ``attachments``.

        Attachments and actions without an ``id`` get one, as the server assigns them.
        """
        chat = self.chats[chat_id]
        if chat.resource["is_ended"]:
            raise ValueError("the chat has ended")
        if user_id not in chat.members:
            self.operator_joins(chat_id, user_id)
        return self._add_message(
            chat, user_id, "user", text, attachments=with_ids(attachments or [])
        )

    def end_chat(self, chat_id: str) -> dict[str, Any]:
        """End a chat (either side)."""
        chat = self.chats[chat_id]
        if not chat.resource["is_ended"]:
            chat.resource.update(is_ended=True, is_waiting=False, ended_at=self._state.iso_in(0))
            chat.resource["updated_at"] = chat.resource["ended_at"]
            self._publish_chat(
                chat,
                "changed",
                {"is_ended": True, "ended_at": chat.resource["ended_at"], "is_waiting": False},
            )
        return chat.resource

    # Visitor actions ------------------------------------------------------------------------

    def start_chat(self, token: TokenInfo, room_id: str) -> FakeChat:
        now = self._state.iso_in(0)
        chat_id = str(uuid.uuid4())
        resource: dict[str, Any] = {
            "id": chat_id,
            "token": uuid.uuid4().hex,
            "created_at": now,
            "updated_at": now,
            "ended_at": None,
            "is_ended": False,
            "is_waiting": False,
            "waiting_started_at": None,
            "room_id": room_id,
            "chat_type": "visitor",
            "is_autosuggested": False,
            "is_encrypted": False,
            "message_count": 0,
            "user_message_count": 0,
            "visitor_message_count": 0,
            "member_count": 1,
            "user_member_count": 0,
            "visitor_member_count": 1,
            "present_participant_count": 1,
            "present_user_participant_count": 0,
            "present_visitor_participant_count": 1,
        }
        chat = FakeChat(
            resource=resource, visitor_id=token.visitor_id, organization_id=token.organization_id
        )
        chat.members[token.visitor_id] = self._member(chat, token.visitor_id, "visitor", None)
        self.chats[chat_id] = chat
        self._publish_chat(chat, "added", None)
        self.publish_member(chat, chat.members[token.visitor_id], "added")
        for callback in list(self.on_chat_started):
            callback(chat)
        return chat

    def _member(
        self, chat: FakeChat, member_id: str, member_type: str, name: str | None
    ) -> dict[str, Any]:
        now = self._state.iso_in(0)
        return {
            "member_id": member_id,
            "member_type": member_type,
            "member_public_name": name,
            "member_avatar": None,
            "chat_id": chat.resource["id"],
            "created_at": now,
            "updated_at": now,
            "message_count": 0,
            "is_participating": True,
            "is_present": True,
            "composing_status": "idle",
        }

    def _add_message(
        self,
        chat: FakeChat,
        sender_id: str,
        sender_type: str,
        text: str | None,
        *,
        type_: str = "msg",
        attachments: list[dict[str, Any]] | None = None,
        fields: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        res = chat.resource
        message: dict[str, Any] = {
            "id": str(uuid.uuid4()),
            "type": type_,
            "chat_id": res["id"],
            "room_id": res["room_id"],
            "created_at": self._state.iso_in(0),
            "sender_type": sender_type,
            "sender_id": sender_id,
            "sender_public_name": self.operator_name(sender_id) if sender_type == "user" else None,
            "sender_avatar": None,
            "message": text,
            "attachments": attachments or [],
            **(fields or {}),
        }
        chat.messages.append(message)
        self._publish_message(chat, message)
        if type_ != "msg":
            return message
        res["message_count"] += 1
        changed: dict[str, Any] = {"message_count": res["message_count"]}
        if sender_type == "visitor":
            res["visitor_message_count"] += 1
            changed["visitor_message_count"] = res["visitor_message_count"]
            if not res["is_waiting"] and res["user_message_count"] == 0:
                res["is_waiting"] = True
                res["waiting_started_at"] = res["waiting_started_at"] or message["created_at"]
                changed.update(is_waiting=True, waiting_started_at=res["waiting_started_at"])
        else:
            res["user_message_count"] += 1
            changed["user_message_count"] = res["user_message_count"]
            if res["is_waiting"]:
                res["is_waiting"] = False
                changed["is_waiting"] = False
        res["updated_at"] = message["created_at"]
        self._publish_chat(chat, "changed", changed)
        member = chat.members.get(sender_id)
        if member is not None:
            member["message_count"] += 1
            self.publish_member(
                chat, {**member, "message_count": member["message_count"]}, "changed"
            )
        return message

    def visitor_says(self, chat: FakeChat, text: str) -> dict[str, Any]:
        message = self._add_message(chat, chat.visitor_id, "visitor", text)
        for callback in list(self.on_visitor_message):
            callback(chat, message)
        return message

    def visitor_chooses(self, chat: FakeChat, body: dict[str, Any]) -> dict[str, Any] | str:
        """Store a visitor's choice (a ``type: "action"`` message) or say why not.

        The choice names its message, attachment and action by id; the fake fills in
        ``response_value`` and the chosen objects as the operator-side shape has them, and
        refuses link buttons and actions their ``is_disabled_on_*`` flags switched off.
        """
        ids = {
            name: body.get(f"response_to_{name}_id") for name in ("message", "attachment", "action")
        }
        for name, value in ids.items():
            if not isinstance(value, str) or not value:
                return f"response_to_{name}_id: This field is required."
        index = next((i for i, m in enumerate(chat.messages) if m["id"] == ids["message"]), None)
        if index is None:
            return "response_to_message_id: No such message in this chat."
        target = chat.messages[index]
        attachment = next(
            (a for a in target.get("attachments") or [] if a.get("id") == ids["attachment"]),
            None,
        )
        if attachment is None:
            return "response_to_attachment_id: No such attachment in the message."
        action = next(
            (a for a in attachment.get("actions") or [] if a.get("id") == ids["action"]), None
        )
        if action is None:
            return "response_to_action_id: No such action in the attachment."
        if action.get("type", "button") != "button":
            return "response_to_action_id: Only a button can be chosen."
        later = chat.messages[index + 1 :]
        from_visitor = [m for m in later if m["sender_type"] == "visitor"]
        if action.get("is_disabled_on_selection") and any(
            m.get("response_to_message_id") == target["id"] for m in from_visitor
        ):
            return "response_to_action_id: This action is disabled."
        if action.get("is_disabled_on_visitor_message") and from_visitor:
            return "response_to_action_id: This action is disabled."
        text = body.get("message")
        message = self._add_message(
            chat,
            chat.visitor_id,
            "visitor",
            text if isinstance(text, str) and text else action.get("text"),
            type_="action",
            fields={
                "response_to_message_id": target["id"],
                "response_to_attachment_id": attachment["id"],
                "response_to_action_id": action["id"],
                "response_to_attachment": {k: v for k, v in attachment.items() if k != "actions"},
                "response_to_action": dict(action),
                "response_value": action.get("value"),
            },
        )
        for callback in list(self.on_visitor_message):
            callback(chat, message)
        return message

    # Pagination ---------------------------------------------------------------------------

    def page(self, request: Request, items: list[dict[str, Any]]) -> JSONResponse:
        """A cursor page of ``items`` with ``next``/``previous`` URLs (absolute by default)."""
        raw = request.query_params.get("cursor")
        try:
            offset = int(base64.urlsafe_b64decode(raw.encode() + b"==")) if raw else 0
        except ValueError:
            return JSONResponse({"detail": "Invalid cursor"}, status_code=404)
        size = self.page_size
        chunk = items[offset : offset + size]
        base = "" if self.relative_links else f"{self._state.base_url}{request.url.path}"

        def link(at: int) -> str:
            cursor = base64.urlsafe_b64encode(str(at).encode()).decode().rstrip("=")
            return f"{base}?cursor={cursor}"

        return JSONResponse(
            {
                "next": link(offset + size) if offset + size < len(items) else None,
                "previous": link(max(0, offset - size)) if offset > 0 else None,
                "results": chunk,
            }
        )

    def dump(self) -> dict[str, Any]:
        """Chats and rooms as JSON-able data (for a demo's second run)."""
        return {
            "chats": [attrs.asdict(chat) for chat in self.chats.values()],
            "rooms": [attrs.asdict(room) for room in self.rooms.values()],
        }

    def restore(self, data: dict[str, Any]) -> None:
        """Load what :meth:`dump` produced."""
        for item in data.get("chats", []):
            chat = FakeChat(**item)
            self.chats[chat.resource["id"]] = chat
        for item in data.get("rooms", []):
            room = FakeRoom(**item)
            room.online_users.clear()  # nobody is online after a restart
            self.rooms[room.id] = room


def with_ids(attachments: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Copies of ``attachments`` where every attachment and action has an ``id``."""
    out = []
    for attachment in attachments:
        actions = [
            {"id": str(uuid.uuid4()), **action} for action in attachment.get("actions") or []
        ]
        out.append({"id": str(uuid.uuid4()), **attachment, "actions": actions})
    return out


Endpoint = Callable[..., Callable[[Request], Awaitable[Response]]]
if TYPE_CHECKING:
    #: A visitor endpoint after the access check: the token is known to own the path.
    _Handler = Callable[[Request, TokenInfo], Awaitable[Response]]


def chat_routes(state: FakeState, world: ChatWorld, endpoint: Endpoint) -> list[Route]:
    """The routes of the visitor endpoints (auth lives in ``_fake.py``)."""

    def error(status: int, body: Any) -> JSONResponse:
        return JSONResponse(
            body if isinstance(body, dict) else {"detail": body}, status_code=status
        )

    def owner(
        *, org: bool = False, visitor: bool = False
    ) -> Callable[[_Handler], Callable[[Request, TokenInfo | None], Awaitable[Response]]]:
        """The access check of every visitor endpoint: 403 unless the token owns the path.

        ``org``: the path's ``org_id`` is the token's organization; ``visitor``: the
        path's ``visitor_id`` is the token's visitor.
        """

        def wrap(handler: _Handler) -> Callable[[Request, TokenInfo | None], Awaitable[Response]]:
            async def checked(request: Request, info: TokenInfo | None) -> Response:
                params = request.path_params
                if (
                    info is None
                    or (org and info.organization_id != params.get("org_id"))
                    or (visitor and info.visitor_id != params.get("visitor_id"))
                ):
                    return error(403, _FORBIDDEN)
                return await handler(request, info)

            return checked

        return wrap

    def own_chat(
        handler: Callable[[Request, TokenInfo, FakeChat], Awaitable[Response]],
    ) -> Callable[[Request, TokenInfo | None], Awaitable[Response]]:
        """:func:`owner` for the visitor, then 404 unless the path's chat is the visitor's."""

        @owner(visitor=True)
        async def checked(request: Request, info: TokenInfo) -> Response:
            chat = world.chats.get(request.path_params["chat_id"])
            if chat is None or chat.visitor_id != request.path_params["visitor_id"]:
                return error(404, "Not found.")
            return await handler(request, info, chat)

        return checked

    def path_room(request: Request, info: TokenInfo) -> FakeRoom | None:
        """The path's room, if the token's organization has it (else the endpoint's 404)."""
        return world.find_room(info.organization_id, request.path_params["room_id"])

    async def json_body(request: Request) -> dict[str, Any] | None:
        import json

        raw = await request.body()
        if not raw.strip():
            return {}
        try:
            data = json.loads(raw)
        except ValueError:
            return None
        return data if isinstance(data, dict) else None

    # Room presence
    @owner(org=True)
    async def join_room(request: Request, info: TokenInfo) -> Response:
        body = await json_body(request)
        if body is None or not isinstance(body.get("id"), str):
            return error(400, {"id": ["This field is required."]})
        if body["id"] != info.visitor_id:
            return error(403, _FORBIDDEN)
        expires = body.get("presence_expires_in", 60)
        if not isinstance(expires, int) or isinstance(expires, bool) or expires < 0:
            return error(400, {"presence_expires_in": ["A valid integer is required."]})
        room = path_room(request, info)
        if room is None:
            return error(404, "Not found.")
        existed = info.visitor_id in room.presence
        record = {"id": info.visitor_id, "room_id": room.id, "presence_expires_in": expires}
        room.presence[info.visitor_id] = record
        return JSONResponse(record, status_code=200 if existed else 201)

    @owner(org=True, visitor=True)
    async def refresh_presence(request: Request, info: TokenInfo) -> Response:
        body = await json_body(request)
        expires = (body or {}).get("presence_expires_in")
        if not isinstance(expires, int) or isinstance(expires, bool) or expires < 0:
            return error(400, {"presence_expires_in": ["This field is required."]})
        room = path_room(request, info)
        if room is None:
            return error(404, "Not found.")
        record = {"id": info.visitor_id, "room_id": room.id, "presence_expires_in": expires}
        room.presence[info.visitor_id] = record
        return JSONResponse(record)

    # Chats
    @owner(org=True, visitor=True)
    async def create_chat(request: Request, info: TokenInfo) -> Response:
        body = await json_body(request)
        if body is None:
            return error(400, {"non_field_errors": ["Invalid data."]})
        chat_type = body.get("chat_type", "visitor")
        if chat_type not in ("visitor", "task", "external"):
            return error(400, {"chat_type": [f'"{chat_type}" is not a valid choice.']})
        if path_room(request, info) is None:
            return error(404, "Not found.")
        chat = world.start_chat(info, request.path_params["room_id"])
        return JSONResponse(chat.resource, status_code=201)

    @owner(visitor=True)
    async def list_chats(request: Request, info: TokenInfo) -> Response:
        vid = request.path_params["visitor_id"]
        chats = [c.resource for c in world.chats.values() if c.visitor_id == vid]
        return world.page(request, chats)

    @own_chat
    async def chat_detail(request: Request, info: TokenInfo, chat: FakeChat) -> Response:
        if request.method == "GET":
            return JSONResponse(chat.resource)
        body = await json_body(request)
        if body is None or set(body) - {"is_ended"}:
            return error(400, {"non_field_errors": ["Only is_ended can be changed."]})
        if body.get("is_ended") is True:
            world.end_chat(chat.resource["id"])
        elif body.get("is_ended") is False and chat.resource["is_ended"]:
            return error(400, {"is_ended": ["An ended chat cannot be reopened."]})
        return JSONResponse(chat.resource)

    # Messages
    @own_chat
    async def messages(request: Request, info: TokenInfo, chat: FakeChat) -> Response:
        if request.method == "GET":
            return world.page(request, chat.messages)
        body = await json_body(request)
        if body is None:
            return error(400, {"non_field_errors": ["Invalid data. Expected a dictionary."]})
        if body.get("type") == "action":
            if chat.resource["is_ended"]:
                return error(403, "The chat has ended.")
            chosen = world.visitor_chooses(chat, body)
            if isinstance(chosen, str):
                field, _, detail = chosen.partition(": ")
                return error(400, {field: [detail]})
            return JSONResponse(chosen, status_code=201)
        text = body.get("message")
        if not isinstance(text, str) or not text:
            return error(400, {"message": ["This field is required."]})
        if len(text) > MAX_MESSAGE_LENGTH:
            return error(
                400,
                {
                    "message": [
                        f"Ensure this field has no more than {MAX_MESSAGE_LENGTH} characters."
                    ]
                },
            )
        if body.get("type", "msg") != "msg":
            return error(400, {"type": ["Invalid message type."]})
        if chat.resource["is_ended"]:
            return error(403, "The chat has ended.")
        return JSONResponse(world.visitor_says(chat, text), status_code=201)

    # Memberships
    @own_chat
    async def memberships(request: Request, info: TokenInfo, chat: FakeChat) -> Response:
        return world.page(request, list(chat.members.values()))

    @owner(visitor=True)
    async def chat_memberships(request: Request, info: TokenInfo) -> Response:
        vid = request.path_params["visitor_id"]
        own = [c.members[vid] for c in world.chats.values() if c.visitor_id == vid]
        return world.page(request, own)

    @own_chat
    async def update_chat_membership(request: Request, info: TokenInfo, chat: FakeChat) -> Response:
        body = await json_body(request)
        if body is None:
            return error(400, {"non_field_errors": ["Invalid data."]})
        member = chat.members[chat.visitor_id]
        status = body.get("composing_status")
        if status is not None:
            if status not in ("idle", "typing", "typed", "composing", "has_composed"):
                return error(400, {"composing_status": [f'"{status}" is not a valid choice.']})
            member["composing_status"] = status
        if "is_participating" in body:
            if not isinstance(body["is_participating"], bool):
                return error(400, {"is_participating": ["Must be a valid boolean."]})
            member["is_participating"] = body["is_participating"]
        member["updated_at"] = state.iso_in(0)
        world.publish_member(chat, member, "changed")
        return JSONResponse(member)

    # Rooms
    @owner(org=True)
    async def room(request: Request, info: TokenInfo) -> Response:
        found = path_room(request, info)
        return JSONResponse(world.room_resource(found)) if found else error(404, "Not found.")

    @owner(org=True)
    async def brand(request: Request, info: TokenInfo) -> Response:
        room = path_room(request, info)
        found = room.brand if room is not None else None
        return JSONResponse(found) if found else error(404, "Not found.")

    @owner(org=True)
    async def online_users(request: Request, info: TokenInfo) -> Response:
        found = path_room(request, info)
        if found is None:
            return error(404, "Not found.")
        return world.page(request, list(found.online_users.values()))

    org_room = "/api/v5/public/orgs/{org_id}/rooms/{room_id}"
    visitor = "/api/v5/public/visitors/{visitor_id}"
    return [
        Route(org_room, endpoint(room), methods=["GET"]),
        Route(f"{org_room}/brand", endpoint(brand), methods=["GET"]),
        Route(f"{org_room}/online_users", endpoint(online_users), methods=["GET"]),
        Route(f"{org_room}/visitors", endpoint(join_room), methods=["POST"]),
        Route(
            f"{org_room}/visitors/{{visitor_id}}",
            endpoint(refresh_presence),
            methods=["PUT", "PATCH"],
        ),
        Route(f"{org_room}/visitors/{{visitor_id}}/chats", endpoint(create_chat), methods=["POST"]),
        Route(f"{visitor}/chats", endpoint(list_chats), methods=["GET"]),
        Route(f"{visitor}/chats/{{chat_id}}", endpoint(chat_detail), methods=["GET", "PATCH"]),
        Route(f"{visitor}/chats/{{chat_id}}/messages", endpoint(messages), methods=["GET", "POST"]),
        Route(f"{visitor}/chats/{{chat_id}}/memberships", endpoint(memberships), methods=["GET"]),
        Route(f"{visitor}/chat_memberships", endpoint(chat_memberships), methods=["GET"]),
        Route(
            f"{visitor}/chat_memberships/{{chat_id}}",
            endpoint(update_chat_membership),
            methods=["PUT", "PATCH"],
        ),
    ]
