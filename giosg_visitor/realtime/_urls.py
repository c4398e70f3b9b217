"""Where to connect: the WebSocket endpoint derived from ``socket_url``, checked first.

The auth response gives ``socket_url`` as an ``https://`` URL (for example
``https://messagerouter.giosg.com/003/2/router``) and the docs never say which path to
open. Three URL derivations (see :mod:`giosg_visitor._facts`):

* ``"raw"`` (default here): ``wss://<host><path>/websocket``, the SockJS raw endpoint;
* ``"sockjs"``: ``wss://<host><path>/<3 digits>/<session>/websocket``, for SockJS framing;
* ``"as_is"``: ``socket_url`` itself with the scheme switched to ``wss``.

The connection's ``"auto"`` strategy tries them in that order (see
:class:`~giosg_visitor.realtime.RealtimeConnection`); framing is a separate setting.

The socket will carry the access token (inside ``sub`` messages), so the URL is checked
before any byte is sent; see :func:`check_socket_url`. The token never goes into a URL.
"""

from __future__ import annotations

import ipaddress
import random
import re
import string
from collections.abc import Sequence
from typing import Final, Literal, TypeAlias
from urllib.parse import SplitResult, urlsplit, urlunsplit

from giosg_visitor._facts import (
    DEFAULT_SOCKET_HOSTS,
    RAW_ENDPOINT_SUFFIX,
    URL_DERIVATIONS,
    SocketStrategy,
)
from giosg_visitor._http import is_loopback_host
from giosg_visitor.errors import UntrustedEndpointError


__all__ = [
    "DEFAULT_ALLOWED_HOSTS",
    "SocketStrategy",
    "Strategy",
    "check_socket_url",
    "host_allowed",
    "socket_endpoint",
    "socket_host",
]

#: How to turn ``socket_url`` into a WebSocket endpoint (one URL derivation).
Strategy: TypeAlias = Literal["raw", "sockjs", "as_is"]

#: Hosts a ``socket_url`` may point to unless configured otherwise.
DEFAULT_ALLOWED_HOSTS: Final[tuple[str, ...]] = DEFAULT_SOCKET_HOSTS

_SCHEMES: Final = {"https": "wss", "wss": "wss", "http": "ws", "ws": "ws"}
_SECURE: Final = frozenset({"https", "wss"})
_HOST_NAME: Final = re.compile(r"[a-z0-9-]+(\.[a-z0-9-]+)*")
_SESSION_ALPHABET: Final = string.ascii_lowercase + string.digits
_SESSION_LENGTH: Final = 12


def socket_endpoint(
    socket_url: str,
    *,
    strategy: Strategy = "raw",
    allowed_hosts: Sequence[str] = DEFAULT_ALLOWED_HOSTS,
    rng: random.Random | None = None,
) -> str:
    """Return the ``ws``/``wss`` URL to open for ``socket_url``.

    Args:
        socket_url: The ``socket_url`` of the auth response.
        strategy: ``"raw"``, ``"sockjs"`` or ``"as_is"`` (see the module docstring).
        allowed_hosts: Host patterns the URL may point to: ``"giosg.com"`` matches that
            host only, ``"*.giosg.com"`` matches its subdomains only. Loopback hosts are
            always allowed (the local fake server).
        rng: Draws the SockJS server id and session id.

    Returns:
        The WebSocket URL.

    Raises:
        UntrustedEndpointError: The URL is not safe to send a token to.
        ValueError: ``strategy`` is unknown.
    """
    if strategy not in URL_DERIVATIONS:
        raise ValueError(f"strategy must be 'raw', 'sockjs' or 'as_is', not {strategy!r}")
    parts = check_socket_url(socket_url, allowed_hosts=allowed_hosts)
    scheme = _SCHEMES[parts.scheme.lower()]
    path = parts.path
    if strategy == "raw":
        path = f"{path.rstrip('/')}{RAW_ENDPOINT_SUFFIX}"
    elif strategy == "sockjs":
        draw = rng if rng is not None else random.Random()
        server_id = f"{draw.randrange(1000):03d}"
        session = "".join(draw.choice(_SESSION_ALPHABET) for _ in range(_SESSION_LENGTH))
        path = f"{path.rstrip('/')}/{server_id}/{session}/websocket"
    return urlunsplit((scheme, parts.netloc, path or "/", parts.query, ""))


