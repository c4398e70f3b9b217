"""The documentation: it builds strictly, covers the public API, and every sample runs.

Every ``python`` block of ``README.md`` and ``docs/**/*.md`` runs here against
``FakeGiosg`` (conventions: ``tests/_docs_harness.py`` and ``docs/contributing.md``), so a
sample that stops working fails the suite. Test ids are ``file:line`` of the block.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import giosg_visitor
import giosg_visitor.notebook
import giosg_visitor.stores
import giosg_visitor.sync
import giosg_visitor.testing

from .._docs_harness import (
    ALLOWED_LANGUAGES,
    ROOT,
    RUNNABLE_LANGUAGES,
    CredentialsWorld,
    Sample,
    collect_fences,
    credentials_world,
    doc_files,
    needs_credentials,
    needs_redis,
    redis_keys_created,
    run_async_sample,
    run_script,
    run_sync_sample,
)


SAMPLES = [
    Sample(fence)
    for path in doc_files()
    for fence in collect_fences(path)
    if fence.language in RUNNABLE_LANGUAGES
]
SCRIPTS = [sample for sample in SAMPLES if sample.kind == "script"]
ASYNC_SAMPLES = [sample for sample in SAMPLES if sample.kind == "async"]
SYNC_SAMPLES = [sample for sample in SAMPLES if sample.kind == "sync"]

#: The pytest plugin's fixtures are public too (documented on the testing reference page).
PLUGIN_FIXTURES = ["giosg", "fake_clock"]


def public_objects() -> list[str]:
    """Dotted paths of every public object: each needs a rendered reference entry."""
    paths = [f"giosg_visitor.{name}" for name in giosg_visitor.__all__ if name != "__version__"]
    for module in (giosg_visitor.sync, giosg_visitor.testing, giosg_visitor.notebook):
        paths += [f"{module.__name__}.{name}" for name in module.__all__]
    # The store records live only in giosg_visitor.stores; its stores are top-level too.
    stores = giosg_visitor.stores
    paths += [f"giosg_visitor.stores.{n}" for n in stores.__all__ if n not in giosg_visitor.__all__]
    paths += [f"giosg_visitor.testing.pytest_plugin.{name}" for name in PLUGIN_FIXTURES]
    return paths


@pytest.fixture(scope="session")
def docs_credentials() -> Iterator[CredentialsWorld]:
    """The local OAuth2 token server and protected API of the credentials samples."""
    with credentials_world() as world:
        yield world


@pytest.fixture
def sample_names(request: pytest.FixtureRequest, sample: Sample) -> Iterator[dict[str, str]]:
    """The optional prepared names this sample uses (credentials, ``REDIS_URL``)."""
    names: dict[str, str] = {}
    if needs_credentials(sample):
        world: CredentialsWorld = request.getfixturevalue("docs_credentials")
        names.update(world.names)
    if not needs_redis(sample):
        yield names
        return
    names["REDIS_URL"] = request.getfixturevalue("redis_url")
    with redis_keys_created(names["REDIS_URL"]):
        yield names


# The samples ------------------------------------------------------------------------------


@pytest.mark.parametrize("sample", SCRIPTS, ids=[s.id for s in SCRIPTS])
def test_script_sample_runs(
    sample: Sample,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A script block runs as ``__main__`` in an empty folder and prints something."""
    monkeypatch.chdir(tmp_path)
    run_script(sample)
    assert capsys.readouterr().out.strip()


@pytest.mark.parametrize("sample", ASYNC_SAMPLES, ids=[s.id for s in ASYNC_SAMPLES])
async def test_async_sample_runs(
    sample: Sample, sample_names: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An async block runs to the end against a fresh FakeGiosg, on asyncio and on trio."""
    monkeypatch.chdir(tmp_path)
    await run_async_sample(sample, sample_names, tmp_path)


@pytest.mark.parametrize("sample", SYNC_SAMPLES, ids=[s.id for s in SYNC_SAMPLES])
def test_sync_sample_runs(
    sample: Sample, sample_names: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A blocking block runs to the end against a fresh FakeGiosg, with no event loop."""
    monkeypatch.chdir(tmp_path)
    run_sync_sample(sample, sample_names)


# The pages ---------------------------------------------------------------------------------


def test_every_fence_names_a_known_language() -> None:
    """Blocks are ``python`` (run) or a shell, text or data language (shown); none is unnamed."""
    unknown = [
        f"{fence.id} ({fence.language or 'no language'})"
        for path in doc_files()
        for fence in collect_fences(path)
        if fence.language not in ALLOWED_LANGUAGES
    ]
    assert unknown == []


def test_every_guide_has_running_samples() -> None:
    """Each guide and the getting-started page show code that the suite runs."""
    pages = ["docs/getting-started.md"]
    pages += sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "docs" / "guides").glob("*.md"))
    with_samples = {sample.fence.path for sample in SAMPLES}
    assert [page for page in pages if page not in with_samples] == []


def test_reference_pages_name_every_public_object() -> None:
    """Each public object (or its module) has a ``:::`` directive in docs/reference/."""
    text = "\n".join(p.read_text() for p in (ROOT / "docs" / "reference").glob("*.md"))
    directives = set(re.findall(r"^::: ([\w.]+)", text, flags=re.MULTILINE))
    # A module's directive (``::: giosg_visitor.sync``) covers its members; the root
    # package's would cover everything, so it does not count.
    modules = [d for d in directives if d != "giosg_visitor"]
    missing = [
        path
        for path in public_objects()
        if path not in directives and not any(path.startswith(f"{m}.") for m in modules)
    ]
    assert missing == []


def test_site_builds_strictly_with_a_reference_entry_per_object(tmp_path: Path) -> None:
    """``mkdocs build --strict`` succeeds and renders an anchor for every public object."""
    site = tmp_path / "site"
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    html = "\n".join(p.read_text() for p in (site / "reference").rglob("*.html"))
    missing = [path for path in public_objects() if f'id="{path}"' not in html]
    assert missing == []
