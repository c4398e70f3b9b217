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
from collections.abc import Iterable
from typing import Final, final

from ._secret import live_secret_values, secret_forms


__all__ = ["MASK", "RedactingFilter", "redact"]

#: What a secret is replaced with.
MASK: Final = "***"


def redact(text: str, secrets: Iterable[str] | None = None) -> str:
    """Replace every form of every secret in ``text`` with ``***``.

    Args:
        text: The text to clean.
        secrets: The secret values to look for; every live secret of the process by
            default.

    Returns:
        The cleaned text (``text`` itself when nothing matched).
    """
    values = live_secret_values() if secrets is None else list(secrets)
    if not values or not text:
        return text
    forms: set[str] = set()
    for value in values:
        if value:
            forms |= secret_forms(value)
    # Longest first, so a form that contains another is replaced whole.
    for form in sorted(forms, key=len, reverse=True):
        if form in text:
            text = text.replace(form, MASK)
    return text


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
        values = live_secret_values()
        if not values:
            return True
        try:
            message = record.getMessage()
        except Exception:
            # Bad format arguments: show neither the template nor the arguments.
            message = "<log message could not be formatted>"
        cleaned = redact(message, values)
        if cleaned != message or record.args:
            record.msg = cleaned
            record.args = ()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text, values)
        if record.stack_info:
            record.stack_info = redact(record.stack_info, values)
        return True
