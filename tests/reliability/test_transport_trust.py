"""Credentials travel over verified TLS only, and only to the origin they belong to.

Real local servers: a TLS listener with a self-signed certificate (it must be refused by
default), redirecting servers and an "attacker" that counts every connection it gets (it
must get none). Already covered elsewhere (README.md): http base URLs and token URLs are
refused before I/O, pagination ``next`` to another origin, redirects on auth and on the
WebSocket handshake without a target, ``socket_url`` hosts off the allowlist, userinfo,
IP literals and look-alike hosts.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from giosg_visitor import (
    BearerAuth,
    ClientCredentials,
    ProtocolError,
    Secret,
    TokenAuth,
    TransportError,
    UntrustedEndpointError,
    Visitor,
)
from giosg_visitor.realtime import Disconnected, RealtimeConnection, ReconnectPolicy

from .._helpers import FAST_RETRY, ORG_ID
from ._support import RawServer, TLSServer, redirect_response, self_signed_certificate, virtual_fake
from .canary import Sentinel
from .figures import Figures
from .test_realtime_resilience import next_event


FAST = ReconnectPolicy(first_delay=0.05, max_delay=0.1)


def _chain(exc: BaseException | None) -> str:
    """The reprs of an exception and of everything it was raised from or during."""
    parts = []
    while exc is not None:
        parts.append(repr(exc))
        exc = exc.__cause__ or exc.__context__
    return "\n".join(parts)


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate (and key) for 127.0.0.1."""
    return self_signed_certificate(tmp_path)


