"""The secret sentinel. No secret in any log line, warning, exception or repr.

For every test it runs around (autouse in ``tests/reliability``; for the whole suite run
``python -m pytest -p tests.reliability.canary tests``), :func:`secret_sentinel`:

* sets the ``giosg_visitor``, ``httpx``, ``httpcore``, ``websockets``, ``anyio`` and root
  loggers to DEBUG and records every log record (message, arguments, traceback, stack);
* records every warning issued through :func:`warnings.warn`;
* records every :class:`~giosg_visitor.errors.GiosgError` created (message, ``repr``,
  attributes, traceback and cause chain, rendered at the end of the test);
* learns the secrets of the test: every visitor secret and access token of every
  ``FakeGiosg`` created during it, every token sent in a ``sub`` to any ``MessageRouter``,
  every :class:`~giosg_visitor.Secret` of at least 20 characters created during it (unless
  the test is marked ``canary_fakes_only``), and the explicit canaries of
  :meth:`Sentinel.canary`;
* at the end, searches everything it recorded, plus the texts handed to
  :meth:`Sentinel.scan` (reprs of SDK objects), for each secret in raw, URL-encoded,
  JSON-escaped and base64 forms (``giosg_visitor.testing.secret_forms``) and for its first
  and last 16 characters (truncated log lines), and fails the test on a hit.

The counts go to the figures (``secrets.checked``, ``records.*``, ``secrets.leaked``).
Tests marked ``xfail`` (known bugs) are checked and reported but not failed here.
"""

from __future__ import annotations

import logging
import secrets as _secrets
import traceback
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Final

import pytest

import giosg_visitor._secret as secret_module
from giosg_visitor.errors import GiosgError
from giosg_visitor.testing import FakeGiosg, MessageRouter, secret_forms

from .figures import FIGURES


__all__ = ["LOGGERS", "Sentinel", "find_leaks", "secret_sentinel"]

#: The loggers set to DEBUG for every test.
LOGGERS: Final = ("", "giosg_visitor", "httpx", "httpcore", "websockets", "anyio", "hpack")

#: Loggers of third-party servers that tests run in-process in the server's role (authlib's
#: OAuth2 token endpoint in ``test_credentials_authlib.py`` and the credential docs
#: samples): what a server logs about the secrets it receives is not the SDK's output.
#: FakeGiosg's and the message router's own loggers stay watched.
SERVER_SIDE_LOGGERS: Final = ("authlib.",)

#: Secrets created during a test are watched from this length on (shorter values are test
#: data, not credentials, and would match by chance).
MIN_WATCHED: Final = 20
_PREFIX: Final = 6
_FRAGMENT: Final = 16
_MAX_ERRORS: Final = 5_000


def _forms(value: str) -> set[str]:
    forms = secret_forms(value)
    if len(value) >= 2 * _FRAGMENT:
        forms |= {value[:_FRAGMENT], value[-_FRAGMENT:]}
    return {form for form in forms if len(form) >= _PREFIX}


def find_leaks(texts: Iterable[tuple[str, str]], values: Iterable[str]) -> list[tuple[str, str]]:
    """Every ``(where, secret)`` such that a form of ``secret`` occurs in a text.

    Linear in the total text length: the forms are indexed by their first characters.
    """
    index: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for value in values:
        for form in _forms(value):
            index[form[:_PREFIX]].append((form, value))
    if not index:
        return []
    hits: list[tuple[str, str]] = []
    get = index.get
    for where, text in texts:
        found: set[str] = set()
        for i in range(len(text) - _PREFIX + 1):
            candidates = get(text[i : i + _PREFIX])
            if candidates:
                for form, value in candidates:
                    if value not in found and text.startswith(form, i):
                        found.add(value)
        hits.extend((where, value) for value in found)
    return hits


def _render_record(record: logging.LogRecord) -> str:
    try:
        parts = [record.getMessage()]
    except Exception:
        parts = [f"{record.msg!r} % {record.args!r}"]
    if record.exc_info and record.exc_info[1] is not None:
        parts.append("".join(traceback.format_exception(record.exc_info[1])))
    if record.exc_text:
        parts.append(record.exc_text)
    if record.stack_info:
        parts.append(record.stack_info)
    return "\n".join(parts)


def render_exception(exc: BaseException) -> str:
    """``str``, ``repr``, attributes, notes and the traceback with its cause chain."""
    parts = [str(exc), repr(exc)]
    try:
        parts.append(repr(vars(exc)))
    except TypeError:
        pass
    parts.append("".join(traceback.format_exception(exc)))
    return "\n".join(parts)


class _Collector(logging.Handler):
    def __init__(self, sink: list[tuple[str, str]]) -> None:
        super().__init__(logging.DEBUG)
        self._sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith(SERVER_SIDE_LOGGERS):
            return
        self._sink.append((f"log {record.name}", _render_record(record)))


