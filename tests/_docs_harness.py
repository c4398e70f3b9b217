"""Run the documentation's code samples: find them, classify them, give them a world.

Every fenced block of ``README.md`` and ``docs/**/*.md`` whose language is ``python``
runs in the test suite (``tests/product/test_docs.py``). The conventions are documented for
writers in ``docs/contributing.md``; in short, a block is one of:

* a **script**: it has ``if __name__ == "__main__":``. It runs as ``__main__`` in an
  empty temporary folder, with no event loop running (it calls ``anyio.run`` itself);
* an **async snippet**: it uses top-level ``await`` (``async with``, ``async for``) or
  defines ``async def test_*`` functions. It runs inside a task on asyncio and on trio;
* a **sync snippet**: anything else. It runs in a plain thread, without an event loop.

Snippets may use these names without defining them; each is prepared only if the
snippet uses it and does not bind it itself:

* ``ORG_ID``, ``ROOM_ID``: an organization and a room;
* ``giosg``: a started :class:`~giosg_visitor.testing.FakeGiosg`, ``BASE_URL`` its API
  origin;
* ``visitor``: a started visitor of ``ORG_ID`` on that fake (a
  :class:`giosg_visitor.Visitor`, or a :class:`giosg_visitor.sync.Visitor` in a sync
  snippet), and ``chat``: a chat it started in ``ROOM_ID``;
* ``TOKEN_URL``, ``CLIENT_ID``, ``CLIENT_SECRET``: an OAuth2 client of a local token
  server (``tests/_oauth_server.py``, authlib); ``ACCESS_TOKEN``: a token it issued;
  ``API_TOKEN``: a Giosg-style user API token; ``API_URL``: a protected resource that
  accepts ``Token <API_TOKEN>`` and ``Bearer <token issued by TOKEN_URL>``;
* ``REDIS_URL``: a private ``redis-server``.

Functions named ``test_*`` that a snippet defines are then called, like pytest would,
with the fixtures of the SDK's pytest plugin by parameter name (``giosg``: a fresh
``FakeGiosg``; ``fake_clock``: a ``FakeClock``) and ``tmp_path``.
"""

from __future__ import annotations

import ast
import builtins
import inspect
import re
import secrets
import sys
import types
from collections.abc import Iterator, Mapping
from contextlib import AsyncExitStack, ExitStack, contextmanager
from pathlib import Path
from typing import Any, Final, Literal

import anyio
import attrs
import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from giosg_visitor import Visitor, sync
from giosg_visitor.testing import FakeClock, FakeGiosg

from ._helpers import serve_asgi
from ._oauth_server import OAuthServer


__all__ = [
    "ALLOWED_LANGUAGES",
    "ROOT",
    "RUNNABLE_LANGUAGES",
    "CredentialsWorld",
    "Fence",
    "Sample",
    "collect_fences",
    "credentials_world",
    "doc_files",
    "needs_credentials",
    "needs_redis",
    "redis_keys_created",
    "run_async_sample",
    "run_script",
    "run_sync_sample",
]

ROOT: Final = Path(__file__).resolve().parent.parent
ORG_ID: Final = "e6a08f51-c250-4074-847b-58d444dbbeb1"
ROOM_ID: Final = "9926bdfa-56e0-11e5-b98c-6c4008c08dfe"

#: Fence languages that run.
RUNNABLE_LANGUAGES: Final = frozenset({"python"})
#: Fence languages that are shown, never run (anything else is a mistake).
ALLOWED_LANGUAGES: Final = RUNNABLE_LANGUAGES | {
    "bash",
    "console",
    "json",
    "mermaid",
    "text",
    "toml",
    "yaml",
}

#: Seconds any one sample may take before it counts as hung.
SAMPLE_TIMEOUT: Final = 60.0

_FENCE_OPEN: Final = re.compile(r"^(?P<indent>[ ]*)(?P<fence>`{3,}|~{3,})(?P<info>[^`]*)$")
_WORLD_NAMES: Final = frozenset({"giosg", "BASE_URL", "visitor", "chat"})
_CREDENTIAL_NAMES: Final = frozenset(
    {"TOKEN_URL", "CLIENT_ID", "CLIENT_SECRET", "ACCESS_TOKEN", "API_TOKEN", "API_URL"}
)


