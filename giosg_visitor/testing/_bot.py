"""A scripted operator for demos and tests: joins new chats, types, answers."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, final


if TYPE_CHECKING:
    from ._fake import FakeState
    from ._fake_chats import FakeChat

__all__ = ["ScriptedBot", "default_reply"]


def default_reply(text: str) -> str:
    """The demo bot's answer to a visitor's message."""
    lowered = text.lower()
    if any(word in lowered for word in ("hello", "hi", "hey")):
        return "Hello! I'm the demo bot. Ask me anything."
    if "bye" in lowered:
        return "Goodbye, and thanks for chatting!"
    return f"You said: {text!r}. A human colleague will be with you shortly."


@final
class ScriptedBot:
    """Runs on the fake's own asyncio loop (threaded ``FakeGiosg`` only).

    Args:
        state: The fake's state.
        organization_id: The organization of the room.
        room_id: The room the bot is online in.
        name: Its public name.
        typing_seconds: How long it "types" before each answer.
        reply: Maps a visitor's text to the bot's answer.
    """

    def __init__(
        self,
        state: FakeState,
        organization_id: str,
        room_id: str,
        *,
        name: str = "Demo Bot",
        typing_seconds: float = 0.4,
        reply: Callable[[str], str] = default_reply,
    ) -> None:
        self._state = state
        self._room_id = room_id
        self._typing_seconds = typing_seconds
        self._reply = reply
        self._tasks: set[asyncio.Task[None]] = set()
        self.user_id = state.chats.operator_online(organization_id, room_id, name)
        state.chats.on_visitor_message.append(self._on_message)
        self.answered = 0

    def _on_message(self, chat: FakeChat, message: dict[str, Any]) -> None:
        if chat.resource["room_id"] != self._room_id or not message.get("message"):
            return
        # Answer after the visitor's request has been answered, like a person would.
        task = asyncio.get_running_loop().create_task(self._answer(chat, str(message["message"])))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer(self, chat: FakeChat, text: str) -> None:
        chats = self._state.chats
        chat_id = chat.resource["id"]
        if chat.resource["is_ended"]:
            return
        chats.operator_joins(chat_id, self.user_id)
        chats.operator_typing(chat_id, self.user_id, True)
        await asyncio.sleep(self._typing_seconds)
        chats.operator_typing(chat_id, self.user_id, False)
        if not chat.resource["is_ended"]:
            chats.operator_says(chat_id, self.user_id, self._reply(text))
            self.answered += 1

    def stop(self) -> None:
        """Stop answering."""
        if self._on_message in self._state.chats.on_visitor_message:
            self._state.chats.on_visitor_message.remove(self._on_message)
        for task in list(self._tasks):
            task.cancel()
