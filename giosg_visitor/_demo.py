"""The ``giosg-visitor demo`` and ``chat`` commands (kept apart from argument parsing)."""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

import anyio

from ._choices import TerminalChoices, choice_number, send_choice
from ._http import DEFAULT_BASE_URL
from .chat import Chat
from .models import Membership, Message
from .stores.file import FileStore
from .visitor import Visitor


__all__ = ["DEMO_ORG_ID", "DEMO_ROOM_ID", "run_chat", "run_demo"]

DEMO_ORG_ID = "e6a08f51-c250-4074-847b-58d444dbbeb1"
DEMO_ROOM_ID = "9926bdfa-56e0-11e5-b98c-6c4008c08dfe"


class _Printer:
    """Prints the conversation; remembers what was shown so the demo can wait for it."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self.shown: list[Message] = []
        self._pulse = anyio.Event()

    def say(self, text: str = "") -> None:
        print(text, file=self._out, flush=True)

    def message(self, message: Message, *, note: str = "") -> None:
        self.shown.append(message)
        suffix = f"   ({note})" if note else ""
        if message.type == "join":
            self.say(f"      * {message.sender_public_name or 'An operator'} joined the chat")
        elif message.type == "leave":
            self.say(f"      * {message.sender_public_name or 'An operator'} left the chat")
        elif message.is_from_visitor:
            self.say(f"  you: {message.text}{suffix}")
        else:
            self.say(f"  {message.sender_public_name or 'operator'}: {message.message}{suffix}")
        pulse, self._pulse = self._pulse, anyio.Event()
        pulse.set()

    async def wait_for(self, want: Callable[[Message], bool], *, since: int = 0) -> Message:
        """Wait until a message matching ``want`` has been shown (at index >= ``since``)."""
        with anyio.fail_after(15):
            while True:
                for message in self.shown[since:]:
                    if want(message):
                        return message
                await self._pulse.wait()


def _operator_text(message: Message) -> bool:
    return message.sender_type == "user" and message.type == "msg"


async def _show_messages(
    chat: Chat,
    printer: _Printer,
    reconnected: list[bool],
    choices: TerminalChoices | None = None,
) -> None:
    async with chat.messages(include_history=False) as stream:
        async for message in stream:
            note = "recovered after the reconnect" if reconnected and reconnected[-1] else ""
            printer.message(message, note=note)
            for line in choices.render(message) if choices is not None else ():
                printer.say(line)


async def _show_typing(chat: Chat, printer: _Printer) -> None:
    typing: dict[str, bool] = {}
    async with chat.member_changes() as stream:
        async for member in stream:
            if not member.is_operator:
                continue
            was = typing.get(member.member_id, False)
            typing[member.member_id] = member.is_typing
            if member.is_typing and not was:
                printer.say(f"      ({_name(member)} is typing...)")


def _name(member: Membership) -> str:
    return member.member_public_name or "the operator"


async def run_demo(
    state_dir: Path, lifetime: float, *, returning: bool, out: TextIO = sys.stdout
) -> None:
    """A full conversation against an embedded FakeGiosg (see ``giosg-visitor demo --help``)."""
    from .testing import FakeGiosg

    printer = _Printer(out)
    store_path = state_dir / "visitor.json"
    fake = FakeGiosg(token_lifetime=lifetime, data_file=state_dir / "fake-giosg.json")
    async with fake as giosg:
        printer.say(f"Fake Giosg on {giosg.base_url}; access tokens live {lifetime:g} s.")
        store = FileStore(store_path)
        async with Visitor(DEMO_ORG_ID, base_url=giosg.base_url, store=store) as visitor:
            mode = stat.S_IMODE(os.stat(store_path).st_mode)
            if returning:
                printer.say(f"Returning visitor {visitor.visitor_id}, resumed from {store_path}.")
                previous = [chat async for chat in visitor.chats()]
                if previous:
                    history = await previous[-1].history()
                    printer.say(f"Its last chat had {len(history)} messages:")
                    for message in history:
                        printer.message(message)
            else:
                printer.say(f"New visitor {visitor.visitor_id}.")
            printer.say(f"Its secret is saved in {store_path} (mode {mode:o}) and never printed.")
            await giosg.start_bot(DEMO_ROOM_ID, name="Demo Bot", typing_seconds=0.6)
            async with visitor.online_operators(DEMO_ROOM_ID) as operators:
                names = ", ".join(op.public_name or "?" for op in operators.current)
                printer.say(f"Online in the room: {names}.")
            chat = await visitor.start_chat(DEMO_ROOM_ID)
            printer.say(f"Chat {chat.id} started.")
            reconnected: list[bool] = []
            auths_at_start = len(giosg.auth_requests)
            async with anyio.create_task_group() as tg:
                tg.start_soon(_show_messages, chat, printer, reconnected)
                tg.start_soon(_show_typing, chat, printer)
                await anyio.sleep(0.3)
                mark = len(printer.shown)
                await chat.send("Hello! Is anybody there?")
                await printer.wait_for(_operator_text, since=mark)
                printer.say("")
                printer.say("The server now drops the socket; the bot answers while it is down.")
                await giosg.drop_sockets("reset")
                reconnected.append(True)
                mark = len(printer.shown)
                await giosg.operator_says(chat.id, giosg.bots[0].user_id, "Did you get this one?")
                await printer.wait_for(lambda m: m.message == "Did you get this one?", since=mark)
                reconnected.append(False)
                printer.say(
                    "Nothing was lost: the missed message was read back after reconnecting."
                )
                printer.say("")
                await anyio.sleep(max(0.0, lifetime * 1.2))
                mark = len(printer.shown)
                await chat.send("Yes, thanks. Bye!")
                await printer.wait_for(_operator_text, since=mark)
                await anyio.sleep(0.2)
                tg.cancel_scope.cancel()
            renewals = len(giosg.auth_requests) - auths_at_start
            expired = len(giosg.expired_token_requests)
            printer.say(
                f"Token renewed {renewals} times in the background; requests with an expired "
                f"token: {expired}."
            )
            await chat.end()
            printer.say(f"Chat ended: {chat.is_ended}.")
        printer.say(
            f"Run the demo again: visitor {visitor.visitor_id} comes back with its history."
        )


async def run_chat(
    organization_id: str,
    room_id: str,
    *,
    base_url: str | None,
    fake: bool,
    store_path: Path,
    out: TextIO = sys.stdout,
) -> None:
    """An interactive terminal chat: type lines; ``/N`` chooses button N, ``/end`` ends the
    chat, ``/quit`` leaves."""
    from contextlib import AsyncExitStack

    printer = _Printer(out)
    async with AsyncExitStack() as stack:
        if fake:
            from .testing import FakeGiosg

            giosg = await stack.enter_async_context(FakeGiosg())
            base_url = giosg.base_url
            await giosg.start_bot(room_id, name="Demo Bot", organization_id=organization_id)
        visitor = await stack.enter_async_context(
            Visitor(
                organization_id,
                base_url=base_url or DEFAULT_BASE_URL,
                store=FileStore(store_path),
            )
        )
        printer.say(
            f"Visitor {visitor.visitor_id}. Type a message; /N chooses button N, /end ends"
            " the chat, /quit leaves."
        )
        chat = await visitor.start_chat(room_id)
        choices = TerminalChoices()  # buttons shown as /1, /2...; typing "/1" chooses
        async with anyio.create_task_group() as tg:
            tg.start_soon(_show_messages, chat, printer, [], choices)
            tg.start_soon(_show_typing, chat, printer)
            while True:
                line = await anyio.to_thread.run_sync(sys.stdin.readline, abandon_on_cancel=True)
                text = line.strip()
                if not line or text == "/quit":
                    break
                if text == "/end":
                    await chat.end()
                    printer.say("Chat ended.")
                    break
                number = choice_number(text)
                if number is not None:
                    problem = await send_choice(chat, choices, number)
                    if problem is not None:
                        printer.say(problem)
                elif text:
                    await chat.send(text)
            await anyio.sleep(0.5)  # let the last answers arrive
            tg.cancel_scope.cancel()