# Finding samples ---------------------------------------------------------------------------


@attrs.frozen
class Fence:
    """One fenced block of a Markdown file."""

    path: str
    line: int
    language: str
    source: str

    @property
    def id(self) -> str:
        """``file:line`` of the opening fence (the pytest id)."""
        return f"{self.path}:{self.line}"


def doc_files() -> list[Path]:
    """``README.md``, the PyPI description and every Markdown page of the site."""
    return [ROOT / "README.md", ROOT / "README.pypi.md", *sorted((ROOT / "docs").rglob("*.md"))]


def collect_fences(path: Path) -> list[Fence]:
    """The fenced blocks of one Markdown file, with their content dedented to the fence."""
    relative = path.relative_to(ROOT).as_posix()
    lines = path.read_text(encoding="utf-8").splitlines()
    fences: list[Fence] = []
    index = 0
    while index < len(lines):
        opening = _FENCE_OPEN.match(lines[index])
        if opening is None:
            index += 1
            continue
        indent, fence = len(opening["indent"]), opening["fence"]
        info = opening["info"].strip()
        language = info.split(maxsplit=1)[0].strip("{}.").lower() if info else ""
        closing = re.compile(rf"^[ ]{{0,{indent}}}{re.escape(fence[0])}{{{len(fence)},}}[ ]*$")
        body: list[str] = []
        end = index + 1
        while end < len(lines) and not closing.match(lines[end]):
            line = lines[end]
            body.append(line[indent:] if line[:indent].strip() == "" else line.lstrip())
            end += 1
        fences.append(Fence(relative, index + 1, language, "\n".join(body) + "\n"))
        index = end + 1
    return fences


@attrs.frozen
class Sample:
    """A Python block that runs."""

    fence: Fence

    @property
    def id(self) -> str:
        """``file:line`` of the opening fence."""
        return self.fence.id

    @property
    def source(self) -> str:
        """The code."""
        return self.fence.source

    def tree(self) -> ast.Module:
        """The parsed code, line numbers matching the Markdown file."""
        # Blank lines in front: line numbers (also of a SyntaxError) are the file's.
        tree = compile(
            "\n" * self.fence.line + self.source,
            str(ROOT / self.fence.path),
            "exec",
            flags=ast.PyCF_ONLY_AST | ast.PyCF_ALLOW_TOP_LEVEL_AWAIT,
            dont_inherit=True,
        )
        assert isinstance(tree, ast.Module)
        return tree

    @property
    def kind(self) -> Literal["script", "async", "sync"]:
        """How the block runs (see the module docstring)."""
        if re.search(r"^if __name__ == [\"']__main__[\"']:", self.source, flags=re.MULTILINE):
            return "script"
        try:
            code = compile(
                self.source,
                self.id,
                "exec",
                flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT,
                dont_inherit=True,
            )
        except SyntaxError:
            return "sync"  # collected all the same: running it reports the error and its line
        if code.co_flags & inspect.CO_COROUTINE or any(
            isinstance(node, ast.AsyncFunctionDef) for node in self._test_functions()
        ):
            return "async"
        return "sync"

    def free_names(self) -> set[str]:
        """Names the block reads but never binds (what it expects to be prepared)."""
        loaded: set[str] = set()
        bound: set[str] = set()
        for node in ast.walk(self.tree()):
            if isinstance(node, ast.Name):
                (loaded if isinstance(node.ctx, ast.Load) else bound).add(node.id)
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                bound.add(node.name)
            elif isinstance(node, ast.arg):
                bound.add(node.arg)
            elif isinstance(node, ast.alias):
                bound.add((node.asname or node.name).split(".")[0])
            elif isinstance(node, ast.ExceptHandler | ast.MatchAs | ast.MatchStar) and node.name:
                bound.add(node.name)
            elif isinstance(node, ast.MatchMapping) and node.rest:
                bound.add(node.rest)
        return loaded - bound - set(dir(builtins))

    def test_function_names(self) -> list[str]:
        """The ``test_*`` functions the block defines at top level, in order."""
        return [node.name for node in self._test_functions()]

    def _test_functions(self) -> list[ast.FunctionDef | ast.AsyncFunctionDef]:
        return [
            node
            for node in self.tree().body
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            and node.name.startswith("test_")
        ]

    def code(self) -> types.CodeType:
        """The compiled block (top-level ``await`` allowed), tracebacks pointing at the docs."""
        code = compile(
            self.tree(),
            str(ROOT / self.fence.path),
            "exec",
            flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT,
            dont_inherit=True,
        )
        assert isinstance(code, types.CodeType)
        return code


