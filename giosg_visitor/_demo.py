"""The ``giosg-visitor demo`` and ``chat`` commands (kept apart from argument parsing)."""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Final, TextIO

import anyio
import anyio.abc
import attrs

from ._choices import TerminalChoices, choice_number, send_choice
from ._http import DEFAULT_BASE_URL
from .chat import Chat
from .errors import GiosgError, InvalidSecretError, NotFoundError, TransportError
from .models import Membership, Message
from .stores.file import FileStore
from .visitor import Visitor


__all__ = [
    "DEMO_ORG_ID",
    "DEMO_ROOM_ID",
    "SLASH_COMMANDS",
    "ChatOptions",
    "ChatSession",
    "CommandError",
    "SlashCommand",
    "run_chat",
    "run_demo",
]

DEMO_ORG_ID = "e6a08f51-c250-4074-847b-58d444dbbeb1"
DEMO_ROOM_ID = "9926bdfa-56e0-11e5-b98c-6c4008c08dfe"


class CommandError(Exception):
    """An expected failure of a command: printed as one line, exit code 1."""


class _Printer:
    """Prints the conversation; remembers what was shown so the demo can wait for it.

    With a ``prompt``, each line first clears the one being typed and then redraws the
    prompt, so messages that arrive while the user types do not end up inside the input.
    """

    def __init__(self, out: TextIO, *, prompt: str = "") -> None:
        self._out = out
        self._prompt = prompt
        self.shown: list[Message] = []
        self._pulse = anyio.Event()

    def say(self, text: str = "") -> None:
        if self._prompt:
            self._out.write(f"\r\x1b[K{text}\n{self._prompt}")
            self._out.flush()
        else:
            print(text, file=self._out, flush=True)

    def prompt(self) -> None:
        """Show the prompt again (after the user pressed Enter)."""
        if self._prompt:
            self._out.write(self._prompt)
            self._out.flush()

    def end_prompt(self) -> None:
        """Leave the prompt line, so the shell's prompt starts on a clean line."""
        if self._prompt:
            self._out.write("\r\x1b[K")
            self._out.flush()

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
    *,
    task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    async with chat.messages(include_history=False) as stream:
        task_status.started()
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
    fake = FakeGiosg(
        token_lifetime=lifetime, data_file=state_dir / "fake-giosg.json", rooms=[DEMO_ROOM_ID]
    )
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


@attrs.frozen(kw_only=True)
class ChatOptions:
    """What ``giosg-visitor chat`` was asked to do (validated by the command line)."""

    organization_id: str
    room_id: str
    base_url: str | None
    fake: bool
    store_path: Path


@attrs.define(kw_only=True)
class ChatSession:
    """The state a slash command works on."""

    options: ChatOptions
    visitor: Visitor
    chat: Chat
    printer: _Printer
    #: The buttons shown so far, numbered: ``/N`` chooses button N.
    choices: TerminalChoices = attrs.field(factory=TerminalChoices)
    #: The user ended the chat here (so the end is not reported twice).
    ended_here: bool = False


@attrs.frozen
class SlashCommand:
    """A local command typed as ``/name``: it is handled here and never sent.

    ``run`` gets the session and the rest of the line; it returns ``True`` to leave the
    chat. Add a command by adding an entry to :data:`SLASH_COMMANDS`.
    """

    name: str
    summary: str
    run: Callable[[ChatSession, str], Awaitable[bool]]


async def _help(session: ChatSession, _rest: str) -> bool:
    session.printer.say("Commands (never sent to the operator):")
    for command in SLASH_COMMANDS.values():
        session.printer.say(f"  /{command.name:<6} {command.summary}")
    session.printer.say("  /N     choose button N of a message (buttons are numbered)")
    session.printer.say("  Any other line is sent (start it with // to send a leading /).")
    session.printer.say("  Ctrl-D leaves too; Ctrl-C interrupts (exit code 130).")
    return False


async def _end(session: ChatSession, _rest: str) -> bool:
    session.ended_here = True
    await session.chat.end()
    session.printer.say("Chat ended.")
    return True


async def _quit(session: ChatSession, _rest: str) -> bool:
    session.printer.say("Left the chat; it stays open (/end ends it).")
    return True


#: The local commands, by name. Lookup is by the word after the slash.
SLASH_COMMANDS: dict[str, SlashCommand] = {
    command.name: command
    for command in (
        SlashCommand("help", "list these commands", _help),
        SlashCommand("end", "end the chat and leave", _end),
        SlashCommand("quit", "leave; the chat stays open", _quit),
    )
}


def _find_command(name: str) -> SlashCommand | None:
    """The command typed as ``/name``: the one place that maps a typed word to a command.

    Numbered choices (``/1``) are not commands: :func:`_handle_line` resolves them first.
    """
    return SLASH_COMMANDS.get(name.lower())


