"""scripts/_venv.sh (behind ./scripts/demo and ./scripts/test): a quiet, explained setup.

The script runs for real against a stand-in ``.venv/bin/python`` that prints pip-like
noise, so the test needs no network and checks only what the user sees.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest


ROOT = Path(__file__).parent.parent.parent
FIRST_RUN = "Setting up the environment in .venv (first run only; this takes a minute)...\n"

STUB_PYTHON = """#!/bin/sh
for i in $(seq 1 50); do
    echo "Collecting some-package==1.$i"
    echo "  Downloading some_package-1.$i.whl (12 kB)" >&2
done
exit "${STUB_RC:-0}"
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    (root / "scripts").mkdir(parents=True)
    shutil.copy2(ROOT / "scripts" / "_venv.sh", root / "scripts" / "_venv.sh")
    (root / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    python = root / ".venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text(STUB_PYTHON)
    python.chmod(0o755)
    return root


def source(root: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", 'source "$1/scripts/_venv.sh" && echo READY', "bash", str(root)],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_first_run_says_so_once_and_keeps_pip_quiet(project: Path) -> None:
    first = source(project)
    assert first.returncode == 0, first.stderr
    assert first.stderr == FIRST_RUN
    assert first.stdout == "READY\n"
    log = (project / ".venv" / "install.log").read_text()
    assert "Collecting some-package==1.50" in log
    assert "Downloading" in log

    again = source(project)
    assert (again.returncode, again.stdout, again.stderr) == (0, "READY\n", "")

    future = time.time() + 60
    os.utime(project / "pyproject.toml", (future, future))
    updated = source(project)
    assert updated.returncode == 0
    assert updated.stderr == "Updating the environment in .venv (pyproject.toml changed)...\n"


def test_a_failed_setup_shows_the_end_of_the_log(project: Path) -> None:
    failed = source(project, STUB_RC="1")
    assert failed.returncode != 0
    assert failed.stdout == ""
    lines = failed.stderr.splitlines()
    assert lines[0] == FIRST_RUN.strip()
    assert lines[1].startswith("Setting up .venv failed; the end of ")
    assert "Downloading some_package-1.50.whl" in failed.stderr
    assert "Collecting some-package==1.1\n" not in failed.stderr  # only the end
    assert not (project / ".venv" / ".installed").exists()