def socket_host(socket_url: str) -> str:
    """The key under which the working strategy for ``socket_url`` is remembered.

    The host and port, lower-cased (``""`` when the URL cannot be split).
    """
    try:
        return urlsplit(socket_url).netloc.lower()
    except ValueError:
        return ""


def check_socket_url(
    socket_url: str, *, allowed_hosts: Sequence[str] = DEFAULT_ALLOWED_HOSTS
) -> SplitResult:
    """Check that ``socket_url`` may receive a token, and return it split.

    Rules: the scheme is ``https``/``wss`` (``http``/``ws`` only for loopback hosts:
    127.0.0.0/8, ``::1``, ``localhost``); no userinfo; a plain host name or IP address; the
    host matches ``allowed_hosts`` or is loopback. Look-alikes such as
    ``giosg.com.evil.net`` or ``evilgiosg.com`` do not match ``giosg.com`` patterns.

    Args:
        socket_url: The URL to check.
        allowed_hosts: Host patterns (see :func:`host_allowed`).

    Returns:
        The split URL.

    Raises:
        UntrustedEndpointError: The URL fails a rule. The message names the rule; the
            URL is attached as ``url`` (it never holds a token).
    """
    if isinstance(allowed_hosts, str):
        raise TypeError("allowed_hosts must be a sequence of patterns, not a str")
    if not isinstance(socket_url, str) or not socket_url:
        raise UntrustedEndpointError("socket_url is empty or not a string", url=None)
    if any(ch.isspace() or ord(ch) < 0x20 or ch == "\\" for ch in socket_url):
        raise UntrustedEndpointError(
            "socket_url contains whitespace, control characters or backslashes",
            url=socket_url,
        )
    try:
        parts = urlsplit(socket_url)
        port = parts.port
    except ValueError as exc:
        raise UntrustedEndpointError("socket_url is not a valid URL", url=socket_url) from exc
    del port
    scheme = parts.scheme.lower()
    if scheme not in _SCHEMES:
        raise UntrustedEndpointError(
            f"socket_url scheme {scheme!r} is not https or wss", url=socket_url
        )
    if "@" in parts.netloc:
        raise UntrustedEndpointError("socket_url must not contain userinfo", url=socket_url)
    host = _normalise_host(parts.hostname)
    if host is None:
        raise UntrustedEndpointError("socket_url has no valid host", url=socket_url)
    loopback = is_loopback_host(host)
    if scheme not in _SECURE and not loopback:
        raise UntrustedEndpointError(
            "socket_url must use https or wss (plain http/ws only to loopback)",
            url=socket_url,
        )
    if not loopback and not host_allowed(host, allowed_hosts):
        raise UntrustedEndpointError(
            f"socket_url host {host!r} is not on the allowed hosts list", url=socket_url
        )
    return parts


def host_allowed(host: str, patterns: Sequence[str]) -> bool:
    """Whether ``host`` matches one of ``patterns``.

    ``"example.com"`` matches exactly that host; ``"*.example.com"`` matches any subdomain
    (``a.example.com``, ``a.b.example.com``) but not ``example.com`` itself. Matching is
    case-insensitive and ignores one trailing dot. Loopback is *not* special here.

    Args:
        host: The host name or IP address.
        patterns: The allowlist.
    """
    name = _normalise_host(host)
    if name is None:
        return False
    for pattern in patterns:
        wanted = pattern.strip().lower().rstrip(".")
        if wanted.startswith("*."):
            suffix = wanted[1:]  # ".example.com"
            if len(suffix) > 1 and name.endswith(suffix) and len(name) > len(suffix):
                return True
        elif wanted and name == wanted:
            return True
    return False


def _normalise_host(host: str | None) -> str | None:
    """Lower-case, strip one trailing dot; ``None`` unless an IP or an LDH host name."""
    if not host:
        return None
    name = host.lower()
    if name.endswith(".") and not name.endswith(".."):
        name = name[:-1]
    try:
        ipaddress.ip_address(name)
    except ValueError:
        pass
    else:
        return name
    if not _HOST_NAME.fullmatch(name):
        return None
    return name
