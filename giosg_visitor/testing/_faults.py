"""Fault injection for the fake Giosg: scripted failures matched to requests."""

from __future__ import annotations

import threading
from typing import Any, Literal, final

import attrs


__all__ = ["Fault", "FaultPlan"]

Endpoint = Literal["auth", "api", "any"]


@final
@attrs.define(kw_only=True)
class Fault:
    """One scripted failure.

    Attributes:
        endpoint: ``"auth"`` (the auth endpoint), ``"api"`` (every other endpoint) or
            ``"any"``.
        status: Answer with this status (and ``body``) instead of the real response.
        body: JSON body for ``status`` (DRF style by default).
        retry_after: A ``Retry-After`` header value (seconds or an HTTP-date string).
        latency: Seconds to wait before answering (on the fake's clock).
        reset: Close the connection mid-response (the client sees a transport error).
        after_processing: With ``reset`` or ``status``: apply the fault *after* the request
            took effect (the "processed, response lost" case).
        times: How many matching requests this fault applies to.
        path_contains: Only requests whose path contains this text.
    """

    endpoint: Endpoint = "auth"
    status: int | None = None
    body: Any = None
    retry_after: str | None = None
    latency: float = 0.0
    reset: bool = False
    after_processing: bool = False
    times: int = 1
    path_contains: str | None = None

    def matches(self, *, is_auth: bool, path: str) -> bool:
        """Whether this fault applies to a request."""
        if self.times <= 0:
            return False
        if self.endpoint == "auth" and not is_auth:
            return False
        if self.endpoint == "api" and is_auth:
            return False
        return self.path_contains is None or self.path_contains in path


@final
class FaultPlan:
    """An ordered list of faults; the first matching fault with times left is used."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        self.injected = 0

    def add(self, fault: Fault) -> Fault:
        """Schedule ``fault``; returns it (its ``times`` counts down as it fires)."""
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear(self) -> None:
        """Drop every scheduled fault."""
        with self._lock:
            self._faults.clear()

    def take(self, *, is_auth: bool, path: str) -> Fault | None:
        """The fault for this request, if any (counting it down)."""
        with self._lock:
            for fault in self._faults:
                if fault.matches(is_auth=is_auth, path=path):
                    fault.times -= 1
                    self.injected += 1
                    return fault
        return None