async def _handle_line(session: ChatSession, line: str) -> bool:
    """Send a typed line or run its slash command; ``True``: leave the chat."""
    text = line.strip()
    if not text:
        return False
    if text.startswith("//"):
        await session.chat.send(text[1:])
        return False
    if text.startswith("/"):
        number = choice_number(text)
        if number is not None:
            problem = await send_choice(session.chat, session.choices, number)
            if problem is not None:
                session.printer.say(problem)
            return False
        name, _, rest = text[1:].partition(" ")
        command = _find_command(name)
        if command is None:
            session.printer.say(f"Unknown command /{name} (not sent); /help lists the commands.")
            return False
        return await command.run(session, rest.strip())
    await session.chat.send(text)
    return False


_READ_SIZE: Final = 4096


async def _stdin_lines() -> AsyncIterator[str]:
    """Lines typed on stdin, read without a thread where the platform allows.

    A thread blocked in ``readline`` cannot be cancelled: Ctrl-C would then wait for the
    next Enter. On Unix the event loop waits for stdin to become readable instead, so
    cancelling the read is immediate on asyncio and trio.
    """
    try:
        fd = sys.stdin.fileno()
    except (AttributeError, OSError, ValueError):
        fd = -1
    if fd < 0 or sys.platform == "win32":
        while True:
            line = await anyio.to_thread.run_sync(sys.stdin.readline, abandon_on_cancel=True)
            if not line:
                return
            yield line
    pending = b""
    while True:
        await anyio.wait_readable(fd)
        chunk = os.read(fd, _READ_SIZE)
        if not chunk:
            if pending:
                yield pending.decode(errors="replace")
            return
        pending += chunk
        while b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            yield line.decode(errors="replace") + "\n"


async def run_chat(options: ChatOptions, *, out: TextIO = sys.stdout) -> int:
    """An interactive terminal chat; returns the exit code (0: the user left).

    Typed lines are sent; slash commands (:data:`SLASH_COMMANDS`) run locally. End of
    input (Ctrl-D) leaves. Expected failures raise :class:`CommandError` with one line
    that says what to do.
    """
    interactive = sys.stdin.isatty() and out.isatty()
    printer = _Printer(out, prompt="> " if interactive else "")
    store_path = options.store_path
    store_path.parent.mkdir(parents=True, exist_ok=True)
    store = FileStore(store_path)
    # One store file may hold the real service's visitor and the fake's side by side;
    # "default" is the key earlier versions used, so an old store keeps its visitor.
    key = "fake" if options.fake else "default"
    async with AsyncExitStack() as stack:
        base_url = options.base_url or DEFAULT_BASE_URL
        if options.fake:
            from .testing import FakeGiosg

            # The fake keeps its visitors beside the store, so the next run resumes the
            # same visitor. Without that file the fake has never seen the stored visitor
            # (nor its token): forget it, so a new one starts instead of being rejected.
            data_file = store_path.with_name("fake-giosg.json")
            if not data_file.exists():
                await store.delete(key)
            giosg = await stack.enter_async_context(
                FakeGiosg(data_file=data_file, rooms=[options.room_id])
            )
            base_url = giosg.base_url
            await giosg.start_bot(
                options.room_id, name="Demo Bot", organization_id=options.organization_id
            )
        try:
            visitor = await stack.enter_async_context(
                Visitor(
                    options.organization_id,
                    base_url=base_url,
                    store=store,
                    key=key,
                )
            )
            chat = await visitor.start_chat(options.room_id)
        except InvalidSecretError:
            raise CommandError(
                f"{base_url} rejected the visitor saved in {store_path}; delete that file "
                "(or pass another --store) to chat as a new visitor"
            ) from None
        except NotFoundError:
            raise CommandError(
                f"room {options.room_id} was not found in organization "
                f"{options.organization_id} (check --room and --org)"
            ) from None
        except TransportError as exc:
            raise CommandError(f"cannot reach {base_url}: {exc}") from None
        where = "the embedded fake Giosg" if options.fake else base_url
        printer.say(f"Visitor {visitor.visitor_id}, chatting in room {options.room_id} on {where}.")
        printer.say("Type a message and press Enter; /help lists the commands.")
        session = ChatSession(options=options, visitor=visitor, chat=chat, printer=printer)
        async with anyio.create_task_group() as tg:
            await tg.start(_show_messages, chat, printer, [], session.choices)
            tg.start_soon(_show_typing, chat, printer)
            tg.start_soon(_report_end, session)
            async for line in _stdin_lines():
                try:
                    if await _handle_line(session, line):
                        break
                except GiosgError as exc:
                    # One failed send (an ended chat, a network blip) does not end the session.
                    printer.say(f"Not sent: {exc}")
                    continue
                printer.prompt()
            await anyio.sleep(0.5)  # let the last answers arrive
            tg.cancel_scope.cancel()
        printer.end_prompt()
    return 0


async def _report_end(session: ChatSession) -> None:
    await session.chat.wait_ended()
    if not session.ended_here:
        session.printer.say("The chat has ended; /quit leaves.")
