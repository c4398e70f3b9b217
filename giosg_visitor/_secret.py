"""A value type for secrets that cannot leak through repr, str, format or pickle."""

from __future__ import annotations

import base64
import hmac
import json
import threading
import weakref
from typing import Any, Final, NoReturn, final
from urllib.parse import quote, quote_plus


__all__ = ["Secret", "secret_forms"]

_MASK: Final = "***"


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
    forms = {
        value,
        quote(value, safe=""),
        quote_plus(value, safe=""),
        json.dumps(value)[1:-1],
        base64.b64encode(value.encode()).decode(),
        base64.urlsafe_b64encode(value.encode()).decode().rstrip("="),
    }
    return {form for form in forms if len(form) >= 6}


class _Registry:
    """The live secrets of this process, for the redacting log filter.

    Weakly held: a secret that is no longer referenced cannot be logged by us anyway.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._secrets: weakref.WeakSet[Secret] = weakref.WeakSet()

    def add(self, secret: Secret) -> None:
        with self._lock:
            self._secrets.add(secret)

    def values(self) -> list[str]:
        with self._lock:
            return [s.reveal() for s in self._secrets]


_registry = _Registry()


def live_secret_values() -> list[str]:
    """Every secret value currently alive in this process (for redaction only)."""
    return _registry.values()


def as_secret(value: Any) -> Secret:
    """Wrap a ``str`` (or pass a :class:`Secret` through)."""
    if isinstance(value, Secret):
        return value
    return Secret(value)