# The credentials world -----------------------------------------------------------------------


@attrs.frozen
class CredentialsWorld:
    """A local OAuth2 token server and a protected API for the credentials samples."""

    names: Mapping[str, str]


class _ProtectedAPI:
    """``GET /me``: 200 for ``Token <api_token>`` or a live Bearer token of ``oauth``."""

    def __init__(self, oauth: OAuthServer, api_token: str) -> None:
        self._oauth = oauth
        self._api_token = api_token
        app = Starlette(routes=[Route("/me", self._me, methods=["GET"])])
        self._app = app
        self._serving = ExitStack()
        self.url = ""

    async def _me(self, request: Request) -> JSONResponse:
        scheme, _, credential = request.headers.get("authorization", "").partition(" ")
        if scheme == "Token" and secrets.compare_digest(credential, self._api_token):
            return JSONResponse({"user": "api-token-user"})
        if scheme == "Bearer":
            issued = self._oauth.find_access(credential)
            if issued is not None and not issued.is_expired() and not issued.is_revoked():
                return JSONResponse({"client_id": issued.client_id})
        return JSONResponse(
            {"detail": "Authentication credentials were not provided."},
            status_code=401,
            headers={"WWW-Authenticate": "Bearer"},
        )

    def __enter__(self) -> _ProtectedAPI:
        port = self._serving.enter_context(
            serve_asgi(self._app, lifespan="off", ws="none", http="h11")
        )
        self.url = f"http://127.0.0.1:{port}/me"
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._serving.close()


@contextmanager
def credentials_world() -> Iterator[CredentialsWorld]:
    """Start the token server and the protected API; yield the names samples may use."""
    client_id, client_secret = "docs-client", "docs-secret-" + secrets.token_hex(8)
    api_token = "docs-api-token-" + secrets.token_hex(8)
    with ExitStack() as stack:
        oauth = stack.enter_context(OAuthServer())
        oauth.add_client(client_id, client_secret)
        api = stack.enter_context(_ProtectedAPI(oauth, api_token))
        response = httpx.post(
            oauth.token_url,
            data={"grant_type": "client_credentials"},
            auth=(client_id, client_secret),
        )
        response.raise_for_status()
        yield CredentialsWorld(
            {
                "TOKEN_URL": oauth.token_url,
                "CLIENT_ID": client_id,
                "CLIENT_SECRET": client_secret,
                "ACCESS_TOKEN": response.json()["access_token"],
                "API_TOKEN": api_token,
                "API_URL": api.url,
            }
        )


# Running samples ---------------------------------------------------------------------------


def needs_credentials(sample: Sample) -> bool:
    """Whether the sample uses the token server's names."""
    return bool(sample.free_names() & _CREDENTIAL_NAMES)


def needs_redis(sample: Sample) -> bool:
    """Whether the sample uses ``REDIS_URL``."""
    return "REDIS_URL" in sample.free_names()


