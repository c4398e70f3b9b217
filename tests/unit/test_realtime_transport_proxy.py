"""The environment's proxy settings are read once per process per endpoint."""

from __future__ import annotations

import urllib.request

import pytest

from giosg_visitor.realtime import _transport
from giosg_visitor.realtime._transport import resolve_proxy


@pytest.fixture(autouse=True)
def _fresh_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "https_proxy", "ws_proxy", "wss_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    _transport._environment_proxy.cache_clear()


def test_environment_proxy_honoured_and_read_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("https_proxy", "http://proxy.test:3128")
    calls = 0
    real = urllib.request.getproxies

    def counting() -> dict[str, str]:
        nonlocal calls
        calls += 1
        return real()

    monkeypatch.setattr(urllib.request, "getproxies", counting)
    for _ in range(5):
        assert resolve_proxy("wss://chat.example.com/ws/a") == "http://proxy.test:3128"
        assert resolve_proxy("wss://chat.example.com/ws/b?x=1") == "http://proxy.test:3128"
    assert calls == 1
    assert resolve_proxy("ws://chat.example.com/ws") == "http://proxy.test:3128"
    assert calls == 2


def test_no_proxy_and_no_setting_connect_directly(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_proxy("wss://chat.example.com/ws") is None
    _transport._environment_proxy.cache_clear()
    monkeypatch.setenv("https_proxy", "http://proxy.test:3128")
    monkeypatch.setenv("no_proxy", "chat.example.com")
    assert resolve_proxy("wss://chat.example.com/ws") is None
    assert resolve_proxy("wss://other.example.com/ws") == "http://proxy.test:3128"


def test_wss_specific_setting_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("https_proxy", "http://proxy.test:3128")
    monkeypatch.setenv("wss_proxy", "http://ws-proxy.test:8080")
    assert resolve_proxy("wss://chat.example.com/ws") == "http://ws-proxy.test:8080"
