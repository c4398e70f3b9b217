"""A small real HTTP server on 127.0.0.1 that answers like a broken or hostile Giosg.

It answers auth like Giosg does (``POST .../auth`` gives a valid token, optionally with
extra fields), and every other request with what the test asks for: a body of a given
size streamed as fast as the socket takes it, or a body trickled a byte at a time. It
counts the body bytes it managed to send, so a test can show that the client stopped
reading early. One thread per connection; daemon threads, stopped on exit.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from typing import Any, Literal, final

from ._accept_loop import AcceptLoop


__all__ = ["HostileServer"]

_CHUNK = b"x" * 65536

Behaviour = Literal["huge", "trickle", "ok"]


@final
class HostileServer(AcceptLoop):
    """``auth`` and ``api`` say what each kind of request gets.

    * ``"ok"``: a valid answer (auth: a token; api: an empty page of results).
    * ``"huge"``: a 200 with ``body_size`` bytes of a JSON string, no Content-Length
      (close-delimited) unless ``declare_length``.
    * ``"trickle"``: a 200 declaring 10,000 bytes, sent one byte every ``interval`` s.
    """

    def __init__(
        self,
        *,
        organization_id: str,
        auth: Behaviour = "ok",
        api: Behaviour = "ok",
        body_size: int = 200 << 20,
        declare_length: bool = False,
        interval: float = 0.05,
        auth_extra: dict[str, Any] | None = None,
        lifetime: int = 3600,
    ) -> None:
        self.organization_id = organization_id
        self.auth = auth
        self.api = api
        self.body_size = body_size
        self.declare_length = declare_length
        self.interval = interval
        self.auth_extra = auth_extra or {}
        self.lifetime = lifetime
        self.body_bytes_sent = 0
        self.requests: list[str] = []
        self._lock = threading.Lock()
        super().__init__(concurrent=True)

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://127.0.0.1:{self.port}"

    def handle(self, conn: socket.socket) -> None:
        conn.settimeout(10.0)
        try:
            with conn:
                while not self.stopping:
                    request = self._read_request(conn)
                    if request is None:
                        return
                    method, path = request
                    with self._lock:
                        self.requests.append(f"{method} {path}")
                    is_auth = method == "POST" and path.endswith("/auth")
                    if not self._answer(conn, self.auth if is_auth else self.api, is_auth):
                        return
        except OSError:
            return  # the client hung up: what a client that stops reading does

    def _read_request(self, conn: socket.socket) -> tuple[str, str] | None:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return None
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        method, path, _ = lines[0].split(" ", 2)
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value.strip())
        while len(rest) < length:
            chunk = conn.recv(65536)
            if not chunk:
                return None
            rest += chunk
        return method, path

    def _answer(self, conn: socket.socket, behaviour: Behaviour, is_auth: bool) -> bool:
        """Send one response; ``False`` when the connection must close afterwards."""
        if behaviour == "ok":
            body = json.dumps(self._auth_body() if is_auth else {"next": None, "results": []})
            payload = body.encode()
            conn.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {len(payload)}\r\n\r\n".encode()
                + payload
            )
            return True
        if behaviour == "trickle":
            conn.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                b"Content-Length: 10000\r\nConnection: close\r\n\r\n"
            )
            for _ in range(10000):
                if self.stopping:
                    return False
                conn.sendall(b" ")
                self._count(1)
                time.sleep(self.interval)
            return False
        length = f"Content-Length: {self.body_size + 2}\r\n" if self.declare_length else ""
        conn.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
            + length.encode()
            + b"\r\n"
            + b'"'
        )
        left = self.body_size
        while left > 0 and not self.stopping:
            piece = _CHUNK[: min(left, len(_CHUNK))]
            conn.sendall(piece)
            self._count(len(piece))
            left -= len(piece)
        conn.sendall(b'"')
        return False

    def _count(self, amount: int) -> None:
        with self._lock:
            self.body_bytes_sent += amount

    def _auth_body(self) -> dict[str, Any]:
        return {
            "visitor_id": uuid.uuid4().hex,
            "visitor_secret_id": uuid.uuid4().hex + uuid.uuid4().hex,
            "organization_id": self.organization_id,
            "socket_url": "https://messagerouter.giosg.com",
            "access_token": uuid.uuid4().hex + uuid.uuid4().hex,
            "expires_in": self.lifetime,
            **self.auth_extra,
        }