@contextmanager
def redis_keys_created(url: str) -> Iterator[None]:
    """Delete the Redis keys created in the block (samples reuse keys like ``slack:alice``)."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        before = set(client.scan_iter())
        yield
        created = set(client.scan_iter()) - before
        if created:
            client.delete(*created)
    finally:
        client.close()


def _base_namespace(sample: Sample, extra: Mapping[str, str]) -> dict[str, Any]:
    namespace: dict[str, Any] = {
        "__name__": "docs_sample",
        "__file__": str(ROOT / sample.fence.path),
        "ORG_ID": ORG_ID,
        "ROOM_ID": ROOM_ID,
    }
    namespace.update(extra)
    return namespace


def _unknown(sample: Sample, namespace: Mapping[str, Any]) -> set[str]:
    return sample.free_names() - set(namespace) - _WORLD_NAMES


async def run_async_sample(sample: Sample, extra: Mapping[str, str], tmp_path: Path) -> None:
    """Run an async snippet (and the ``test_*`` functions it defines) in this task."""
    namespace = _base_namespace(sample, extra)
    wanted = sample.free_names()
    missing = _unknown(sample, namespace)
    assert not missing, f"{sample.id}: undefined names {sorted(missing)} (see contributing.md)"
    with anyio.fail_after(SAMPLE_TIMEOUT):
        async with AsyncExitStack() as stack:
            if wanted & _WORLD_NAMES:
                giosg = await stack.enter_async_context(FakeGiosg(rooms=[ROOM_ID]))
                namespace.update(giosg=giosg, BASE_URL=giosg.base_url)
                if wanted & {"visitor", "chat"}:
                    visitor = await stack.enter_async_context(
                        Visitor(ORG_ID, base_url=giosg.base_url)
                    )
                    namespace["visitor"] = visitor
                    if "chat" in wanted:
                        namespace["chat"] = await visitor.start_chat(ROOM_ID)
            result = eval(sample.code(), namespace)
            if inspect.iscoroutine(result):
                await result
            for name in sample.test_function_names():
                async with AsyncExitStack() as fixtures:
                    kwargs = await _fixtures(namespace[name], fixtures, tmp_path)
                    outcome = namespace[name](**kwargs)
                    if inspect.iscoroutine(outcome):
                        await outcome


async def _fixtures(function: Any, stack: AsyncExitStack, tmp_path: Path) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    for name in inspect.signature(function).parameters:
        if name == "giosg":
            kwargs[name] = await stack.enter_async_context(FakeGiosg(rooms=[ROOM_ID]))
        elif name == "fake_clock":
            kwargs[name] = FakeClock()
        elif name == "tmp_path":
            kwargs[name] = tmp_path
        else:
            raise AssertionError(f"{function.__name__}: no fixture named {name!r} in the docs")
    return kwargs


def run_sync_sample(sample: Sample, extra: Mapping[str, str]) -> None:
    """Run a sync snippet in this thread (no event loop), with a blocking world."""
    namespace = _base_namespace(sample, extra)
    wanted = sample.free_names()
    missing = _unknown(sample, namespace)
    assert not missing, f"{sample.id}: undefined names {sorted(missing)} (see contributing.md)"
    with ExitStack() as stack:
        if wanted & _WORLD_NAMES:
            giosg = FakeGiosg(rooms=[ROOM_ID])
            giosg.start()
            stack.callback(giosg.stop)
            namespace.update(giosg=giosg, BASE_URL=giosg.base_url)
            if wanted & {"visitor", "chat"}:
                visitor = stack.enter_context(sync.Visitor(ORG_ID, base_url=giosg.base_url))
                namespace["visitor"] = visitor
                if "chat" in wanted:
                    namespace["chat"] = visitor.start_chat(ROOM_ID)
        exec(sample.code(), namespace)
        for name in sample.test_function_names():
            function = namespace[name]
            assert not inspect.signature(function).parameters, f"{name}: sync tests get no fixtures"
            function()


def run_script(sample: Sample) -> None:
    """Run a script block as ``__main__`` (it starts its own event loop)."""
    namespace: dict[str, Any] = {"__name__": "__main__", "__file__": str(ROOT / sample.fence.path)}
    missing = sample.free_names() - {"__name__", "__file__"}
    assert not missing, f"{sample.id}: a script defines every name it uses: {sorted(missing)}"
    saved_argv = sys.argv
    sys.argv = [namespace["__file__"]]
    try:
        exec(sample.code(), namespace)
    finally:
        sys.argv = saved_argv
