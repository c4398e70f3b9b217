"""`giosg-visitor chat` driven in a pseudo-terminal, as a person would, on both backends.

Each test runs the command in a child process attached to a pty (pexpect), so the
prompt, Ctrl-C (SIGINT from the terminal) and Ctrl-D (end of input) behave exactly as
in a terminal. The "real service" is a FakeGiosg served by the test and passed with
``--base-url``, so the test can read back what reached the server.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import anyio
import pexpect
import pytest

from giosg_visitor.testing import FakeGiosg

from .._helpers import ORG_ID, ROOM_ID


ROOT = Path(__file__).parent.parent.parent
TIMEOUT = 60  # generous: the machine may be busy; a hang still fails the test
BACKENDS = [pytest.param("asyncio", id="asyncio"), pytest.param("trio", id="trio")]

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="pexpect needs a POSIX pty")


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """The child's environment: a private home and state folder, no org from the caller."""
    environ = dict(os.environ)
    environ.update(HOME=str(tmp_path / "home"), XDG_STATE_HOME=str(tmp_path / "state"))
    for name in ("GIOSG_ORG_ID", "GIOSG_ROOM_ID"):
        environ.pop(name, None)
    return environ


@pytest.fixture
def server() -> Iterator[FakeGiosg]:
    """A FakeGiosg in this process, standing in for the real service."""
    giosg = FakeGiosg(rooms=[ROOM_ID])
    giosg.start()
    try:
        yield giosg
    finally:
        giosg.stop()


def spawn(args: list[str], env: dict[str, str], cwd: Path) -> pexpect.spawn[str]:
    child = pexpect.spawn(
        sys.executable,
        ["-m", "giosg_visitor", *args],
        env=env,
        cwd=str(cwd),
        encoding="utf-8",
        timeout=TIMEOUT,
        dimensions=(40, 200),
    )
    return child


def finish(child: pexpect.spawn[str]) -> tuple[int | None, str]:
    """Wait for the child to exit; its exit code and everything it printed."""
    child.expect(pexpect.EOF)
    output = str(child.before)
    child.close()
    return child.exitstatus, output


def visitor_id(child: pexpect.spawn[str]) -> str:
    child.expect(r"Visitor ([0-9a-f]+), chatting in room")
    match = child.match
    assert isinstance(match, re.Match)
    return str(match.group(1))


@pytest.mark.parametrize("backend", BACKENDS)
def test_fake_chat_prompt_help_message_then_ctrl_c(
    backend: str, env: dict[str, str], tmp_path: Path
) -> None:
    """A prompt; /help is local; a message gets the bot's answer; Ctrl-C exits 130 at once."""
    child = spawn(["--backend", backend, "chat", "--fake"], env, tmp_path)
    visitor_id(child)
    child.expect("/help lists the commands")
    child.expect_exact("> ")
    child.sendline("/help")
    child.expect_exact("/end")
    child.expect_exact("/quit")
    child.sendline("/nonsense")
    child.expect_exact("Unknown command /nonsense (not sent)")
    child.sendline("hello there")
    child.expect_exact("you: hello there")
    child.expect_exact("Demo Bot: Hello! I'm the demo bot.")
    child.sendintr()  # Ctrl-C, from the terminal
    code, rest = finish(child)
    transcript = str(child.before) + rest
    assert code == 130, rest
    assert "Traceback" not in rest
    assert "never awaited" not in rest
    assert "you: /help" not in transcript
    assert "you: /nonsense" not in transcript
    # State went to the user's state folder, not the current one.
    assert list(tmp_path.glob("*.json")) == []
    assert (tmp_path / "state" / "giosg-visitor" / "chat-fake" / "visitor.json").exists()


