"""Notebook display helpers: a chat transcript rendered as HTML.

In Jupyter, ``Transcript(await chat.history())`` as the last expression of a cell shows
the conversation as chat bubbles: the visitor's messages on the right, the operators' on
the left, joins and leaves as grey system lines. Everything shown is escaped, and only
the public fields of each :class:`~giosg_visitor.Message` are used (never a token, a
secret or the raw ``extra`` mapping).
"""

from __future__ import annotations

import html
from collections.abc import Iterator, Sequence
from typing import Final, final

from .models import Message


__all__ = ["Transcript", "transcript_html"]

#: Message types shown as a grey, centred system line rather than a bubble.
_SYSTEM_TYPES: Final = frozenset({"join", "leave", "system", "action"})

_BOX_STYLE: Final = (
    "font-family: system-ui, -apple-system, 'Segoe UI', sans-serif; font-size: 13px;"
    " max-width: 640px; border: 1px solid #d0d7de; border-radius: 8px; padding: 8px 12px;"
)
_TITLE_STYLE: Final = "font-weight: 600; margin: 0 0 8px 0; color: #24292f;"
_ROW_STYLE: Final = "display: flex; margin: 4px 0; justify-content: {align};"
_BUBBLE_STYLE: Final = (
    "max-width: 75%; padding: 6px 10px; border-radius: 12px; background: {background};"
    " color: {color}; white-space: pre-wrap; overflow-wrap: anywhere;"
)
_META_STYLE: Final = "font-size: 11px; opacity: 0.75; margin-bottom: 2px;"
_SYSTEM_STYLE: Final = "text-align: center; color: #57606a; font-style: italic; margin: 4px 0;"
_EMPTY_STYLE: Final = "color: #57606a; font-style: italic;"


def transcript_html(messages: Sequence[Message], *, title: str | None = None) -> str:
    """Render messages as a self-contained HTML transcript (inline styles, no scripts).

    Args:
        messages: The messages, oldest first (as :meth:`Chat.history` returns them).
        title: An optional heading.

    Returns:
        An HTML fragment. Every text from the server is escaped.
    """
    parts = ['<div class="giosg-transcript" style="', _BOX_STYLE, '">']
    if title is not None:
        parts += ['<div class="giosg-transcript-title" style="', _TITLE_STYLE, '">']
        parts += [_escape(title), "</div>"]
    if not messages:
        parts += ['<div style="', _EMPTY_STYLE, '">No messages yet.</div>']
    for message in messages:
        parts.append(_message_html(message))
    parts.append("</div>")
    return "".join(parts)


@final
class Transcript:
    """A list of messages that Jupyter displays as an HTML chat transcript.

    Example:
        >>> Transcript(await chat.history(), title="Support chat")  # last line of a cell

    ``str()`` gives a plain-text transcript (one line per message) for terminals.

    Args:
        messages: The messages, oldest first.
        title: An optional heading.
    """

    __slots__ = ("_messages", "_title")

    def __init__(self, messages: Sequence[Message], *, title: str | None = None) -> None:
        self._messages = tuple(messages)
        self._title = title

    @property
    def messages(self) -> tuple[Message, ...]:
        """The messages, oldest first."""
        return self._messages

    @property
    def title(self) -> str | None:
        """The heading, if any."""
        return self._title

    def __len__(self) -> int:
        return len(self._messages)

    def __iter__(self) -> Iterator[Message]:
        return iter(self._messages)

    def _repr_html_(self) -> str:
        return transcript_html(self._messages, title=self._title)

    def __str__(self) -> str:
        lines = [self._title] if self._title is not None else []
        lines += [_message_text(m) for m in self._messages]
        return "\n".join(lines)

    def __repr__(self) -> str:
        title = f" {self._title!r}" if self._title is not None else ""
        return f"<Transcript{title} messages={len(self._messages)}>"


# Rendering helpers.


def _escape(text: str) -> str:
    return html.escape(text, quote=True)


def _sender(message: Message) -> str:
    if message.sender_public_name:
        return message.sender_public_name
    if message.is_from_visitor:
        return "Visitor"
    return "Operator" if message.sender_type == "user" else str(message.sender_type or "Unknown")


def _system_text(message: Message) -> str:
    if message.type == "join":
        return f"{_sender(message)} joined the chat"
    if message.type == "leave":
        return f"{_sender(message)} left the chat"
    return message.message or str(message.type)


def _time(message: Message) -> str:
    return message.created_at.strftime("%H:%M:%S") if message.created_at is not None else ""


def _message_html(message: Message) -> str:
    if message.type in _SYSTEM_TYPES or message.message is None:
        return (
            f'<div class="giosg-system" style="{_SYSTEM_STYLE}">'
            f"{_escape(_system_text(message))}</div>"
        )
    mine = message.is_from_visitor
    row = _ROW_STYLE.format(align="flex-end" if mine else "flex-start")
    bubble = _BUBBLE_STYLE.format(
        background="#0969da" if mine else "#eaeef2", color="#ffffff" if mine else "#24292f"
    )
    who = "giosg-visitor" if mine else "giosg-operator"
    meta = _escape(_sender(message))
    if message.created_at is not None:
        meta += f" · {_time(message)}"
    return (
        f'<div class="giosg-message {who}" style="{row}"><div style="{bubble}">'
        f'<div style="{_META_STYLE}">{meta}</div>{_escape(message.message)}</div></div>'
    )


def _message_text(message: Message) -> str:
    stamp = f"[{_time(message)}] " if message.created_at is not None else ""
    if message.type in _SYSTEM_TYPES or message.message is None:
        return f"{stamp}* {_system_text(message)}"
    return f"{stamp}{_sender(message)}: {message.message}"
