"""Every protocol fact the SDK relies on, in one place, each marked documented or inferred.

Giosg documents its visitor HTTP API well and its socket protocol hardly at all: the
message router's frame format survives only in an early docs draft, and the transport
(SockJS or not, which path) is never named. Whatever the SDK assumes about the wire
lives here, so that when the real service turns out to differ, one file changes.

Each fact is a constant registered with :func:`fact`, which records whether it is
``"documented"`` (Giosg's public docs or its own example code say so) or ``"inferred"``
(our reading of indirect evidence: naming conventions, the SockJS protocol, Django REST
Framework defaults), with a one-line note. :data:`FACTS` lists them all, for reports
such as ``giosg-visitor probe``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, Literal, TypeAlias, TypeVar, final

import attrs


__all__ = [
    "ACTIONS",
    "ACTION_KEY",
    "ACTION_LABEL_FIELD",
    "API_PREFIX",
    "AUTH_CLOSE_CODES",
    "AUTH_HANDSHAKE_STATUSES",
    "CHANGED_METHOD",
    "CHANNEL_KEY",
    "CHOICE_DISABLES_WHOLE_MESSAGE",
    "CHOICE_MESSAGE_TYPE",
    "CHOICE_TEXT_SENT",
    "DEFAULT_BASE_URL",
    "DEFAULT_SOCKET_HOSTS",
    "DOCUMENTED",
    "Evidence",
    "FACTS",
    "FAIL_KEY",
    "Fact",
    "INFERRED",
    "LATER_CHOICE_IS_VISITOR_MESSAGE",
    "MEMBER_ID_KEY",
    "PROTOCOL_CLOSE_CODES",
    "QUERY_KEY",
    "QUERY_RESPONSE_METHOD",
    "RAW_ENDPOINT_SUFFIX",
    "REFUSAL_KINDS",
    "RESOURCE_ID_KEYS",
    "RESOURCE_KEY",
    "RESOURCE_OBJECT_ID_KEY",
    "RETRYABLE_HANDSHAKE_STATUSES",
    "RefusalKind",
    "SOCKET_STRATEGIES",
    "SOCKJS_CLOSE_FRAME",
    "SOCKJS_GO_AWAY_CODE",
    "SOCKJS_HEARTBEAT_FRAME",
    "SOCKJS_HEARTBEAT_SECONDS",
    "SOCKJS_MESSAGES_FRAME",
    "SOCKJS_MESSAGE_FRAME",
    "SOCKJS_OPEN_FRAME",
    "SUBSCRIBE_METHOD",
    "SocketStrategy",
    "UNSUBSCRIBE_METHODS",
    "URL_DERIVATIONS",
    "UrlDerivation",
    "choice_body",
    "fact",
]

#: How sure we are of a fact.
Evidence: TypeAlias = Literal["documented", "inferred"]
DOCUMENTED: Final[Evidence] = "documented"
INFERRED: Final[Evidence] = "inferred"

T = TypeVar("T")


@final
@attrs.frozen(kw_only=True)
class Fact:
    """One protocol fact.

    Attributes:
        name: The constant's name in this module.
        value: Its value.
        evidence: ``"documented"`` or ``"inferred"``.
        note: Where it comes from, or why we believe it (one line).
    """

    name: str
    value: object
    evidence: Evidence
    note: str


_registry: dict[str, Fact] = {}


def fact(name: str, value: T, evidence: Evidence, note: str) -> T:
    """Register a fact and return its value (for ``NAME: Final = fact("NAME", ...)``)."""
    if name in _registry:
        raise ValueError(f"fact {name!r} is registered twice")
    if evidence not in (DOCUMENTED, INFERRED):
        raise ValueError(f"evidence must be 'documented' or 'inferred', not {evidence!r}")
    _registry[name] = Fact(name=name, value=value, evidence=evidence, note=note)
    return value


# HTTP API ------------------------------------------------------------------------------

DEFAULT_BASE_URL: Final = fact(
    "DEFAULT_BASE_URL",
    "https://service.giosg.com",
    DOCUMENTED,
    "the API origin of Giosg's docs and example code",
)
API_PREFIX: Final = fact(
    "API_PREFIX",
    "/api/v5/public",
    DOCUMENTED,
    "prefix of every visitor endpoint and channel (renamed from /api/v5/client in 2016)",
)

# Socket transport -----------------------------------------------------------------------

DEFAULT_SOCKET_HOSTS: Final[tuple[str, ...]] = fact(
    "DEFAULT_SOCKET_HOSTS",
    ("giosg.com", "*.giosg.com"),
    DOCUMENTED,
    "socket_url points to messagerouter.giosg.com; Giosg's network page lists *.giosg.com",
)

#: How the transport finds the socket endpoint: ``"auto"`` tries the others in order.
SocketStrategy: TypeAlias = Literal["auto", "raw", "sockjs", "as_is"]
#: One way to turn ``socket_url`` into a WebSocket URL.
UrlDerivation: TypeAlias = Literal["raw", "sockjs", "as_is"]
#: How an endpoint refused a strategy (see :data:`REFUSAL_KINDS`).
RefusalKind: TypeAlias = Literal[
    "http_status", "no_upgrade", "redirect", "closed_after_open", "no_sockjs_open"
]

SOCKET_STRATEGIES: Final[tuple[SocketStrategy, ...]] = fact(
    "SOCKET_STRATEGIES",
    ("auto", "raw", "sockjs", "as_is"),
    INFERRED,
    "the docs never name the socket path; 'auto' tries raw, then sockjs, then as_is",
)
URL_DERIVATIONS: Final[tuple[UrlDerivation, ...]] = fact(
    "URL_DERIVATIONS",
    ("raw", "sockjs", "as_is"),
    INFERRED,
    "raw: <socket_url>/websocket; sockjs: <socket_url>/<3 digits>/<session>/websocket; "
    "as_is: socket_url itself (the order auto tries them in)",
)
RAW_ENDPOINT_SUFFIX: Final = fact(
    "RAW_ENDPOINT_SUFFIX",
    "/websocket",
    INFERRED,
    "the SockJS raw WebSocket endpoint; socket_url's '003' segment looks like a SockJS server",
)
SOCKJS_OPEN_FRAME: Final = fact(
    "SOCKJS_OPEN_FRAME", "o", INFERRED, "SockJS protocol: the first frame of a session"
)
SOCKJS_HEARTBEAT_FRAME: Final = fact(
    "SOCKJS_HEARTBEAT_FRAME",
    "h",
    INFERRED,
    "SockJS protocol heartbeat; sockjs-node sends WebSocket pings on WebSocket sessions instead",
)
SOCKJS_MESSAGES_FRAME: Final = fact(
    "SOCKJS_MESSAGES_FRAME",
    "a",
    INFERRED,
    "SockJS protocol: a JSON array of JSON-encoded messages",
)
SOCKJS_MESSAGE_FRAME: Final = fact(
    "SOCKJS_MESSAGE_FRAME",
    "m",
    INFERRED,
    "SockJS protocol (old servers): one JSON-encoded message",
)
SOCKJS_CLOSE_FRAME: Final = fact(
    "SOCKJS_CLOSE_FRAME", "c", INFERRED, "SockJS protocol: c[code, reason] before a close"
)
SOCKJS_HEARTBEAT_SECONDS: Final = fact(
    "SOCKJS_HEARTBEAT_SECONDS",
    25.0,
    INFERRED,
    "SockJS servers' default heartbeat_delay",
)

# Socket messages ------------------------------------------------------------------------

SUBSCRIBE_METHOD: Final = fact(
    "SUBSCRIBE_METHOD",
    "sub",
    DOCUMENTED,
    '["sub", [channel, token], {"query": n}] (Giosg docs draft, 2016)',
)
UNSUBSCRIBE_METHODS: Final[tuple[str, ...]] = fact(
    "UNSUBSCRIBE_METHODS",
    ("unsub", "uns"),
    INFERRED,
    "unsubscribing is undocumented; we send 'unsub' (SockJS multiplex spells it 'uns')",
)
QUERY_RESPONSE_METHOD: Final = fact(
    "QUERY_RESPONSE_METHOD",
    "__qr__",
    DOCUMENTED,
    '["__qr__", [[]], {"query": n}] answers a sub (Giosg docs draft, 2016)',
)
QUERY_KEY: Final = fact(
    "QUERY_KEY", "query", DOCUMENTED, "the client-chosen numeric id a __qr__ echoes"
)
FAIL_KEY: Final = fact(
    "FAIL_KEY",
    "fail",
    DOCUMENTED,
    "__qr__ with fail: true refuses a sub; the reason's shape is undocumented",
)
CHANGED_METHOD: Final = fact(
    "CHANGED_METHOD",
    "changed",
    DOCUMENTED,
    '["changed", [channel, {action, resourceId, resource}]] notifications (docs draft)',
)
ACTION_KEY: Final = fact(
    "ACTION_KEY", "action", DOCUMENTED, "the notification's action: added, changed or removed"
)
RESOURCE_KEY: Final = fact(
    "RESOURCE_KEY",
    "resource",
    DOCUMENTED,
    "the resource (whole when added, only the changed attributes when changed)",
)
CHANNEL_KEY: Final = fact(
    "CHANNEL_KEY",
    "channel",
    DOCUMENTED,
    "current real-time docs put the channel inside the notification object",
)
ACTIONS: Final[tuple[str, ...]] = fact(
    "ACTIONS",
    ("added", "changed", "removed"),
    DOCUMENTED,
    "notification actions (real-time API docs)",
)

# Notification identity ------------------------------------------------------------------

RESOURCE_ID_KEYS: Final[tuple[str, ...]] = fact(
    "RESOURCE_ID_KEYS",
    ("resourceId", "resource_id"),
    DOCUMENTED,
    "the docs draft spells it resourceId, the current docs resource_id: accept both, in order",
)
RESOURCE_OBJECT_ID_KEY: Final = fact(
    "RESOURCE_OBJECT_ID_KEY",
    "id",
    INFERRED,
    "resource.id, the fallback identity when neither resource id key is present",
)
MEMBER_ID_KEY: Final = fact(
    "MEMBER_ID_KEY",
    "member_id",
    INFERRED,
    "memberships have no id; member_id identifies one within its chat",
)

# Refusal and close-code vocabulary ------------------------------------------------------

AUTH_CLOSE_CODES: Final[frozenset[int]] = fact(
    "AUTH_CLOSE_CODES",
    frozenset({4001, 4003, 4401, 4403}),
    INFERRED,
    "Giosg's close codes are undocumented; the 4000-range spellings of 401 and 403",
)
PROTOCOL_CLOSE_CODES: Final[frozenset[int]] = fact(
    "PROTOCOL_CLOSE_CODES",
    frozenset({1002, 1003, 1007, 1009}),
    DOCUMENTED,
    "RFC 6455: protocol error, unsupported data, invalid payload, message too big",
)
SOCKJS_GO_AWAY_CODE: Final = fact(
    "SOCKJS_GO_AWAY_CODE",
    3000,
    INFERRED,
    "SockJS servers close sessions with c[3000, 'Go away!']: reconnect",
)
AUTH_HANDSHAKE_STATUSES: Final[frozenset[int]] = fact(
    "AUTH_HANDSHAKE_STATUSES",
    frozenset({401, 403}),
    INFERRED,
    "a handshake refused for the credential: renew, then reconnect",
)
RETRYABLE_HANDSHAKE_STATUSES: Final[frozenset[int]] = fact(
    "RETRYABLE_HANDSHAKE_STATUSES",
    frozenset({408, 425, 429, 500, 502, 503, 504}),
    INFERRED,
    "HTTP semantics: a refused handshake worth retrying with backoff (any 5xx too)",
)

REFUSAL_KINDS: Final[tuple[RefusalKind, ...]] = fact(
    "REFUSAL_KINDS",
    ("http_status", "no_upgrade", "redirect", "closed_after_open", "no_sockjs_open"),
    INFERRED,
    "how an endpoint says 'not here': a status instead of 101 (401/403, 408, 425, 429 and "
    "5xx excepted), a 2xx without upgrade, a redirect, a close before any protocol message, "
    "SockJS framing without an 'o' frame",
)

# Rich messages: attachments, actions and the visitor's choice ----------------------------

CHOICE_MESSAGE_TYPE: Final = fact(
    "CHOICE_MESSAGE_TYPE",
    "action",
    DOCUMENTED,
    "giosg's demo bot: a click is a message of this type with response_value and the "
    "response_to_* ids of what was clicked",
)
ACTION_LABEL_FIELD: Final = fact(
    "ACTION_LABEL_FIELD",
    "text",
    INFERRED,
    "a button's label is its text field (documented: type, value, style, is_disabled_on_*)",
)
CHOICE_TEXT_SENT: Final = fact(
    "CHOICE_TEXT_SENT",
    True,
    INFERRED,
    "a choice also carries the button's label as message, so consoles show what was chosen",
)
CHOICE_DISABLES_WHOLE_MESSAGE: Final = fact(
    "CHOICE_DISABLES_WHOLE_MESSAGE",
    True,
    INFERRED,
    "is_disabled_on_selection disables every action of the message once any is chosen",
)
LATER_CHOICE_IS_VISITOR_MESSAGE: Final = fact(
    "LATER_CHOICE_IS_VISITOR_MESSAGE",
    True,
    INFERRED,
    "for is_disabled_on_visitor_message a later choice counts as a visitor message",
)


def choice_body(
    *, message_id: str, attachment_id: str, action_id: str, text: str | None
) -> dict[str, Any]:
    """The JSON body that posts a visitor's choice.

    inferred: Giosg does not document how a visitor client posts a choice; this posts the
    ordinary message endpoint with ``type: "action"`` and the three ``response_to_*`` ids,
    and the server fills in ``response_value`` from the action.
    """
    body: dict[str, Any] = {
        "type": CHOICE_MESSAGE_TYPE,
        "response_to_message_id": message_id,
        "response_to_attachment_id": attachment_id,
        "response_to_action_id": action_id,
    }
    if CHOICE_TEXT_SENT and text:
        body["message"] = text
    return body


#: Every fact above, by name.
FACTS: Final[Mapping[str, Fact]] = _registry
