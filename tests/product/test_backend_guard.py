"""The backend coverage guard (``tests/_backend_guard.py``) on small generated suites.

Each case collects a throw-away test directory in a child pytest (the guard is a
collection hook, so it must see a real collection) and checks the exit status and message.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest


ROOT = Path(__file__).resolve().parents[2]

CONFTEST = """
import pytest
from tests._backend_guard import pytest_collection_modifyitems

@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request):
    return request.param
"""

INI = """
[pytest]
anyio_mode = auto
addopts = -p no:cacheprovider -p no:randomly
markers =
    single_backend(reason): one backend only
"""


def _collect(tmp_path: Path, body: str, *args: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "conftest.py").write_text(CONFTEST)
    (tmp_path / "pytest.ini").write_text(INI)
    (tmp_path / "test_sample.py").write_text("import pytest\n" + textwrap.dedent(body))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_a_test_on_both_backends_passes(tmp_path: Path) -> None:
    result = _collect(tmp_path, "async def test_both(): pass\n")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 tests collected" in result.stdout


@pytest.mark.parametrize(
    ("body", "complaint"),
    [
        pytest.param(
            """
            @pytest.mark.parametrize("anyio_backend", ["asyncio"])
            async def test_one(): pass
            """,
            "test_sample.py::test_one: collected for asyncio but not for trio",
            id="parametrized-away",
        ),
        pytest.param(
            """
            @pytest.fixture
            def anyio_backend():
                return "trio"

            async def test_fixed(): pass
            """,
            "test_sample.py::test_fixed: collected for fixed but not for asyncio, trio",
            id="fixture-override",
        ),
        pytest.param(
            """
            @pytest.mark.parametrize("n", [1, 2])
            async def test_params(n, anyio_backend):
                pass
            """,
            None,
            id="other-params-keep-both",
        ),
        pytest.param(
            """
            @pytest.mark.single_backend(reason="")
            @pytest.mark.parametrize("anyio_backend", ["asyncio"])
            async def test_no_reason(): pass
            """,
            "needs a written reason=",
            id="marker-without-reason",
        ),
        pytest.param(
            """
            @pytest.mark.single_backend(reason="redis.asyncio runs on asyncio only")
            @pytest.mark.parametrize("anyio_backend", ["asyncio"])
            async def test_exempt(): pass
            """,
            None,
            id="marker-with-reason",
        ),
    ],
)
def test_one_backend_fails_the_collection_unless_marked_with_a_reason(
    tmp_path: Path, body: str, complaint: str | None
) -> None:
    result = _collect(tmp_path, body)
    output = result.stdout + result.stderr
    if complaint is None:
        assert result.returncode == 0, output
    else:
        assert result.returncode == pytest.ExitCode.USAGE_ERROR, output
        assert "async tests must run on asyncio and trio" in output
        assert complaint in output


def test_the_check_runs_before_deselection(tmp_path: Path) -> None:
    """``-k trio`` deselects the asyncio half: the test still counts as covered; an
    explicit ``::test[asyncio]`` selection is deliberate and not checked."""
    body = "async def test_both(): pass\n"
    assert _collect(tmp_path, body, "-k", "trio").returncode == 0
    one = """
        @pytest.mark.parametrize("anyio_backend", ["asyncio"])
        async def test_one(): pass
        """
    assert _collect(tmp_path, one, "-k", "test_one").returncode == pytest.ExitCode.USAGE_ERROR
    assert _collect(tmp_path, one, "test_sample.py::test_one[asyncio]").returncode == 0
