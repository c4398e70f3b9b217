"""A scripted operator for demos and tests: joins new chats, types, answers.

Asked for the ``menu`` it answers with a card of buttons, and it reacts to the visitor's
choice of one (a message of type ``action``), like giosg's own demo bot.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, final


if TYPE_CHECKING:
    from ._fake import FakeState
    from ._fake_chats import FakeChat

__all__ = ["MENU_ACTIONS", "ScriptedBot", "default_choice_reply", "default_menu", "default_reply"]

#: The demo bot's menu: two buttons and a link button (disabled once one is chosen).
MENU_ACTIONS: list[dict[str, Any]] = [
    {
        "text": "Opening hours",
        "type": "button",
        "value": "hours",
        "style": "brand_primary",
        "is_disabled_on_selection": True,
        "is_disabled_on_visitor_message": False,
    },
    {
        "text": "Talk to a person",
        "type": "button",
        "value": "human",
        "style": "brand_secondary",
        "is_disabled_on_selection": True,
        "is_disabled_on_visitor_message": False,
    },
    {
        "text": "Read the FAQ",
        "type": "link_button",
        "link_url": "https://example.com/faq",
        "link_target": "_blank",
        "is_disabled_on_selection": False,
        "is_disabled_on_visitor_message": False,
    },
]

#: What the demo bot says for each value of its menu.
_CHOICE_ANSWERS: dict[str, str] = {
    "hours": "We are open on weekdays from 9 to 17.",
    "human": "A human colleague will be with you shortly.",
}


def default_reply(text: str) -> str:
    """The demo bot's answer to a visitor's message."""
    lowered = text.lower()
    if any(word in lowered for word in ("hello", "hi", "hey")):
        return "Hello! I'm the demo bot. Ask me anything."
    if "bye" in lowered:
        return "Goodbye, and thanks for chatting!"
    return f"You said: {text!r}. A human colleague will be with you shortly."


def default_menu(text: str) -> tuple[str, list[dict[str, Any]]] | None:
    """The demo bot's rich answer: for "menu", a text and one card of buttons."""
    if "menu" not in text.lower():
        return None
    card = {
        "title": "How can I help?",
        "text": "Choose one of these.",
        "image_url": None,
        "actions": [dict(action) for action in MENU_ACTIONS],
    }
    return "Here is what I can do:", [card]


def default_choice_reply(value: str | None, label: str | None) -> str:
    """The demo bot's answer to the visitor's choice of a button."""
    answer = _CHOICE_ANSWERS.get(value or "", "Noted.")
    return f"You chose {label or value!r}. {answer}"


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
        menu: Maps a visitor's text to a rich answer (text, attachments), or ``None``
            to answer with ``reply`` instead.
        choice_reply: Maps a chosen button's ``(value, label)`` to the bot's answer.
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
        menu: Callable[[str], tuple[str, list[dict[str, Any]]] | None] = default_menu,
        choice_reply: Callable[[str | None, str | None], str] = default_choice_reply,
    ) -> None:
        self._state = state
        self._room_id = room_id
        self._typing_seconds = typing_seconds
        self._reply = reply
        self._menu = menu
        self._choice_reply = choice_reply
        self._tasks: set[asyncio.Task[None]] = set()
        self.user_id = state.chats.operator_online(organization_id, room_id, name)
        state.chats.on_visitor_message.append(self._on_message)
        self.answered = 0
        #: The values of the buttons visitors chose, in order.
        self.choices: list[str | None] = []

    def _on_message(self, chat: FakeChat, message: dict[str, Any]) -> None:
        if chat.resource["room_id"] != self._room_id:
            return
        if message.get("type") == "action":
            value = message.get("response_value")
            self.choices.append(value)
            label = (message.get("response_to_action") or {}).get("text")
            answer: tuple[str, list[dict[str, Any]]] = (self._choice_reply(value, label), [])
        elif message.get("message"):
            text = str(message["message"])
            answer = self._menu(text) or (self._reply(text), [])
        else:
            return
        # Answer after the visitor's request has been answered, like a person would.
        task = asyncio.get_running_loop().create_task(self._answer(chat, *answer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer(self, chat: FakeChat, text: str, attachments: list[dict[str, Any]]) -> None:
        chats = self._state.chats
        chat_id = chat.resource["id"]
        if chat.resource["is_ended"]:
            return
        chats.operator_joins(chat_id, self.user_id)
        chats.operator_typing(chat_id, self.user_id, True)
        await asyncio.sleep(self._typing_seconds)
        chats.operator_typing(chat_id, self.user_id, False)
        if not chat.resource["is_ended"]:
            chats.operator_says(chat_id, self.user_id, text, attachments=attachments)
            self.answered += 1

    def stop(self) -> None:
        """Stop answering."""
        if self._on_message in self._state.chats.on_visitor_message:
            self._state.chats.on_visitor_message.remove(self._on_message)
        for task in list(self._tasks):
            task.cancel()
