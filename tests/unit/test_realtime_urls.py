"""The socket endpoint strategy and the checks made before a token can reach a host."""

from __future__ import annotations

import random
import re

import pytest
from hypothesis import given, strategies as st

from giosg_visitor._http import is_loopback_host
from giosg_visitor.errors import UntrustedEndpointError
from giosg_visitor.realtime._urls import host_allowed, socket_endpoint


GIOSG = "https://messagerouter.giosg.com/003/2/router"


class TestStrategies:
    def test_raw_is_default(self) -> None:
        """The default endpoint is ``<socket_url>/websocket`` over wss."""
        assert socket_endpoint(GIOSG) == "wss://messagerouter.giosg.com/003/2/router/websocket"

    def test_trailing_slash(self) -> None:
        """A trailing slash on ``socket_url`` does not double up."""
        url = socket_endpoint(GIOSG + "/")
        assert url == "wss://messagerouter.giosg.com/003/2/router/websocket"

    def test_sockjs(self) -> None:
        """SockJS mode adds ``/<3 digits>/<session>/websocket``."""
        url = socket_endpoint(GIOSG, strategy="sockjs", rng=random.Random(1))
        match = re.fullmatch(
            r"wss://messagerouter\.giosg\.com/003/2/router/(\d{3})/([a-z0-9]{8,})/websocket", url
        )
        assert match is not None

    def test_sockjs_sessions_differ(self) -> None:
        """Each SockJS URL gets a fresh session id."""
        rng = random.Random(2)
        urls = {socket_endpoint(GIOSG, strategy="sockjs", rng=rng) for _ in range(20)}
        assert len(urls) == 20

    def test_as_is(self) -> None:
        """``as_is`` only switches the scheme."""
        assert (
            socket_endpoint(GIOSG, strategy="as_is") == "wss://messagerouter.giosg.com/003/2/router"
        )

    @pytest.mark.parametrize(
        ("url", "expected"),
        [
            pytest.param("https://x.giosg.com/r", "wss://x.giosg.com/r/websocket", id="https"),
            pytest.param("wss://x.giosg.com/r", "wss://x.giosg.com/r/websocket", id="wss"),
            pytest.param(
                "http://127.0.0.1:8080/router",
                "ws://127.0.0.1:8080/router/websocket",
                id="http-loopback",
            ),
            pytest.param(
                "ws://localhost:1/router", "ws://localhost:1/router/websocket", id="ws-localhost"
            ),
            pytest.param("http://[::1]:9/r", "ws://[::1]:9/r/websocket", id="ipv6-loopback"),
            pytest.param(
                "HTTPS://X.GIOSG.COM:443/r?x=1",
                "wss://X.GIOSG.COM:443/r/websocket?x=1",
                id="case-port-query",
            ),
        ],
    )
    def test_scheme_switch(self, url: str, expected: str) -> None:
        """https->wss and http->ws, keeping host, port and query."""
        assert socket_endpoint(url) == expected

    def test_unknown_strategy(self) -> None:
        """An unknown strategy is a programming error."""
        with pytest.raises(ValueError, match="strategy"):
            socket_endpoint(GIOSG, strategy="long-poll")  # type: ignore[arg-type]


