"""Keep secrets out of log output.

:class:`RedactingFilter` is a :class:`logging.Filter` that formats each record, replaces
every form (raw, URL-encoded, JSON-escaped, base64) of every live
:class:`~giosg_visitor._secret.Secret` with ``***``, and stores the result back on the
record. Attach it to the loggers that see credentials (the SDK attaches it to
``giosg_visitor.websockets``, the logger it hands to websockets) or to a handler::

    handler.addFilter(RedactingFilter())

It never drops a record and never raises.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any, Final, final

from ._secret import SecretMatcher, live_secret_matcher, secret_forms


__all__ = ["MASK", "RedactingFilter", "redact", "redact_json"]

#: What a secret is replaced with.
MASK: Final = "***"
_MAX_DEPTH: Final = 100


def redact(text: str, secrets: Iterable[str] | None = None) -> str:
    """Replace every form of every secret in ``text`` with ``***``.

    Args:
        text: The text to clean.
        secrets: The secret values to look for; every live secret of the process by
            default.

    Returns:
        The cleaned text (``text`` itself when nothing matched).
    """
    if not text:
        return text
    if secrets is None:
        return live_secret_matcher().redact(text, MASK)
    forms = (form for value in secrets if value for form in secret_forms(value))
    return SecretMatcher(forms).redact(text, MASK)


def redact_json(value: Any) -> Any:
    """A copy of a decoded JSON value with every live secret masked in its strings.

    Keys and values of objects, items of arrays and plain strings are cleaned; other
    values are returned as they are. Used on error bodies, which servers fill with the
    rejected input (DRF: ``{"visitor_secret_id": ["Invalid pk \"...\""]}``).
    """
    matcher = live_secret_matcher()
    if not matcher:
        return value

    def clean(item: Any, depth: int) -> Any:
        if isinstance(item, str):
            return matcher.redact(item, MASK)
        if depth > _MAX_DEPTH:
            # Deeper than any real error body: drop it rather than recurse without end.
            return None
        if isinstance(item, Mapping):
            return {clean(k, depth + 1): clean(v, depth + 1) for k, v in item.items()}
        if isinstance(item, list | tuple):
            return [clean(v, depth + 1) for v in item]
        return item

    return clean(value, 0)


@final
class RedactingFilter(logging.Filter):
    """A logging filter that masks live secrets in the formatted message and traceback.

    Args:
        name: Passed to :class:`logging.Filter` (records of other loggers are still
            passed through, only cleaned).
    """

    def __init__(self, name: str = "") -> None:
        super().__init__(name)

    def filter(self, record: logging.LogRecord) -> bool:
        """Clean ``record`` in place and let it through."""
        matcher = live_secret_matcher()
        if not matcher:
            return True
        try:
            message = record.getMessage()
        except Exception:
            # Bad format arguments: show neither the template nor the arguments.
            message = "<log message could not be formatted>"
        cleaned = matcher.redact(message, MASK)
        if cleaned != message or record.args:
            record.msg = cleaned
            record.args = ()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = matcher.redact(record.exc_text, MASK)
        if record.stack_info:
            record.stack_info = matcher.redact(record.stack_info, MASK)
        return True
