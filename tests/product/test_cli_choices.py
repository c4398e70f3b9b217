"""The chat command's buttons: numbered lines, ``/N`` to choose (unit and end to end)."""

from __future__ import annotations

import queue
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from giosg_visitor import Message
from giosg_visitor._choices import TerminalChoices, choice_number


ROOT = Path(__file__).parent.parent.parent

MENU: dict[str, Any] = {
    "id": "m1",
    "type": "msg",
    "sender_type": "user",
    "message": "Pick one",
    "attachments": [
        {
            "id": "a1",
            "title": "Menu",
            "text": "What now?",
            "image_url": "https://example.com/i.png",
            "actions": [
                {"id": "x", "text": "Hours", "type": "button", "is_disabled_on_selection": True},
                {"id": "y", "text": "Human", "type": "button", "is_disabled_on_selection": True},
                {"id": "z", "text": "FAQ", "type": "link_button", "link_url": "https://e.com"},
            ],
        }
    ],
}


@pytest.mark.parametrize(
    ("line", "number"),
    [("/1", 1), (" /12 ", 12), ("/0", None), ("/end", None), ("1", None), ("/1 please", None)],
)
def test_choice_number(line: str, number: int | None) -> None:
    assert choice_number(line) == number


def test_buttons_render_as_numbered_lines_and_links_are_only_shown() -> None:
    choices = TerminalChoices()
    lines = choices.render(Message.from_api(MENU))
    assert lines == [
        "      | Menu",
        "      | What now?",
        "      | image: https://example.com/i.png",
        "      | [/1] Hours",
        "      | [/2] Human",
        "      | [link] FAQ: https://e.com",
        "      (type /N to choose)",
    ]
    assert choices.render(Message.from_api({"id": "t", "message": "plain"})) == []


def test_numbers_are_stable_and_spent_buttons_are_refused() -> None:
    choices = TerminalChoices()
    menu = Message.from_api(MENU)
    choices.render(menu)
    second = {**MENU, "id": "m2"}
    assert choices.render(Message.from_api(second))[3:5] == [
        "      | [/3] Hours",
        "      | [/4] Human",
    ]
    assert choices.resolve(2) == menu.actions[1]
    with pytest.raises(LookupError, match="no button /9"):
        choices.resolve(9)
    # The visitor chose "Hours" of the first card: both of its buttons are spent.
    choices.render(
        Message.from_api(
            {
                "id": "c",
                "type": "action",
                "sender_type": "visitor",
                "response_to_message_id": "m1",
                "response_to_attachment_id": "a1",
                "response_to_action_id": "x",
            }
        )
    )
    with pytest.raises(LookupError, match="/2 can no longer be chosen"):
        choices.resolve(2)
    assert choices.resolve(4).message_id == "m2"


def _reader(stream: Any, lines: queue.Queue[str]) -> None:
    for line in stream:
        lines.put(line)


def _wait_for(lines: queue.Queue[str], seen: list[str], text: str, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while True:
        for line in seen:
            if text in line:
                return line
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"{text!r} never appeared in:\n{''.join(seen)}"
        try:
            seen.append(lines.get(timeout=remaining))
        except queue.Empty:
            continue


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_chat_command_chooses_a_button_with_slash_number(tmp_path: Path, backend: str) -> None:
    """`giosg-visitor chat --fake`: "menu" shows numbered buttons, "/1" chooses the first,
    the bot reacts, and "/1" again is refused (the card's buttons are spent)."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "giosg_visitor",
            "--backend",
            backend,
            "chat",
            "--fake",
            "--store",
            str(tmp_path / "s.json"),
        ],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdin is not None
    lines: queue.Queue[str] = queue.Queue()
    seen: list[str] = []
    # Both pipes are drained by threads of their own, and only those threads read them: a
    # `communicate()` here would close stdout under the reader thread.
    errors: queue.Queue[str] = queue.Queue()
    readers = [
        threading.Thread(target=_reader, args=(process.stdout, lines), daemon=True),
        threading.Thread(target=_reader, args=(process.stderr, errors), daemon=True),
    ]
    for reader in readers:
        reader.start()

    def type_line(text: str) -> None:
        assert process.stdin is not None
        process.stdin.write(text + "\n")
        process.stdin.flush()

    try:
        _wait_for(lines, seen, "Type a message")
        type_line("menu please")
        assert _wait_for(lines, seen, "[/1]").strip() == "| [/1] Opening hours"
        assert _wait_for(lines, seen, "[/2]").strip() == "| [/2] Talk to a person"
        assert "https://example.com/faq" in _wait_for(lines, seen, "[link]")
        type_line("/1")
        _wait_for(lines, seen, "you: Opening hours")
        _wait_for(lines, seen, "We are open on weekdays")
        type_line("/2")
        _wait_for(lines, seen, "button /2 can no longer be chosen")
        type_line("/end")
        process.wait(timeout=60)
    finally:
        process.kill()
        process.wait()
        # The pipes close only after their readers have seen the end of them.
        for reader in readers:
            reader.join(timeout=10)
        for pipe in (process.stdin, process.stdout, process.stderr):
            if pipe is not None:
                pipe.close()
    err = "".join(errors.queue)
    assert process.returncode == 0, err
