"""The built sdist and wheel, installed as a user would: into fresh virtualenvs.

The source tree is copied with decoy state files planted where ``giosg-visitor chat``
and the quickstart used to write them (a store holding a canary "secret", a fake's data
file, lock files), then built with ``python -m build`` (an isolated build, as on a
release machine). The tests check what the archives hold, the metadata PyPI shows, and
that the wheel works without extras (the pytest plugin loads, missing extras name their
``pip install``) and with ``[fake]``.

Builds and installs use the package registry (pip's cache keeps them fast) and run in
the default suite; ``-m "not packaging"`` leaves them out.
"""

from __future__ import annotations

import email
import email.message
import os
import shutil
import subprocess
import sys
import tarfile
import textwrap
import venv
import zipfile
from pathlib import Path

import pytest


ROOT = Path(__file__).parent.parent.parent
CANARY = "canary-visitor-secret-3f9d1c0e"  # must never reach an archive
TIMEOUT = 300

pytestmark = pytest.mark.packaging

# What a store or a fake's data file looks like after a chat: never to be shipped.
DECOYS = [
    "giosg-visitor.json",
    "giosg-visitor.json.lock",
    "giosg-visitor.json.renew.lock",
    "fake-giosg.json",
    "visitor.json",
    "visitors.db",
    "docs/giosg-visitor.json",
    "giosg_visitor/giosg-visitor.json",
    "giosg_visitor/testing/fake-giosg.json",
    "giosg_visitor/visitor.json.lock",
]
SDIST_TOP = {
    "giosg_visitor",
    "docs",
    "CHANGELOG.md",
    "LICENSE",
    "README.md",
    "README.pypi.md",
    "pyproject.toml",
    "PKG-INFO",
    ".gitignore",
}