async def test_a_self_signed_https_server_is_refused(
    certificate: tuple[Path, Path], figures: Figures
) -> None:
    """Certificate checks are on by default: auth never reaches a self-signed server."""
    cert, key = certificate
    with TLSServer(cert, key) as server:
        with pytest.raises(TransportError) as info:
            async with Visitor(
                ORG_ID, base_url=f"https://127.0.0.1:{server.port}", retry=FAST_RETRY
            ):
                pass
        refused, completed, received = (
            server.handshakes_failed,
            server.handshakes_ok,
            server.bytes_received,
        )
        # Control: the same server is fine for a client that trusts its certificate.
        context = ssl.create_default_context(cafile=str(cert))
        stream = await anyio.connect_tcp(
            "127.0.0.1",
            server.port,
            tls=True,
            ssl_context=context,
            tls_hostname="127.0.0.1",
            tls_standard_compatible=False,
        )
        await stream.send(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        await stream.receive()
        await stream.aclose()
        figures.add("faults.untrusted_tls", refused)
    assert "CERTIFICATE_VERIFY_FAILED" in _chain(info.value)
    assert refused >= 1
    assert (completed, received) == (0, 0)  # not one byte of the request went out
    assert server.handshakes_ok == 1


async def test_a_self_signed_wss_server_is_refused(
    certificate: tuple[Path, Path], secret_sentinel: Sentinel
) -> None:
    """The socket does not open to a self-signed wss server; no token is fetched."""
    cert, key = certificate
    tokens: list[str] = []

    async def token() -> Secret:
        tokens.append(secret_sentinel.canary("socket-token"))
        return Secret(tokens[-1])

    with TLSServer(cert, key) as server:
        async with RealtimeConnection(
            socket_url=f"https://127.0.0.1:{server.port}/router",
            token_provider=token,
            reconnect=FAST,
            open_timeout=5,
        ) as conn:
            conn.subscribe("/api/v5/public/visitors/8a60b202474547dbb8ce19737e4c166f/chats")
            async with conn.events() as events:
                for _ in range(2):
                    lost = await next_event(events, Disconnected)
                    assert lost.retry_in is not None
    assert server.handshakes_failed >= 2
    assert (server.handshakes_ok, server.bytes_received) == (0, 0)
    assert tokens == []


NOT_LOOPBACK_HTTP = [
    pytest.param(
        lambda: Visitor(ORG_ID, base_url="http://service.giosg.com"),
        id="visitor-base-url",
    ),
    pytest.param(
        lambda: ClientCredentials("http://auth.giosg.com/oauth/token", "id", "secret"),
        id="client-credentials-token-url",
    ),
]


@pytest.mark.parametrize("make", NOT_LOOPBACK_HTTP)
def test_plain_http_to_another_host_is_refused_at_construction(make: Any) -> None:
    """Credential-bearing objects refuse http:// (loopback excepted) before any I/O."""
    with pytest.raises(UntrustedEndpointError):
        make()


@pytest.mark.parametrize(
    "auth",
    [
        pytest.param(lambda: TokenAuth("static-api-token-0123456789"), id="TokenAuth"),
        pytest.param(lambda: BearerAuth("bearer-token-0123456789"), id="BearerAuth"),
    ],
)
async def test_static_credentials_refuse_plain_http_before_sending(auth: Any) -> None:
    """TokenAuth/BearerAuth raise on an http:// request; the transport sees nothing."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200)

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler), auth=auth()) as client:
        with pytest.raises(UntrustedEndpointError):
            await client.get("http://api.giosg.com/api/v5/users")
    assert seen == []


@pytest.mark.parametrize(
    "socket_url",
    ["http://messagerouter.giosg.com/003/2/router", "ws://messagerouter.giosg.com/router"],
)
async def test_plain_ws_to_another_host_is_refused_before_connecting(socket_url: str) -> None:
    """A non-loopback ``socket_url`` without TLS fails the connection before I/O."""

    async def token() -> Secret:
        raise AssertionError("no token may be fetched for an untrusted socket")

    async with RealtimeConnection(socket_url=socket_url, token_provider=token) as conn:
        with anyio.fail_after(5), pytest.raises(UntrustedEndpointError):
            await conn.wait_connected()


# Origin binding -----------------------------------------------------------------------------


@pytest.mark.parametrize("status", [301, 302, 307, 308])
async def test_auth_redirects_to_another_origin_are_not_followed(
    status: int, figures: Figures
) -> None:
    """The auth endpoint redirecting elsewhere: a typed error, the target never hit."""
    with RawServer() as attacker:
        location = f"http://{attacker.origin}/api/v5/public/orgs/{ORG_ID}/auth"
        with RawServer(redirect_response(location, status)) as redirector:
            with pytest.raises(ProtocolError, match="redirect"):
                async with Visitor(
                    ORG_ID, base_url=f"http://{redirector.origin}", retry=FAST_RETRY
                ):
                    pass
            asked = redirector.connections
    figures.add("faults.redirects", asked)
    assert asked == 1
    assert (attacker.connections, attacker.bytes_received) == (0, 0)


async def test_api_redirects_and_foreign_next_links_never_carry_the_token() -> None:
    """3xx answers and ``next`` links to other origins: no request leaves the origin."""
    attacker = "https://attacker.example"
    requests: list[httpx.Request] = []

    def wrap(inner: httpx.AsyncBaseTransport, clock: Any) -> httpx.AsyncBaseTransport:
        return _Redirecting(inner, requests, attacker)

    async with virtual_fake(wrap=wrap) as world, world.visitor() as visitor:
        with pytest.raises(ProtocolError, match="redirect"):
            await visitor.room("9926bdfa-56e0-11e5-b98c-6c4008c08dfe")
        for target in (
            f"{attacker}/api/v5/public/visitors/{visitor.visitor_id}/chats?cursor=x",
            f"{world.giosg.base_url}:8443/api/v5/public/visitors/x/chats?cursor=x",
            f"https://127.0.0.1/api/v5/public/visitors/{visitor.visitor_id}/chats?cursor=x",
        ):
            _Redirecting.next_link = target
            with pytest.raises(UntrustedEndpointError):
                [chat async for chat in visitor.chats()]
    origins = {(r.url.scheme, r.url.host, r.url.port) for r in requests}
    assert origins == {("http", "127.0.0.1", None)}


class _Redirecting(httpx.AsyncBaseTransport):
    """Answers room requests with a 307 to ``attacker`` and gives chat lists a ``next``."""

    next_link: str = ""

    def __init__(
        self, inner: httpx.AsyncBaseTransport, requests: list[httpx.Request], attacker: str
    ) -> None:
        self.inner = inner
        self.requests = requests
        self.attacker = attacker

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if "/rooms/" in request.url.path and request.method == "GET":
            return httpx.Response(307, headers={"Location": f"{self.attacker}/steal"})
        if request.url.path.endswith("/chats") and request.method == "GET":
            return httpx.Response(200, json={"next": self.next_link, "results": []})
        return await self.inner.handle_async_request(request)


async def test_a_socket_handshake_redirect_to_another_origin_is_not_followed(
    secret_sentinel: Sentinel,
) -> None:
    """The WebSocket handshake answered with a redirect: refused, target never hit."""
    tokens: list[str] = []

    async def token() -> Secret:
        tokens.append(secret_sentinel.canary("socket-token"))
        return Secret(tokens[-1])

    with RawServer() as attacker:
        location = f"ws://{attacker.origin}/router/websocket"
        with RawServer(redirect_response(location)) as redirector:
            async with RealtimeConnection(
                socket_url=f"http://{redirector.origin}/router", token_provider=token
            ) as conn:
                with anyio.fail_after(5), pytest.raises(UntrustedEndpointError):
                    await conn.wait_connected()
            asked = redirector.connections
    assert asked == 1
    assert (attacker.connections, attacker.bytes_received) == (0, 0)
    assert tokens == []
