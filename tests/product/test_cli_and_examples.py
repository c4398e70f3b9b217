"""The README's main job (the demo) and every example run, and their output is checked."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest


ROOT = Path(__file__).parent.parent.parent


def _run(args: list[str], cwd: Path) -> str:
    result = subprocess.run(
        [sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_demo_runs_a_full_conversation_then_resumes(tmp_path: Path) -> None:
    """Two demo runs: a conversation with renewal and a recovered drop; then a resume."""
    args = ["-m", "giosg_visitor", "demo", "--state-dir", str(tmp_path), "--lifetime", "2"]
    first = _run(args, ROOT)
    new_id = re.search(r"New visitor ([0-9a-f]{32})\.", first)
    assert new_id is not None, first
    assert "(mode 600)" in first
    assert "Online in the room: Demo Bot." in first
    assert "  you: Hello! Is anybody there?" in first
    assert "* Demo Bot joined the chat" in first
    assert "(Demo Bot is typing...)" in first
    assert "  Demo Bot: Hello! I'm the demo bot. Ask me anything." in first
    assert "  Demo Bot: Did you get this one?" in first
    assert "  Demo Bot: Goodbye, and thanks for chatting!" in first
    renewals = re.search(
        r"Token renewed (\d+) times in the background; requests with an "
        r"expired token: 0\.",
        first,
    )
    assert renewals is not None, first
    assert int(renewals.group(1)) >= 1
    assert "Chat ended: True." in first
    second = _run(["-m", "giosg_visitor", "--backend", "trio", *args[2:]], ROOT)
    assert f"Returning visitor {new_id.group(1)}, resumed from" in second
    assert "Its last chat had 6 messages:" in second


def test_interactive_chat_against_the_fake(tmp_path: Path) -> None:
    """`giosg-visitor chat --fake` relays typed lines and prints the bot's answers."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "giosg_visitor",
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
    try:
        time.sleep(3)
        process.stdin.write("hello\n")
        process.stdin.flush()
        time.sleep(2)
        process.stdin.write("/end\n")
        process.stdin.flush()
        out, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 0, err
    assert "  you: hello" in out
    assert "  Demo Bot: Hello! I'm the demo bot. Ask me anything." in out
    assert "Chat ended." in out


def test_quickstart_runs_and_resumes(tmp_path: Path) -> None:
    """examples/quickstart.py chats with the bot; a second run is the same visitor."""
    script = str(ROOT / "examples" / "quickstart.py")
    first, second = _run([script], tmp_path), _run([script], tmp_path)
    lines = first.splitlines()
    assert re.fullmatch(r"visitor [0-9a-f]{32}", lines[0])
    assert lines[1:] == ["me: Hello!", "Demo Bot: Hello! I'm the demo bot. Ask me anything."]
    assert second.splitlines()[0] == lines[0]
    assert (tmp_path / "visitor.json").stat().st_mode & 0o777 == 0o600


def test_bridge_bot_keeps_one_visitor_per_user(tmp_path: Path) -> None:
    """The bridge relays answers to every user and resumes the same visitors on restart."""
    script = str(ROOT / "examples" / "bridge_bot.py")
    runs = [_run([script, "4"], tmp_path) for _ in range(2)]
    for out in runs:
        assert out.count("Hello! I'm the demo bot.") == 4
    mappings = [sorted(line for line in out.splitlines() if " -> visitor " in line) for out in runs]
    assert len(mappings[0]) == 4
    assert mappings[0] == mappings[1]


def test_explore_example_runs(tmp_path: Path) -> None:
    """examples/explore.py (the notebook's steps as a script) runs and shows secret-free reprs."""
    out = _run([str(ROOT / "examples" / "explore.py")], tmp_path)
    assert out.startswith("<Visitor org=")
    assert "msg Olivia Hi! What can I do for you?" in out
    assert "is_ended=True" in out


def test_readme_quickstart_is_the_example() -> None:
    """The README's quickstart block is examples/quickstart.py, verbatim."""
    readme = (ROOT / "README.md").read_text()
    example = (ROOT / "examples" / "quickstart.py").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.DOTALL)
    assert example in blocks


@pytest.mark.parametrize("command", ["scripts/demo", "scripts/test"])
def test_readme_starts_with_the_two_commands(command: str) -> None:
    """The README's first code block holds the two set-up commands, and .ci/run uses one."""
    readme = (ROOT / "README.md").read_text()
    first_block = re.search(r"```(?:bash|sh)?\n(.*?)```", readme, flags=re.DOTALL)
    assert first_block is not None
    assert f"./{command}" in first_block.group(1)
    assert "./scripts/test" in (ROOT / ".ci" / "run").read_text()


def test_fake_giosg_runs_standalone() -> None:
    """`python -m giosg_visitor.testing` serves auth until interrupted."""
    import signal

    import httpx

    with subprocess.Popen(
        [sys.executable, "-m", "giosg_visitor.testing", "--token-lifetime", "60"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as process:
        try:
            assert process.stdout is not None
            line = process.stdout.readline()
            match = re.fullmatch(r"FakeGiosg API: (http://127\.0\.0\.1:\d+)\n", line)
            assert match is not None, line
            response = httpx.post(
                f"{match.group(1)}/api/v5/public/orgs/e6a08f51-c250-4074-847b-58d444dbbeb1/auth",
                json={"visitor_secret_id": None},
            )
            assert response.status_code == 200
            assert response.json()["expires_in"] == 60
            process.send_signal(signal.SIGINT)
            assert process.wait(timeout=30) == 0
        finally:
            process.kill()