def _run(args: list[str | Path], *, cwd: Path, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        [str(a) for a in args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, f"{args}: {result.stdout}\n{result.stderr}"
    return result.stdout


def _tracked_files() -> list[str]:
    # Tracked files and new ones not ignored: what a commit of this tree would hold.
    out = _run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT)
    return [name for name in out.split("\0") if name]


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sdist and the wheel, built from a copy of the tree with decoys planted."""
    work = tmp_path_factory.mktemp("packaging")
    source = work / "src"
    for name in _tracked_files():
        if not (ROOT / name).is_file():
            continue  # deleted in the working tree
        target = source / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, target)
    for name in DECOYS:
        decoy = source / name
        decoy.parent.mkdir(parents=True, exist_ok=True)
        decoy.write_text(f'{{"visitor_secret_id": "{CANARY}"}}')
    out = work / "dist"
    # Build the sdist, then the wheel from the unpacked sdist: the wheel a user gets
    # from `pip install` of the sdist is the one tested.
    _run([sys.executable, "-m", "build", "--outdir", out, source], cwd=work)
    return out


def _sdist(dist: Path) -> Path:
    (path,) = dist.glob("*.tar.gz")
    return path


def _wheel(dist: Path) -> Path:
    (path,) = dist.glob("*.whl")
    return path


def test_sdist_holds_only_the_package_docs_license_and_metadata(dist: Path) -> None:
    with tarfile.open(_sdist(dist)) as sdist:
        members = [m for m in sdist.getmembers() if m.isfile()]
        names = [m.name.split("/", 1)[1] for m in members]
        tops = {name.split("/", 1)[0] for name in names}
        assert tops <= SDIST_TOP, tops - SDIST_TOP
        assert {"giosg_visitor", "docs", "LICENSE", "README.md", "CHANGELOG.md"} <= tops
        assert "giosg_visitor/py.typed" in names
        for name in names:
            assert not name.endswith((".json", ".lock", ".db", ".pyc")), name
        for member in members:
            handle = sdist.extractfile(member)
            assert handle is not None
            assert CANARY.encode() not in handle.read(), member.name


def test_wheel_holds_the_package_typed_with_its_license(dist: Path) -> None:
    with zipfile.ZipFile(_wheel(dist)) as wheel:
        names = wheel.namelist()
        for name in names:
            assert name.startswith(("giosg_visitor/", "giosg_visitor-")), name
            assert not name.endswith((".json", ".lock", ".db", ".pyc")), name
            assert CANARY.encode() not in wheel.read(name), name
        assert "giosg_visitor/py.typed" in names
        assert "giosg_visitor/testing/pytest_plugin.py" in names
        assert any(name.endswith(".dist-info/licenses/LICENSE") for name in names)
        (entry_points,) = (n for n in names if n.endswith(".dist-info/entry_points.txt"))
        points = wheel.read(entry_points).decode()
        assert "giosg-visitor = giosg_visitor.cli:main" in points
        assert "giosg_visitor = giosg_visitor.testing.pytest_plugin" in points


def _metadata(dist: Path) -> email.message.Message:
    with zipfile.ZipFile(_wheel(dist)) as wheel:
        (name,) = (n for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))
        return email.message_from_bytes(wheel.read(name))


def test_metadata_pypi_shows(dist: Path) -> None:
    meta = _metadata(dist)
    urls = {value.split(",", 1)[0] for value in meta.get_all("Project-URL") or []}
    assert {"Documentation", "Changelog", "Source", "Issues"} <= urls
    assert meta["License-Expression"] == "MIT"
    classifiers = meta.get_all("Classifier") or []
    assert any(c.startswith("Development Status ::") for c in classifiers)
    assert "Typing :: Typed" in classifiers
    assert "Framework :: Pytest" in classifiers
    assert {
        "Programming Language :: Python :: 3.11",
        "Programming Language :: Python :: 3.13",
    } <= set(classifiers)
    assert set(meta.get_all("Provides-Extra") or []) >= {"fake", "redis", "trio"}
    description = meta.get_payload()
    assert isinstance(description, str)
    # PyPI readers get pip first, not the repository's scripts.
    first_block = description.split("```", 2)[1]
    assert "pip install giosg-visitor" in first_block
    assert "./scripts/" not in description


def _venv(path: Path) -> Path:
    # No pip inside: this interpreter's pip installs into it (`pip --python`), which
    # saves seeding pip into every fresh environment.
    venv.EnvBuilder(with_pip=False, clear=True).create(path)
    return path / ("Scripts" if sys.platform == "win32" else "bin")


def _pip_install(bin_dir: Path, *requirements: str, cwd: Path) -> None:
    pip: list[str | Path] = [sys.executable, "-m", "pip", "--python", bin_dir / "python", "install"]
    _run([*pip, "--quiet", "--disable-pip-version-check", *requirements], cwd=cwd)


USER_TESTS = textwrap.dedent(
    """
    import pytest

    def test_unrelated():
        assert 1 + 1 == 2

    def test_fake_clock_works_without_the_extra(fake_clock):
        assert fake_clock.monotonic() == 1000.0

    @pytest.mark.anyio
    async def test_wants_the_fake(giosg):
        pass
    """
)


def _user_project(tmp_path: Path) -> Path:
    project = tmp_path / "user-project"
    project.mkdir()
    (project / "test_app.py").write_text(USER_TESTS)
    (project / "conftest.py").write_text(
        "import pytest\n\n@pytest.fixture\ndef anyio_backend():\n    return 'asyncio'\n"
    )
    return project


def test_wheel_without_extras(dist: Path, tmp_path: Path) -> None:
    """The plugin loads; only the test that asks for the fake fails, with the pip command."""
    bin_dir = _venv(tmp_path / "venv")
    _pip_install(bin_dir, str(_wheel(dist)), "pytest", cwd=tmp_path)
    project = _user_project(tmp_path)
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("PYTEST_ADDOPTS", None)
    result = subprocess.run(
        [bin_dir / "python", "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    out = result.stdout + result.stderr
    assert "Error while loading plugin" not in out
    assert result.returncode == 1, out  # tests ran; one failed (not 3: plugin error)
    assert "2 passed" in out
    assert 'pip install "giosg-visitor[fake]"' in out

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [bin_dir / "giosg-visitor", *args],
            cwd=tmp_path,
            env={**env, "HOME": str(tmp_path / "home"), "XDG_STATE_HOME": str(tmp_path / "st")},
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )

    demo = cli("demo")
    assert demo.returncode == 1
    assert demo.stderr.strip().splitlines() == [
        "giosg-visitor: error: No module named 'starlette': the fake Giosg needs its web "
        'stack (starlette, uvicorn): pip install "giosg-visitor[fake]"'
    ]
    trio = cli("--backend", "trio", "chat", "--fake")
    assert trio.returncode == 1
    assert 'pip install "giosg-visitor[trio]"' in trio.stderr
    assert "Traceback" not in trio.stderr
    version = _run([bin_dir / "python", "-m", "giosg_visitor", "--version"], cwd=tmp_path)
    assert version.strip() == "giosg-visitor 0.1.0.dev0"
    imported = subprocess.run(
        [bin_dir / "python", "-c", "from giosg_visitor.testing import FakeGiosg"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert imported.returncode == 1
    assert "ModuleNotFoundError: No module named 'starlette': the fake Giosg" in imported.stderr
    redis = subprocess.run(
        [bin_dir / "python", "-c", "import giosg_visitor as g; g.RedisStore('redis://x')"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert "pip install giosg-visitor[redis]" in redis.stderr


def test_wheel_with_the_fake_extra(dist: Path, tmp_path: Path) -> None:
    """With ``[fake]`` the plugin's ``giosg`` fixture serves a fake in the user's tests."""
    bin_dir = _venv(tmp_path / "venv")
    _pip_install(bin_dir, f"giosg-visitor[fake] @ {_wheel(dist).as_uri()}", "pytest", cwd=tmp_path)
    project = _user_project(tmp_path)
    output = _run([bin_dir / "python", "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=project)
    assert "3 passed" in output
