"""``AcceptLoop``: a blocking accept loop on 127.0.0.1 in a daemon thread.

The base of the hand-written socket servers of the tests (``_hostile_http.HostileServer``,
the reliability suite's TLS and raw servers): servers that must misbehave below HTTP, which
an ASGI app under uvicorn cannot. A subclass writes :meth:`AcceptLoop.handle`.
"""

from __future__ import annotations

import socket
import threading
from types import TracebackType
from typing import Self


__all__ = ["AcceptLoop"]


class AcceptLoop:
    """Listens on a free port of 127.0.0.1; entering starts accepting, leaving stops.

    Args:
        concurrent: Serve each connection in a thread of its own (daemon threads, left
            to end with their connection); otherwise one connection at a time, in the
            accepting thread.
    """

    def __init__(self, *, concurrent: bool = False) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        # Short: the loop notices a stop within this many seconds.
        self._sock.settimeout(0.1)
        self.port: int = self._sock.getsockname()[1]
        self._stop = threading.Event()
        self._concurrent = concurrent
        self._thread = threading.Thread(target=self._accept, name=type(self).__name__, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._sock.close()

    @property
    def stopping(self) -> bool:
        """Whether the server is being stopped (a long ``handle`` should return)."""
        return self._stop.is_set()

    def handle(self, conn: socket.socket) -> None:
        """Serve one accepted connection; it is this method's to close."""
        raise NotImplementedError

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if self._concurrent:
                threading.Thread(target=self.handle, args=(conn,), daemon=True).start()
            else:
                self.handle(conn)
