"""The records a store keeps, and the auth answer they are made from.

A :class:`~giosg_visitor.stores.Store` keeps one :class:`VisitorRecord` per key: the
visitor's secret, an :class:`OrganizationSession` per organization (made from the
:class:`AuthSession` that auth returned) and named OAuth2 :class:`StoredToken` objects.
Users meet these types only when they write a store of their own or inspect one.

A stored record is input like any other: malformed JSON, fields or numbers raise
:class:`~giosg_visitor.errors.ProtocolError` naming the field, never its value.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final, final

import attrs

from .._secret import Secret
from ..errors import ProtocolError
from ..models import _EMPTY, _freeze, _require_str, decode_json_object, parse_datetime


__all__ = ["AuthSession", "OrganizationSession", "StoredToken", "VisitorRecord"]


def _stored_times(data: Mapping[str, Any], *, where: str) -> tuple[float, float]:
    """A stored record's ``expires_at`` and ``lifetime`` as finite floats.

    A store file is input like any other: ``10**400``, ``NaN`` or ``true`` there is a
    malformed record (:class:`ProtocolError`), never an ``OverflowError`` from ``float()``.
    """
    times: list[float] = []
    for name in ("expires_at", "lifetime"):
        value = data.get(name)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ProtocolError(f"{where}: {name} must be a number")
        try:
            number = float(value)
        except OverflowError:
            number = math.inf
        if not math.isfinite(number):
            raise ProtocolError(f"{where}: {name} must be a finite number")
        times.append(number)
    return times[0], times[1]


_AUTH_FIELDS: Final = frozenset(
    {
        "visitor_id",
        "visitor_secret_id",
        "organization_id",
        "socket_url",
        "access_token",
        "expires_at",
        "expires_in",
    }
)


@final
@attrs.frozen(kw_only=True)
class AuthSession:
    """The answer of ``POST /api/v5/public/orgs/<org>/auth``.

    Attributes:
        visitor_id: The organization-specific public visitor id (safe to share).
        visitor_secret_id: The visitor's secret: the only way back to this visitor.
        organization_id: The organization the token is for.
        socket_url: Where the real-time socket lives (an ``https`` URL).
        access_token: The bearer token for the public API and socket subscriptions.
        expires_at: When the token expires, as the server said (aware UTC), if it said.
        expires_in: The raw ``expires_in`` the server sent (may be missing or odd).
        extra: Every other key of the response, kept verbatim (``minimal_bar_version``...).
    """

    visitor_id: str
    visitor_secret_id: Secret = attrs.field(repr=False)
    organization_id: str
    socket_url: str
    access_token: Secret = attrs.field(repr=False)
    expires_at: datetime | None = None
    expires_in: Any = None
    extra: Mapping[str, Any] = attrs.field(default=_EMPTY, repr=False)

    @classmethod
    def from_api(cls, data: Any) -> AuthSession:
        """Parse a decoded auth response.

        Raises:
            ProtocolError: A required field is missing or has the wrong type.
        """
        where = "auth response"
        if not isinstance(data, Mapping):
            raise ProtocolError(f"{where}: expected a JSON object, got {type(data).__name__}")
        expires_in = data.get("expires_in")
        if expires_in is not None and not isinstance(expires_in, int | float | str):
            expires_in = None
        return cls(
            visitor_id=_require_str(data, "visitor_id", where=where),
            visitor_secret_id=Secret(_require_str(data, "visitor_secret_id", where=where)),
            organization_id=_require_str(data, "organization_id", where=where),
            socket_url=_require_str(data, "socket_url", where=where),
            access_token=Secret(_require_str(data, "access_token", where=where)),
            expires_at=parse_datetime(data.get("expires_at"), field=f"{where}: expires_at"),
            expires_in=expires_in,
            extra=_freeze({k: v for k, v in data.items() if k not in _AUTH_FIELDS}),
        )


@final
@attrs.frozen(kw_only=True)
class OrganizationSession:
    """What is persisted of the latest auth response for one organization.

    Attributes:
        organization_id: The organization.
        visitor_id: The visitor's id in that organization.
        socket_url: The socket URL from auth.
        access_token: The latest token.
        expires_at: Wall-clock UNIX time when the token expires (the earlier of the
            server's ``expires_at`` and our own issue time plus lifetime).
        lifetime: The normalised lifetime, seconds.
        extra: Unknown keys of the auth response.
    """

    organization_id: str
    visitor_id: str
    socket_url: str
    access_token: Secret = attrs.field(repr=False)
    expires_at: float
    lifetime: float
    extra: Mapping[str, Any] = attrs.field(default=_EMPTY, repr=False)

    def to_json(self) -> dict[str, Any]:
        """Serialise for a store (the token is revealed: stores hold secrets)."""
        return {
            "organization_id": self.organization_id,
            "visitor_id": self.visitor_id,
            "socket_url": self.socket_url,
            "access_token": self.access_token.reveal(),
            "expires_at": self.expires_at,
            "lifetime": self.lifetime,
            "extra": dict(self.extra),
        }

    @classmethod
    def from_json(cls, data: Any) -> OrganizationSession:
        """Inverse of :meth:`to_json`.

        Raises:
            ProtocolError: The stored data is malformed.
        """
        where = "stored session"
        if not isinstance(data, Mapping):
            raise ProtocolError(f"{where}: expected an object")
        expires_at, lifetime = _stored_times(data, where=where)
        extra = data.get("extra") or {}
        return cls(
            organization_id=_require_str(data, "organization_id", where=where),
            visitor_id=_require_str(data, "visitor_id", where=where),
            socket_url=_require_str(data, "socket_url", where=where),
            access_token=Secret(_require_str(data, "access_token", where=where)),
            expires_at=expires_at,
            lifetime=lifetime,
            extra=_freeze(extra if isinstance(extra, Mapping) else {}),
        )


@final
@attrs.frozen(kw_only=True)
class StoredToken:
    """A persisted OAuth2 token (used by :class:`~giosg_visitor.ClientCredentials`).

    Attributes:
        access_token: The access token.
        refresh_token: The refresh token, if the server issued one.
        expires_at: Wall-clock UNIX time when the access token expires.
        lifetime: The normalised lifetime, seconds.
        token_type: The token type as issued (``"Bearer"``).
        scope: The granted scope, if the server said.
    """

    access_token: Secret = attrs.field(repr=False)
    refresh_token: Secret | None = attrs.field(default=None, repr=False)
    expires_at: float
    lifetime: float
    token_type: str = "Bearer"
    scope: str | None = None

    def to_json(self) -> dict[str, Any]:
        """Serialise for a store (reveals secrets: only stores call this)."""
        return {
            "access_token": self.access_token.reveal(),
            "refresh_token": self.refresh_token.reveal() if self.refresh_token else None,
            "expires_at": self.expires_at,
            "lifetime": self.lifetime,
            "token_type": self.token_type,
            "scope": self.scope,
        }

    @classmethod
    def from_json(cls, data: Any) -> StoredToken:
        """Inverse of :meth:`to_json`.

        Raises:
            ProtocolError: The stored data is malformed.
        """
        where = "stored token"
        if not isinstance(data, Mapping):
            raise ProtocolError(f"{where}: expected an object")
        expires_at, lifetime = _stored_times(data, where=where)
        refresh = data.get("refresh_token")
        scope = data.get("scope")
        token_type = data.get("token_type")
        return cls(
            access_token=Secret(_require_str(data, "access_token", where=where)),
            refresh_token=Secret(refresh) if isinstance(refresh, str) and refresh else None,
            expires_at=expires_at,
            lifetime=lifetime,
            token_type=token_type if isinstance(token_type, str) else "Bearer",
            scope=scope if isinstance(scope, str) else None,
        )


@final
@attrs.frozen(kw_only=True)
class VisitorRecord:
    """Everything a store keeps for one ``key``.

    For a visitor: the secret (its identity across organizations) and the latest auth
    result per organization. For OAuth2 credentials: named tokens (``visitor_secret_id``
    is then ``None``).

    Attributes:
        visitor_secret_id: The visitor's secret, or ``None`` for a token-only record.
        sessions: Latest session per organization id.
        tokens: Persisted OAuth2 tokens by name.
        version: Incremented on every save; lets stores and processes tell records apart.
    """

    visitor_secret_id: Secret | None = attrs.field(repr=False)
    sessions: Mapping[str, OrganizationSession] = attrs.field(factory=dict)
    tokens: Mapping[str, StoredToken] = attrs.field(factory=dict)
    version: int = 0

    def with_session(self, session: OrganizationSession) -> VisitorRecord:
        """A copy with ``session`` stored for its organization and the version bumped."""
        sessions = dict(self.sessions)
        sessions[session.organization_id] = session
        return attrs.evolve(self, sessions=_freeze(sessions), version=self.version + 1)

    def with_token(self, name: str, token: StoredToken) -> VisitorRecord:
        """A copy with ``token`` stored under ``name`` and the version bumped."""
        tokens = dict(self.tokens)
        tokens[name] = token
        return attrs.evolve(self, tokens=_freeze(tokens), version=self.version + 1)

    def to_json(self) -> dict[str, Any]:
        """Serialise for a store (reveals secrets: only stores call this)."""
        secret = self.visitor_secret_id
        return {
            "visitor_secret_id": secret.reveal() if secret is not None else None,
            "sessions": {org: s.to_json() for org, s in self.sessions.items()},
            "tokens": {name: t.to_json() for name, t in self.tokens.items()},
            "version": self.version,
        }

    @classmethod
    def from_json(cls, data: Any) -> VisitorRecord:
        """Inverse of :meth:`to_json`.

        Raises:
            ProtocolError: The stored data is malformed.
        """
        if not isinstance(data, Mapping):
            raise ProtocolError("stored record: expected an object")
        sessions_raw = data.get("sessions") or {}
        if not isinstance(sessions_raw, Mapping):
            raise ProtocolError("stored record: sessions must be an object")
        tokens_raw = data.get("tokens") or {}
        if not isinstance(tokens_raw, Mapping):
            raise ProtocolError("stored record: tokens must be an object")
        version = data.get("version", 0)
        if not isinstance(version, int) or isinstance(version, bool):
            raise ProtocolError("stored record: version must be an integer")
        secret = data.get("visitor_secret_id")
        if secret is not None:
            secret = Secret(_require_str(data, "visitor_secret_id", where="stored record"))
        return cls(
            visitor_secret_id=secret,
            sessions=_freeze(
                {org: OrganizationSession.from_json(s) for org, s in sessions_raw.items()}
            ),
            tokens=_freeze({name: StoredToken.from_json(t) for name, t in tokens_raw.items()}),
            version=version,
        )

    def dumps(self) -> str:
        """Compact JSON text of :meth:`to_json`."""
        return json.dumps(self.to_json(), separators=(",", ":"), sort_keys=True)

    @classmethod
    def loads(cls, text: str | bytes) -> VisitorRecord:
        """Parse :meth:`dumps` output.

        Raises:
            ProtocolError: The text is not a valid record.
        """
        return cls.from_json(decode_json_object(text, where="stored record"))
