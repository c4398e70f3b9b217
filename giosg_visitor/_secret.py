"""A value type for secrets that cannot leak through repr, str, format or pickle."""

from __future__ import annotations

import base64
import hmac
import itertools
import json
import threading
import weakref
from collections.abc import Iterable
from typing import Final, NoReturn, final
from urllib.parse import quote, quote_plus


__all__ = ["Secret", "SecretMatcher", "live_secret_matcher", "secret_forms"]

_MASK: Final = "***"
#: Shortest form searched for (a shorter one would mask ordinary words); also the length
#: of the prefixes :class:`SecretMatcher` indexes.
_PREFIX: Final = 6
#: Up to this many forms, :class:`SecretMatcher` searches each one directly.
_LINEAR_LIMIT: Final = 24


@final
class Secret:
    """A secret string: ``visitor_secret_id``, access tokens, client secrets.

    ``repr()``, ``str()`` and ``format()`` show ``***``; only :meth:`reveal` returns
    the value. Pickling is refused so a secret cannot slip into a cache or a task queue by
    accident. Equality is constant-time.
    """

    __slots__ = ("__value", "__weakref__")

    def __init__(self, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError(f"a secret must be a str, not {type(value).__name__}")
        self.__value = value
        _registry.add(self)

    def reveal(self) -> str:
        """Return the secret value. Call it only where the value is sent or stored."""
        return self.__value

    def __repr__(self) -> str:
        return f"Secret('{_MASK}')"

    def __str__(self) -> str:
        return _MASK

    def __format__(self, spec: str) -> str:
        return _MASK

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self.__value.encode(), other.__value.encode())

    def __hash__(self) -> int:
        return hash(self.__value)

    def __bool__(self) -> bool:
        return bool(self.__value)

    def __reduce__(self) -> NoReturn:
        raise TypeError("a Secret cannot be pickled")


def secret_forms(value: str) -> set[str]:
    """The encodings under which ``value`` could show up in text: raw, URL, base64, JSON."""
    # ``surrogatepass``: a value with a lone surrogate is refused later, where it would be
    # sent; making it a Secret (which computes these forms) must not fail first.
    raw = value.encode("utf-8", "surrogatepass")
    forms = {
        value,
        quote(raw, safe=""),
        quote_plus(raw, safe=""),
        json.dumps(value)[1:-1],
        base64.b64encode(raw).decode(),
        base64.urlsafe_b64encode(raw).decode().rstrip("="),
    }
    return {form for form in forms if len(form) >= _PREFIX}


class _Registry:
    """The live secrets of this process, for the redacting log filter.

    Weakly held: a secret that is no longer referenced cannot be logged by us anyway.
    Each secret's forms are computed once, when it is created, and the filter's
    :class:`SecretMatcher` is rebuilt only when the set of live secrets has changed,
    because a DEBUG socket line must stay cheap with thousands of visitors alive.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._serial = itertools.count()
        self._entries: dict[int, tuple[weakref.ref[Secret], frozenset[str]]] = {}
        # Weak-reference callbacks may run in any thread, in the middle of anything
        # (garbage collection): they only append here; the lock holder tidies up.
        self._dead: list[int] = []
        self._matcher: SecretMatcher | None = None

    def add(self, secret: Secret) -> None:
        key = next(self._serial)
        dead = self._dead
        ref = weakref.ref(secret, lambda _ref: dead.append(key))
        forms = frozenset(secret_forms(secret.reveal()))
        with self._lock:
            self._entries[key] = (ref, forms)
            self._matcher = None

    def _purge(self) -> None:
        # Called with the lock held.
        while self._dead:
            if self._entries.pop(self._dead.pop(), None) is not None:
                self._matcher = None

    def matcher(self) -> SecretMatcher:
        with self._lock:
            self._purge()
            if self._matcher is None:
                self._matcher = SecretMatcher(
                    form for _, forms in self._entries.values() for form in forms
                )
            return self._matcher


_registry = _Registry()


def live_secret_matcher() -> SecretMatcher:
    """A matcher for every form of every secret currently alive in this process."""
    return _registry.matcher()


@final
class SecretMatcher:
    """Finds and masks a fixed set of secret forms in text.

    Few forms are searched one by one (``str.__contains__`` is fast C). Many forms are
    found through an index of their first :data:`_PREFIX` characters: one dictionary
    lookup per position of the text, so the cost grows with the text, not with the
    number of live secrets (1,000 visitors' tokens in every DEBUG line otherwise).
    """

    __slots__ = ("_forms", "_index")

    def __init__(self, forms: Iterable[str]) -> None:
        # Longest first, so a form that contains another is replaced whole.
        self._forms = sorted({form for form in forms if form}, key=len, reverse=True)
        self._index: dict[str, list[str]] | None = None
        if len(self._forms) > _LINEAR_LIMIT:
            index: dict[str, list[str]] = {}
            for form in self._forms:  # already longest first within each bucket
                index.setdefault(form[:_PREFIX], []).append(form)
            self._index = index

    def __bool__(self) -> bool:
        return bool(self._forms)

    def redact(self, text: str, mask: str = _MASK) -> str:
        """Return ``text`` with every form replaced by ``mask`` (``text`` if none occurs)."""
        if not text or not self._forms:
            return text
        if self._index is None:
            found = [form for form in self._forms if form in text]
        else:
            index = self._index
            hits: set[str] = set()
            for start in range(len(text) - _PREFIX + 1):
                bucket = index.get(text[start : start + _PREFIX])
                if bucket is not None:
                    hits.update(form for form in bucket if text.startswith(form, start))
            found = sorted(hits, key=len, reverse=True)
        for form in found:
            text = text.replace(form, mask)
        return text