class TestChecks:
    @pytest.mark.parametrize(
        "url",
        [
            pytest.param("http://messagerouter.giosg.com/router", id="plain-http"),
            pytest.param("ws://messagerouter.giosg.com/router", id="plain-ws"),
            pytest.param("ftp://messagerouter.giosg.com/router", id="ftp"),
            pytest.param("https://user:pw@messagerouter.giosg.com/r", id="userinfo"),
            pytest.param("https://messagerouter.giosg.com@evil.net/r", id="at-trick"),
            pytest.param("https://evil.net\\@giosg.com/r", id="backslash"),
            pytest.param("https://giosg.com.evil.net/r", id="suffix-lookalike"),
            pytest.param("https://evilgiosg.com/r", id="prefix-lookalike"),
            pytest.param("https://giosg.co/r", id="other-tld"),
            pytest.param("https://evil.net/r", id="foreign"),
            pytest.param("https://10.0.0.1/r", id="private-ip"),
            pytest.param("https:///r", id="no-host"),
            pytest.param("https://giosg.com:99999/r", id="bad-port"),
            pytest.param("https://gios g.com/r", id="space"),
            pytest.param("https://x.giosg.com\n/r", id="newline"),
            pytest.param("http://127.0.0.1.evil.net/r", id="loopback-lookalike"),
            pytest.param("", id="empty"),
            pytest.param("//giosg.com/r", id="no-scheme"),
        ],
    )
    def test_refused(self, url: str) -> None:
        """Untrusted URLs raise before any I/O, and the error never carries a token."""
        with pytest.raises(UntrustedEndpointError):
            socket_endpoint(url)

    @pytest.mark.parametrize(
        "url",
        [
            "https://giosg.com/router",
            "https://messagerouter.giosg.com/router",
            "https://a.b.giosg.com/router",
            "wss://service.giosg.com/router",
            "https://messagerouter.giosg.com./router",
            "http://127.0.0.2:1/router",
            "https://localhost/router",
        ],
    )
    def test_allowed(self, url: str) -> None:
        """giosg.com, its subdomains and loopback are allowed by default."""
        assert socket_endpoint(url).startswith(("wss://", "ws://"))

    def test_custom_allowlist(self) -> None:
        """A custom allowlist replaces the default (loopback stays allowed)."""
        assert socket_endpoint("https://rt.example.org/r", allowed_hosts=["rt.example.org"])
        with pytest.raises(UntrustedEndpointError):
            socket_endpoint(GIOSG, allowed_hosts=["rt.example.org"])
        assert socket_endpoint("http://127.0.0.1/r", allowed_hosts=[])

    def test_allowlist_must_not_be_a_string(self) -> None:
        """A bare string is not an allowlist (it would match single characters)."""
        with pytest.raises(TypeError):
            socket_endpoint(GIOSG, allowed_hosts="giosg.com")

    @pytest.mark.parametrize(
        ("host", "pattern", "allowed"),
        [
            ("giosg.com", "giosg.com", True),
            ("GIOSG.com", "giosg.com", True),
            ("a.giosg.com", "giosg.com", False),
            ("giosg.com", "*.giosg.com", False),
            ("a.giosg.com", "*.giosg.com", True),
            ("a.b.giosg.com", "*.giosg.com", True),
            (".giosg.com", "*.giosg.com", False),
            ("agiosg.com", "*.giosg.com", False),
            ("giosg.com.evil.net", "*.giosg.com", False),
            ("xn--gisg-xqa.com", "giosg.com", False),
            ("giosg\u3002com", "giosg.com", False),
        ],
    )
    def test_host_patterns(self, host: str, pattern: str, allowed: bool) -> None:
        """Exact patterns match one host; ``*.`` patterns match subdomains only."""
        assert host_allowed(host, [pattern]) is allowed

    @pytest.mark.parametrize(
        ("host", "loopback"),
        [
            ("127.0.0.1", True),
            ("127.9.9.9", True),
            ("::1", True),
            ("localhost", True),
            ("LocalHost.", True),
            ("127.0.0.1.", True),
            ("[::1]", True),
            ("128.0.0.1", False),
            ("[::2]", False),
            ("localhost.evil.net", False),
        ],
    )
    def test_loopback(self, host: str, loopback: bool) -> None:
        """Loopback means 127.0.0.0/8, ::1 and localhost (brackets, a root dot allowed)."""
        assert is_loopback_host(host) is loopback

    @given(
        label=st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-.", min_size=1, max_size=30)
    )
    def test_only_giosg_hosts_pass(self, label: str) -> None:
        """Any host that passes the default check is giosg.com or ends with ``.giosg.com``."""
        url = f"https://{label}/router"
        try:
            socket_endpoint(url)
        except UntrustedEndpointError:
            return
        host = label.lower().rstrip(".")
        assert host == "giosg.com" or host.endswith(".giosg.com")
