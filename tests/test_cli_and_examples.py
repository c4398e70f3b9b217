"""The README's main job (the demo) and every example run, and their output is checked."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest


ROOT = Path(__file__).parent.parent


def _run(args: list[str], cwd: Path) -> str:
    result = subprocess.run(
        [sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_demo_creates_then_resumes_the_same_visitor(tmp_path: Path) -> None:
    """Two demo runs: the first creates a visitor, the second resumes it; tokens renew."""
    args = ["-m", "giosg_visitor", "demo", "--state-dir", str(tmp_path), "--lifetime", "2"]
    first = _run(args, ROOT)
    second = _run(args, ROOT)
    new_id = re.search(r"new visitor created: visitor_id=([0-9a-f]{32})", first)
    assert new_id is not None, first
    assert f"returning visitor resumed: visitor_id={new_id.group(1)}" in second
    for out in (first, second):
        assert "(mode 600): True" in out
        assert "requests with an expired token: 0" in out
        assert "(same visitor: True)" in out
        renewals = re.search(r"renewals: (\d+)", out)
        assert renewals is not None
        assert int(renewals.group(1)) >= 1


def test_quickstart_runs_and_resumes(tmp_path: Path) -> None:
    """examples/quickstart.py runs twice in a clean folder and meets the same visitor."""
    script = str(ROOT / "examples" / "quickstart.py")
    first, second = _run([script], tmp_path), _run([script], tmp_path)
    assert re.fullmatch(r"visitor [0-9a-f]{32} is authenticated\n", first)
    assert first == second
    assert (tmp_path / "visitor.json").stat().st_mode & 0o777 == 0o600


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


def test_public_names_match_all() -> None:
    """__all__ is sorted and is exactly the public namespace."""
    import types

    import giosg_visitor

    public = {
        name
        for name, value in vars(giosg_visitor).items()
        if not name.startswith(("_", "@"))  # "@py_*": pytest's assertion rewriting
        and not isinstance(value, types.ModuleType)
        and name != "annotations"  # from __future__
    }
    assert giosg_visitor.__all__ == sorted(giosg_visitor.__all__)
    assert set(giosg_visitor.__all__) - {"__version__"} == public
