"""The OAuth2 token endpoint on the wire (RFC 6749 §2.3.1, §4.4, §5, §6): pure functions.

No I/O, no clock reads: requests are built as :class:`httpx.Request` values and responses
are classified from their status, body and ``Retry-After`` header. ``credentials.py``
sends them and decides what to do next.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any, Final, Literal
from urllib.parse import quote, urlencode

import attrs
import httpx

from ._renewal import parse_retry_after
from ._secret import Secret
from .errors import (
    APIError,
    AuthenticationError,
    GiosgError,
    InvalidClientError,
    InvalidGrantError,
    InvalidScopeError,
    NotFoundError,
    OAuthError,
    PermissionDeniedError,
    ProtocolError,
    RateLimitError,
    ServerError,
    TransportError,
    UnauthorizedClientError,
    UnsupportedGrantTypeError,
    UntrustedEndpointError,
)
from .models import decode_json_object


__all__ = [
    "GRANT_CLIENT_CREDENTIALS",
    "GRANT_REFRESH_TOKEN",
    "AuthMethod",
    "Grant",
    "TokenResponse",
    "basic_authorization",
    "build_token_request",
    "form_urlencode",
    "is_transient",
    "parse_token_response",
    "safe_url",
]

AuthMethod = Literal["basic", "body", "query"]
Grant = Literal["client_credentials", "refresh_token"]

GRANT_CLIENT_CREDENTIALS: Final = "client_credentials"
GRANT_REFRESH_TOKEN: Final = "refresh_token"

#: RFC 6749 §5.2 error codes and the error classes they map to.
_ERROR_CLASSES: Final[Mapping[str, type[OAuthError]]] = {
    "invalid_client": InvalidClientError,
    "invalid_grant": InvalidGrantError,
    "invalid_scope": InvalidScopeError,
    "unauthorized_client": UnauthorizedClientError,
    "unsupported_grant_type": UnsupportedGrantTypeError,
}

#: Error codes that say "try again later" (RFC 6749 §4.1.2.1, used by token endpoints too).
_TRANSIENT_CODES: Final = frozenset({"temporarily_unavailable", "server_error"})

_FORM: Final = "application/x-www-form-urlencoded"


def form_urlencode(value: str) -> str:
    """Form-urlencode one client id or secret for the Basic header (RFC 6749 §2.3.1).

    Everything but ``A-Z a-z 0-9 - . _ ~`` is percent-encoded as UTF-8. This is
    ``quote_plus`` except that a space becomes ``%20`` rather than ``+``: a form decoder
    (``unquote_plus``, as the RFC asks) reads both as a space, while servers that only
    percent-decode the pair (authlib's ``extract_basic_authorization`` among them) would
    read ``+`` as a literal plus. ``%20`` is therefore the one spelling every server
    decodes to the same value.
    """
    return quote(value, safe="")


def basic_authorization(client_id: str, client_secret: str) -> str:
    """The ``Authorization`` header value for ``client_secret_basic`` (RFC 6749 §2.3.1).

    ``base64(form_urlencode(client_id) + ":" + form_urlencode(client_secret))``: encoding
    each part first keeps a ``:`` inside the id from splitting the pair in the wrong place.
    """
    pair = f"{form_urlencode(client_id)}:{form_urlencode(client_secret)}"
    return "Basic " + base64.b64encode(pair.encode("ascii")).decode("ascii")


def build_token_request(
    token_url: httpx.URL,
    *,
    grant: Grant,
    client_id: str,
    client_secret: Secret,
    auth_method: AuthMethod,
    scope: str | None = None,
    refresh_token: Secret | None = None,
    grant_type_in_query: bool = False,
    extra_params: Mapping[str, str] | None = None,
) -> httpx.Request:
    """Build one token request.

    Placement of the client credentials follows ``auth_method``: the Basic header, form
    fields in the body, or query parameters (the caller has checked the opt-in). With
    ``grant_type_in_query`` the non-secret parameters (``grant_type``, ``scope`` and
    ``extra_params``) go to the query string instead of the body, which is then empty for
    the client credentials grant with Basic; a refresh token always stays in the body so
    that it never appears in a URL.

    Args:
        token_url: The token endpoint.
        grant: ``"client_credentials"`` or ``"refresh_token"``.
        client_id: The client id.
        client_secret: The client secret.
        auth_method: Where the client credentials go.
        scope: Space-separated scopes; sent with the client credentials grant only (a
            refresh keeps the scope originally granted, RFC 6749 §6).
        refresh_token: Required for the refresh grant.
        grant_type_in_query: Put ``grant_type`` (and the other non-secret parameters) in
            the query string.
        extra_params: More non-secret parameters for the client credentials grant (such
            as ``audience``).

    Returns:
        The request, ready to send (without following redirects).
    """
    public: dict[str, str] = {"grant_type": grant}
    body: dict[str, str] = {}
    if grant == GRANT_REFRESH_TOKEN:
        if refresh_token is None:
            raise ValueError("the refresh grant needs a refresh token")
        body["refresh_token"] = refresh_token.reveal()
    else:
        if scope:
            public["scope"] = scope
        public.update(extra_params or {})
    query: dict[str, str] = {}
    headers = {"Accept": "application/json", "Content-Type": _FORM}
    if auth_method == "basic":
        headers["Authorization"] = basic_authorization(client_id, client_secret.reveal())
    elif auth_method == "body":
        body["client_id"] = client_id
        body["client_secret"] = client_secret.reveal()
    else:
        query["client_id"] = client_id
        query["client_secret"] = client_secret.reveal()
    if grant_type_in_query:
        query = {**public, **query}
    else:
        body = {**public, **body}
    url = token_url.copy_merge_params(query) if query else token_url
    return httpx.Request("POST", url, headers=headers, content=urlencode(body).encode("ascii"))


@attrs.frozen(kw_only=True)
class TokenResponse:
    """A successful token response (RFC 6749 §5.1), checked and typed.

    Attributes:
        access_token: The access token.
        token_type: The token type as sent (``Bearer`` in any letter case).
        expires_in: The raw ``expires_in`` (normalised later by the renewal policy).
        scope: The granted scope, if the server said.
        refresh_token: The refresh token, if one was issued.
    """

    access_token: Secret = attrs.field(repr=False)
    token_type: str
    expires_in: Any = None
    scope: str | None = None
    refresh_token: Secret | None = attrs.field(default=None, repr=False)


def parse_token_response(
    status_code: int,
    content: bytes,
    *,
    retry_after: str | None = None,
    now: float,
    method: str = "POST",
    url: str = "",
) -> TokenResponse:
    """Classify a token endpoint response: the token, or the typed error it means.

    Args:
        status_code: The HTTP status.
        content: The raw body.
        retry_after: The ``Retry-After`` header, if any.
        now: Current UNIX time (for an HTTP-date ``Retry-After``).
        method: The request method, for the error.
        url: The request URL *without its query* (which may hold credentials).

    Returns:
        The parsed token on a 2xx answer.

    Raises:
        OAuthError: An RFC 6749 §5.2 error body (a subclass for the registered codes).
        RateLimitError: 429, with ``retry_after`` when the server gave one.
        ServerError: 5xx.
        UntrustedEndpointError: 3xx (redirects are never followed with credentials).
        APIError: Any other non-2xx status without an OAuth error body.
        ProtocolError: A 2xx body that is not a valid Bearer token response; the message
            names the field, never its value.
    """
    if 200 <= status_code < 300:
        return _parse_success(content)
    where = f"token endpoint {method} {url}".rstrip()
    if 300 <= status_code < 400:
        raise UntrustedEndpointError(
            f"{where} answered with a redirect ({status_code}); redirects are never "
            "followed with client credentials",
            url=url or None,
        )
    body = _decode_error_body(content)
    kwargs: dict[str, Any] = {"status_code": status_code, "method": method, "url": url}
    if status_code == 429:
        wait = parse_retry_after(retry_after, now=now)
        raise RateLimitError(f"{where} -> 429", body=body, retry_after=wait, **kwargs)
    if status_code >= 500:
        wait = parse_retry_after(retry_after, now=now)
        raise ServerError(f"{where} -> {status_code}", body=body, retry_after=wait, **kwargs)
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, str) and error:
        description = body.get("error_description") if isinstance(body, dict) else None
        description = description[:300] if isinstance(description, str) else None
        message = f"{where} -> {status_code}: {error}"
        if description:
            message += f" ({description})"
        cls = _ERROR_CLASSES.get(error, OAuthError)
        raise cls(message, body=body, error=error, error_description=description, **kwargs)
    message = f"{where} -> {status_code}"
    if status_code == 401:
        raise AuthenticationError(message, body=body, **kwargs)
    if status_code == 403:
        raise PermissionDeniedError(message, body=body, **kwargs)
    if status_code == 404:
        raise NotFoundError(message, body=body, **kwargs)
    raise APIError(message, body=body, **kwargs)


def is_transient(error: BaseException) -> bool:
    """Whether a failed token request may succeed when simply tried again later.

    Transport failures, 408, 429, 5xx and the ``temporarily_unavailable`` and
    ``server_error`` codes are; every other OAuth error (``invalid_client``,
    ``invalid_grant``...) and every malformed answer is not.
    """
    if isinstance(error, TransportError):
        return True
    if isinstance(error, OAuthError):
        return error.error in _TRANSIENT_CODES
    if isinstance(error, RateLimitError | ServerError):
        return True
    return isinstance(error, APIError) and error.status_code == 408


def safe_url(url: httpx.URL) -> str:
    """``url`` without userinfo, query and fragment, for messages and errors."""
    return str(url.copy_with(query=None, fragment=None, username=None, password=None))


def _parse_success(content: bytes) -> TokenResponse:
    where = "token response"
    data = decode_json_object(content, where=where)
    access_token = data.get("access_token")
    if not isinstance(access_token, str) or not access_token:
        raise ProtocolError(f"{where}: field 'access_token' is {_state(data, 'access_token')}")
    token_type = data.get("token_type")
    if not isinstance(token_type, str):
        raise ProtocolError(f"{where}: field 'token_type' is {_state(data, 'token_type')}")
    # RFC 6749 §5.1: the type is case insensitive. Only Bearer tokens can be attached.
    if token_type.lower() != "bearer":
        raise ProtocolError(f"{where}: field 'token_type' is not 'Bearer'")
    refresh_token = data.get("refresh_token")
    if refresh_token is not None and not isinstance(refresh_token, str):
        raise ProtocolError(f"{where}: field 'refresh_token' is {_state(data, 'refresh_token')}")
    scope = data.get("scope")
    if scope is not None and not isinstance(scope, str):
        raise ProtocolError(f"{where}: field 'scope' is {_state(data, 'scope')}")
    return TokenResponse(
        access_token=Secret(access_token),
        token_type=token_type,
        expires_in=data.get("expires_in"),
        scope=scope or None,
        refresh_token=Secret(refresh_token) if refresh_token else None,
    )


def _state(data: Mapping[str, Any], name: str) -> str:
    """How a field is wrong, without its value (which may be a secret)."""
    if name not in data or data[name] is None:
        return "missing"
    value = data[name]
    if isinstance(value, str):
        return "empty" if not value else "not a valid value"
    return f"a {type(value).__name__}, not a string"


def _decode_error_body(content: bytes) -> Any:
    """The JSON body of an error answer, or its text, or ``None``; never raises."""
    if not content:
        return None
    try:
        return decode_json_object(content, where="token error")
    except GiosgError:
        return content.decode("utf-8", errors="replace")[:2000]
