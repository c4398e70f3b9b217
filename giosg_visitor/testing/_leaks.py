"""``secret_forms``: what to search a log or an error for, to prove a secret did not leak."""

from __future__ import annotations

from .._secret import secret_forms as _secret_forms


__all__ = ["secret_forms"]


def secret_forms(value: str) -> set[str]:
    """The forms under which the secret ``value`` could show up in text.

    Search your logs, error messages and reprs for each of them to check that a secret
    (a ``visitor_secret_id``, a token, a client secret) did not leak: the raw value, its
    URL-encoded forms (``quote`` and ``quote_plus``), its JSON-escaped form, and its
    standard and URL-safe base64. Forms shorter than 6 characters are left out, because
    they would match ordinary text. The SDK's redacting log filter masks exactly these.

    Example:
        >>> sorted(secret_forms("secret-value"))
        ['c2VjcmV0LXZhbHVl', 'secret-value']
    """
    return _secret_forms(value)