class Sentinel:
    """What one test logged, warned and raised, and the secrets it must not show."""

    def __init__(self, *, watch_all_secrets: bool) -> None:
        self.watch_all_secrets = watch_all_secrets
        self.texts: list[tuple[str, str]] = []
        self.errors: list[GiosgError] = []
        self.fakes: list[FakeGiosg] = []
        self.routers: list[MessageRouter] = []
        self.values: set[str] = set()

    def canary(self, label: str = "secret") -> str:
        """A fresh high-entropy secret value that must never show up anywhere."""
        value = f"CANARY-{label}-{_secrets.token_urlsafe(24)}"
        self.values.add(value)
        return value

    def watch(self, value: str) -> None:
        """Treat ``value`` as a secret for the rest of the test."""
        if value:
            self.values.add(value)

    def scan(self, *objects: object, where: str = "object") -> None:
        """Add ``repr``/``str`` (and, for exceptions, traceback and attributes) to the check."""
        for obj in objects:
            if isinstance(obj, BaseException):
                self.texts.append((f"{where} {type(obj).__name__}", render_exception(obj)))
            else:
                self.texts.append((f"{where} {type(obj).__name__}", f"{obj!r}\n{obj!s}"))

    def secret_values(self) -> set[str]:
        """Every secret the test knows of."""
        values = set(self.values)
        for fake in self.fakes:
            values |= set(fake.state.visitors)
            values |= set(fake.state.tokens)
        for router in self.routers:
            values |= {frame.token for frame in list(router.frames_received) if frame.token}
        return {value for value in values if len(value) >= _PREFIX}

    def leaks(self) -> list[tuple[str, str]]:
        """``(where, secret)`` for every secret found in what was recorded."""
        for error in self.errors:
            self.texts.append((f"exception {type(error).__name__}", render_exception(error)))
        self.errors.clear()
        return find_leaks(self.texts, self.secret_values())


def _wrap_init(cls: type[Any], record: Callable[[Any], None]) -> Callable[[], None]:
    """Make ``cls.__init__`` call ``record(self)`` after the original; returns an undo."""
    had_own = "__init__" in cls.__dict__
    original = cls.__init__

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        if had_own:
            original(self, *args, **kwargs)
        else:
            super(cls, self).__init__(*args, **kwargs)
        record(self)

    cls.__init__ = init

    def undo() -> None:
        if had_own:
            cls.__init__ = original
        else:
            del cls.__init__

    return undo


@pytest.fixture(autouse=True)
def secret_sentinel(request: pytest.FixtureRequest) -> Iterator[Sentinel]:
    """Around every test: record logs, warnings and errors; fail on any secret in them."""
    watch_all = request.node.get_closest_marker("canary_fakes_only") is None
    sentinel = Sentinel(watch_all_secrets=watch_all)
    handler = _Collector(sentinel.texts)
    levels = {name: logging.getLogger(name).level for name in LOGGERS}
    for name in LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG)
    root = logging.getLogger()
    root.addHandler(handler)

    undo: list[Callable[[], None]] = []
    undo.append(_wrap_init(FakeGiosg, sentinel.fakes.append))
    undo.append(_wrap_init(MessageRouter, sentinel.routers.append))

    def keep_error(error: GiosgError) -> None:
        if len(sentinel.errors) < _MAX_ERRORS:
            sentinel.errors.append(error)

    undo.append(_wrap_init(GiosgError, keep_error))

    registry = secret_module._registry
    original_add = registry.add

    def add(secret: secret_module.Secret) -> None:
        original_add(secret)
        value = secret.reveal()
        if sentinel.watch_all_secrets and len(value) >= MIN_WATCHED and len(set(value)) >= 10:
            sentinel.values.add(value)

    registry.add = add  # type: ignore[method-assign]
    undo.append(lambda: delattr(registry, "add"))

    original_warn = warnings.warn
    original_warn_explicit = warnings.warn_explicit

    def warn(
        message: Any, category: Any = None, stacklevel: int = 1, source: Any = None, **kw: Any
    ) -> None:
        sentinel.texts.append(("warning", f"{category} {message}"))
        original_warn(message, category, stacklevel + 1, source, **kw)

    def warn_explicit(message: Any, category: Any, *args: Any, **kwargs: Any) -> None:
        sentinel.texts.append(("warning", f"{category} {message}"))
        original_warn_explicit(message, category, *args, **kwargs)

    warnings.warn = warn
    warnings.warn_explicit = warn_explicit

    def restore_warnings() -> None:
        warnings.warn = original_warn
        warnings.warn_explicit = original_warn_explicit

    undo.append(restore_warnings)
    try:
        yield sentinel
    finally:
        for step in reversed(undo):
            step()
        root.removeHandler(handler)
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
    leaks = sentinel.leaks()
    values = sentinel.secret_values()
    FIGURES.add("secrets.checked", len(values))
    FIGURES.add("records.texts", len(sentinel.texts))
    known_bug = request.node.get_closest_marker("xfail") is not None
    if leaks and not known_bug:
        FIGURES.add("secrets.leaked", len(leaks))
        places = sorted({where for where, _ in leaks})
        pytest.fail(f"{len(leaks)} secret(s) leaked into: {', '.join(places)[:2000]}")