@pytest.mark.parametrize("backend", BACKENDS)
def test_fake_chat_eof_exits_0_and_a_second_run_resumes(
    backend: str, env: dict[str, str], tmp_path: Path
) -> None:
    """Ctrl-D leaves with 0; `chat --fake` again in the same place works (same visitor)."""
    ids = []
    for _ in range(2):
        child = spawn(["--backend", backend, "chat", "--fake"], env, tmp_path)
        ids.append(visitor_id(child))
        child.expect_exact("> ")
        child.sendeof()  # Ctrl-D
        code, rest = finish(child)
        assert code == 0, rest
        assert "Traceback" not in rest
    assert ids[0] == ids[1]
    # Losing the fake's own data file does not break the next run either.
    (tmp_path / "state" / "giosg-visitor" / "chat-fake" / "fake-giosg.json").unlink()
    child = spawn(["--backend", backend, "chat", "--fake"], env, tmp_path)
    assert visitor_id(child) != ids[0]
    child.sendeof()
    assert finish(child)[0] == 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_chat_with_a_server_sends_lines_and_end_ends_it(
    backend: str, env: dict[str, str], tmp_path: Path, server: FakeGiosg
) -> None:
    """Against a server: typed lines arrive, slash commands never do, /end ends the chat."""
    store = tmp_path / "visitor.json"
    args = ["--backend", backend, "chat", "--base-url", server.base_url, "--room", ROOM_ID]
    env["GIOSG_ORG_ID"] = ORG_ID  # the organization from the environment
    child = spawn([*args, "--store", str(store)], env, tmp_path)
    vid = visitor_id(child)
    child.expect_exact("> ")
    child.sendline("/help")
    child.expect_exact("/quit")
    child.sendline("first line")
    child.expect_exact("you: first line")
    child.sendline("//slash kept")
    child.expect_exact("you: /slash kept")
    child.sendline("/end")
    child.expect_exact("Chat ended.")
    code, rest = finish(child)
    assert code == 0, rest
    assert "Traceback" not in rest
    (chat_id,) = anyio.run(server.chat_ids, vid)
    stored = anyio.run(server.messages, chat_id)
    texts = [m["message"] for m in stored if m["type"] == "msg"]
    assert texts == ["first line", "/slash kept"]
    assert server.state.chats.chats[chat_id].resource["is_ended"] is True
    assert store.exists()


def run_cli(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "giosg_visitor", *args],
        env=env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


def assert_one_line_failure(result: subprocess.CompletedProcess[str], wanted: str) -> None:
    assert result.returncode == 1, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("giosg-visitor: error: ")
    assert wanted in lines[0]


@pytest.mark.parametrize("backend", BACKENDS)
def test_expected_failures_are_one_readable_line(
    backend: str, env: dict[str, str], tmp_path: Path, server: FakeGiosg
) -> None:
    """No organization, no network, an unknown room, a rejected secret: one line, exit 1."""
    chat = ["--backend", backend, "chat"]
    assert_one_line_failure(run_cli([*chat, "--room", ROOM_ID], env, tmp_path), "--org")
    # Nothing listens on port 9 (discard) on loopback here.
    offline = [*chat, "--org", ORG_ID, "--room", ROOM_ID, "--base-url", "http://127.0.0.1:9"]
    assert_one_line_failure(run_cli(offline, env, tmp_path), "cannot reach http://127.0.0.1:9")
    online = [*chat, "--org", ORG_ID, "--base-url", server.base_url, "--store", "v.json"]
    result = run_cli([*online, "--room", "not-a-room"], env, tmp_path)
    assert_one_line_failure(result, "room not-a-room was not found")

    child = spawn([*online, "--room", ROOM_ID], env, tmp_path)
    vid = visitor_id(child)
    child.sendeof()
    assert finish(child)[0] == 0
    anyio.run(server.revoke_visitor, vid)
    result = run_cli([*online, "--room", ROOM_ID], env, tmp_path)
    assert_one_line_failure(result, "rejected the visitor saved in v.json")


def test_version_and_python_dash_m(env: dict[str, str], tmp_path: Path) -> None:
    from giosg_visitor import __version__

    result = run_cli(["--version"], env, tmp_path)
    assert result.returncode == 0
    assert result.stdout.strip() == f"giosg-visitor {__version__}"


@pytest.mark.parametrize(
    ("platform", "environ", "expected"),
    [
        ("linux", {"HOME": "/home/u"}, "/home/u/.local/state/giosg-visitor"),
        ("linux", {"HOME": "/home/u", "XDG_STATE_HOME": "/xdg"}, "/xdg/giosg-visitor"),
        # A relative XDG_STATE_HOME is ignored, as the XDG spec says.
        ("linux", {"HOME": "/u", "XDG_STATE_HOME": "rel"}, "/u/.local/state/giosg-visitor"),
        ("darwin", {"HOME": "/Users/u"}, "/Users/u/Library/Application Support/giosg-visitor"),
        ("win32", {"HOME": "/h", "LOCALAPPDATA": "/appdata"}, "/appdata/giosg-visitor"),
    ],
)
def test_user_state_dir_rules(platform: str, environ: dict[str, str], expected: str) -> None:
    from giosg_visitor._paths import user_state_dir

    assert user_state_dir(environ=environ, platform=platform) == Path(expected)
