"""Buttons in a terminal: number them as they are shown, map ``/N`` back to the action.

Kept apart from the chat command's loop so that the loop only hooks two calls in: render a
message's cards (:meth:`TerminalChoices.render`) and resolve a typed line
(:func:`choice_number`, :meth:`TerminalChoices.resolve`).
"""

from __future__ import annotations

import re
from typing import Final, final

from .chat import Chat
from .errors import GiosgError
from .models import Action, Message, choosable_actions


__all__ = ["TerminalChoices", "choice_number", "send_choice"]

_CHOICE: Final = re.compile(r"/([1-9][0-9]{0,5})")


def choice_number(line: str) -> int | None:
    """The button number a typed line chooses (``"/2"`` is 2), or ``None`` for other lines."""
    match = _CHOICE.fullmatch(line.strip())
    return int(match.group(1)) if match else None


@final
class TerminalChoices:
    """Numbers every button it shows, once and for good, and follows what is choosable.

    Numbers are never reused within a chat, so a number printed earlier never starts to
    mean another button; a button that was switched off (see
    :func:`~giosg_visitor.choosable_actions`) keeps its number and is refused.
    """

    def __init__(self) -> None:
        self._history: list[Message] = []
        self._numbers: dict[tuple[str | None, str | None, str | None], int] = {}
        self._actions: dict[int, Action] = {}

    def render(self, message: Message) -> list[str]:
        """The lines that show ``message``'s cards: title, text, image, numbered buttons.

        Every message shown must pass through here (in order), cards or not: later
        messages switch buttons off.
        """
        self._history.append(message)
        lines: list[str] = []
        for card in message.attachments:
            if card.title:
                lines.append(f"      | {card.title}")
            if card.text:
                lines.append(f"      | {card.text}")
            if card.image_url:
                lines.append(f"      | image: {card.image_url}")
            for action in card.actions:
                label = action.text or action.value or "?"
                if action.is_link:
                    lines.append(f"      | [link] {label}: {action.link_url or '(no link)'}")
                elif action.type == "button" and action.id is not None:
                    lines.append(f"      | [/{self._number(action)}] {label}")
        if lines and any(a.type == "button" for a in message.actions):
            lines.append("      (type /N to choose)")
        return lines

    def _number(self, action: Action) -> int:
        number = self._numbers.get(action.key)
        if number is None:
            number = len(self._numbers) + 1
            self._numbers[action.key] = number
            self._actions[number] = action
        return number

    def resolve(self, number: int) -> Action:
        """The button shown as ``/number``, if it can still be chosen.

        Raises:
            LookupError: No button has that number, or it can no longer be chosen (the
                message says which).
        """
        action = self._actions.get(number)
        if action is None:
            raise LookupError(f"there is no button /{number}")
        if action not in choosable_actions(self._history):
            raise LookupError(f"button /{number} can no longer be chosen")
        return action


async def send_choice(chat: Chat, choices: TerminalChoices, number: int) -> str | None:
    """Send the visitor's choice of button ``/number``.

    Returns ``None`` once it is sent (it then comes back through the chat's messages), or
    a line that tells the user why not.
    """
    try:
        action = choices.resolve(number)
        await chat.choose(action)
    except LookupError as exc:
        return f"      ({exc})"
    except GiosgError as exc:
        return f"      (the choice could not be sent: {exc})"
    return None
