"""Shared tools of the reliability suite: a fault-injecting HTTP transport, local servers.

* :class:`FlakyTransport` wraps an in-process ``httpx`` transport (``FakeGiosg.transport()``)
  and injects faults *with odds* (503, 429 + ``Retry-After``, a reset before or after the
  server processed the request, latency on the virtual clock), counting what it did.
* :class:`TLSServer`: a TLS listener with a self-signed certificate on 127.0.0.1 that
  records handshakes and application bytes.
* :class:`RawServer`: a TCP listener that answers every request with a fixed HTTP response
  (a redirect) and records connections; with ``response=None`` it is an "attacker" that
  only counts who connects.
"""

from __future__ import annotations

import datetime as dt
import functools
import ipaddress
import json
import random
import socket
import ssl
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import final

import attrs
import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from giosg_visitor import Clock

from .._accept_loop import AcceptLoop
from .._helpers import VirtualWorld as World, virtual_world
from ._clock import virtual_clock


__all__ = [
    "FaultOdds",
    "FlakyTransport",
    "RawServer",
    "TLSServer",
    "World",
    "redirect_response",
    "self_signed_certificate",
    "virtual_fake",
]


# A fake Giosg in-process on a virtual clock (the fast settling one) ----------------------

#: ``virtual_world`` of the main suite on :func:`virtual_clock`.
virtual_fake = functools.partial(virtual_world, clock=virtual_clock)


# Fault injection with odds ------------------------------------------------------------------


@final
@attrs.frozen(kw_only=True)
class FaultOdds:
    """Probabilities of each fault for one request (they add up to at most 1).

    Attributes:
        status_503: Answer 503 without processing.
        status_429: Answer 429 with ``Retry-After`` in ``retry_after`` seconds, unprocessed.
        reset_before: Drop the connection before the server processed the request.
        reset_after: Let the server process the request, then drop the response.
        retry_after: Range of the ``Retry-After`` seconds of a 429.
        latency: Range of a delay (virtual seconds) before anything else happens.
    """

    status_503: float = 0.0
    status_429: float = 0.0
    reset_before: float = 0.0
    reset_after: float = 0.0
    retry_after: tuple[int, int] = (1, 5)
    latency: tuple[float, float] = (0.0, 0.0)


@final
class FlakyTransport(httpx.AsyncBaseTransport):
    """An ``httpx`` transport that injects :class:`FaultOdds` faults in front of another.

    Args:
        inner: The transport that reaches the (fake) server.
        clock: The virtual clock latency sleeps on.
        rng: The random source (seeded: runs are reproducible on both backends).
        odds: The odds for a request, or ``None`` to pass it through untouched.
    """

    def __init__(
        self,
        inner: httpx.AsyncBaseTransport,
        *,
        clock: Clock,
        rng: random.Random,
        odds: Callable[[httpx.Request], FaultOdds | None],
    ) -> None:
        self.inner = inner
        self.clock = clock
        self.rng = rng
        self.odds = odds
        #: Faults injected, by kind.
        self.injected: Counter[str] = Counter()
        #: Requests that got a fault-free answer through this transport, by path kind.
        self.delivered: Counter[str] = Counter()
        #: Requests in flight per visitor secret (auth only), and the most ever at once.
        self.in_flight: Counter[str] = Counter()
        self.max_in_flight = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        odds = self.odds(request)
        if odds is None:
            return await self.inner.handle_async_request(request)
        key = _secret_of(request)
        if key is not None:
            self.in_flight[key] += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight[key])
        try:
            low, high = odds.latency
            if high > 0:
                await self.clock.sleep(self.rng.uniform(low, high))
            roll = self.rng.random()
            if roll < odds.status_503:
                self.injected["503"] += 1
                return httpx.Response(503, json={"detail": "Injected fault (503)."})
            roll -= odds.status_503
            if roll < odds.status_429:
                self.injected["429"] += 1
                seconds = self.rng.randint(*odds.retry_after)
                return httpx.Response(
                    429, headers={"Retry-After": str(seconds)}, json={"detail": "Slow down."}
                )
            roll -= odds.status_429
            if roll < odds.reset_before:
                self.injected["reset_before"] += 1
                raise httpx.ReadError("injected: connection reset", request=request)
            roll -= odds.reset_before
            response = await self.inner.handle_async_request(request)
            if roll < odds.reset_after:
                await response.aread()
                await response.aclose()
                self.injected["reset_after"] += 1
                raise httpx.ReadError("injected: connection reset", request=request)
            self.delivered["ok"] += 1
            return response
        finally:
            if key is not None:
                self.in_flight[key] -= 1

    async def aclose(self) -> None:
        await self.inner.aclose()


def _secret_of(request: httpx.Request) -> str | None:
    """The visitor secret an auth request carries (``None``: not an auth request or new)."""
    if not request.url.path.endswith("/auth"):
        return None
    try:
        body = json.loads(request.content or b"{}")
    except ValueError:
        return None
    value = body.get("visitor_secret_id") if isinstance(body, dict) else None
    return value if isinstance(value, str) else None


# TLS ------------------------------------------------------------------------------------------


def self_signed_certificate(folder: Path, host: str = "127.0.0.1") -> tuple[Path, Path]:
    """A self-signed certificate for ``host`` (an IP address) and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "giosg-reliability-self-signed")])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


class _ThreadedServer(AcceptLoop):
    """An accept loop serving one connection at a time; counts connections and bytes."""

    def __init__(self) -> None:
        super().__init__()
        self.connections = 0
        self.bytes_received = 0

    def handle(self, conn: socket.socket) -> None:
        self.connections += 1
        conn.settimeout(2.0)
        try:
            self.serve(conn)
        except OSError:
            pass
        finally:
            conn.close()

    def serve(self, conn: socket.socket) -> None:
        raise NotImplementedError


@final
class TLSServer(_ThreadedServer):
    """TLS with a self-signed certificate; counts handshakes and application bytes."""

    def __init__(self, cert: Path, key: Path) -> None:
        super().__init__()
        self._context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._context.load_cert_chain(cert, key)
        self.handshakes_ok = 0
        self.handshakes_failed = 0

    def serve(self, conn: socket.socket) -> None:
        try:
            tls = self._context.wrap_socket(conn, server_side=True)
        except (ssl.SSLError, OSError):
            self.handshakes_failed += 1
            return
        self.handshakes_ok += 1
        with tls:
            data = tls.recv(65536)
            self.bytes_received += len(data)
            tls.sendall(
                b"HTTP/1.1 418 I'm a teapot\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )


@final
class RawServer(_ThreadedServer):
    """Reads a request and answers ``response`` (or nothing); counts connections and bytes."""

    def __init__(self, response: bytes | None = None) -> None:
        super().__init__()
        self.response = response

    @property
    def origin(self) -> str:
        """``127.0.0.1:<port>``."""
        return f"127.0.0.1:{self.port}"

    def serve(self, conn: socket.socket) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                break
            data += chunk
        self.bytes_received += len(data)
        if self.response is not None:
            conn.sendall(self.response)


def redirect_response(location: str, status: int = 302) -> bytes:
    """A bodiless HTTP redirect to ``location``."""
    return (
        f"HTTP/1.1 {status} Redirect\r\nLocation: {location}\r\n"
        "Content-Length: 0\r\nConnection: close\r\n\r\n"
    ).encode()
