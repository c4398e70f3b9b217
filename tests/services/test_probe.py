"""``giosg-visitor probe``: the first-contact report, against the fake over real sockets.

In-process runs check what the report says for each socket strategy (raw and SockJS
framing, refusals of every kind), against the fake's router and against a real SockJS
server (our router on sockjs-node, ``tests/sockjs_router``); command runs (``python -m
giosg_visitor probe``) check the exit statuses, the one-line errors, the JSON output, that
nothing is written without ``--store``, and that no issued secret reaches the output even
when the server echoes it.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from giosg_visitor._probe import ProbeReport, StrategyResult, frame_kind, probe, select_headers
from giosg_visitor.testing import FakeGiosg

from .._sockjs_router import SockJSRouter


ORG = "e6a08f51-c250-4074-847b-58d444dbbeb1"
ROOT = Path(__file__).parent.parent.parent


def _result(report: ProbeReport, strategy: str) -> StrategyResult:
    return next(result for result in report.strategies if result.strategy == strategy)


def _issued_secrets(giosg: FakeGiosg) -> list[str]:
    """Every access token and visitor secret the fake handed out."""
    return [*giosg.state.tokens, *giosg.state.visitors]


def _free_port() -> int:
    with socket.socket() as probe_socket:
        probe_socket.bind(("127.0.0.1", 0))
        port: int = probe_socket.getsockname()[1]
    return port


async def _set_authorize(giosg: FakeGiosg, authorize: Callable[[str, str], bool | str]) -> None:
    def apply() -> None:
        giosg.router.authorize = authorize

    await giosg.call(apply)


def _echo_secrets(giosg: FakeGiosg) -> Callable[[str, str], bool | str]:
    """An authorize hook for a hostile server that quotes the token and the secret back.

    Raw sockets are closed (code 4403, the token in the reason); SockJS subscriptions
    are refused with both in the ``__qr__`` reason.
    """

    def authorize(token: str, channel: str) -> bool | str:
        secret = giosg.state.tokens[token].secret
        reason = f"rejected token={token} visitor_secret_id={secret}"
        raw = [c for c in giosg.router.clients if c.framing == "raw" and c.is_live]
        if raw:
            # A close reason holds 123 bytes at most: the token alone.
            giosg.router.drop_all("close", code=4403, reason=f"bad token={token}")
        return reason

    return authorize


# In process: what the report says ---------------------------------------------------------


async def test_probe_reports_raw_and_sockjs_against_the_fake() -> None:
    """Both framings subscribe; SockJS shows open, array and heartbeat frames; as_is 404s."""
    async with FakeGiosg(heartbeat_interval=0.1, rooms=["room-1"]) as giosg:
        report = await probe(ORG, base_url=giosg.base_url, room_id="room-1", listen=0.5)
        subs = await giosg.call(lambda: list(giosg.router.subs))

    assert report.ok
    assert report.exit_status == 0
    assert report.worked == ["raw", "sockjs"]
    assert report.auth.ok
    assert report.auth.status == 200
    assert dict(report.auth.headers)["Server"] == "uvicorn"
    assert report.room is not None
    assert report.room.ok
    assert report.room.status == 200
    assert report.sockjs_info is not None
    assert report.sockjs_info.ok
    assert report.sockjs_info.detail.startswith("websocket: true, cookie_needed: false")
    # The router really received one acknowledged sub per working strategy, each for the
    # visitor's chats channel.
    channel = f"/api/v5/public/visitors/{report.visitor_id}/chats"
    assert [(s.channel, s.allowed) for s in subs] == [(channel, True), (channel, True)]

    raw = _result(report, "raw")
    assert raw.outcome == "subscribed"
    assert raw.handshake_status == 101
    assert raw.url is not None
    assert raw.url.endswith("/router/websocket")
    assert raw.frames.get("text") == 1
    assert not any(kind.startswith("sockjs") for kind in raw.frames)
    assert raw.subscribe_ms is not None
    assert raw.handshake_ms is not None
    assert raw.ping_ms is not None
    assert dict(raw.headers)["Upgrade"] == "websocket"
    assert "websockets" in dict(raw.headers)["Server"]

    sockjs = _result(report, "sockjs")
    assert sockjs.outcome == "subscribed"
    assert sockjs.framing == "sockjs"
    assert sockjs.frames.get("sockjs-open") == 1
    assert sockjs.frames.get("sockjs-array", 0) >= 1
    assert sockjs.frames.get("sockjs-heartbeat", 0) >= 1
    assert sockjs.open_frame_ms is not None

    as_is = _result(report, "as_is")
    assert not as_is.ok
    assert as_is.outcome == "handshake_refused"
    assert as_is.handshake_status == 404
    assert "HTTP 404" in as_is.detail

    text = report.to_text()
    assert "socket raw     OK" in text
    assert "socket as_is   FAILED  HTTP 404" in text
    assert "result: OK, 2 of 3 strategies worked (raw, sockjs)" in text
    assert json.loads(json.dumps(report.to_json()))["worked"] == ["raw", "sockjs"]


@pytest.mark.parametrize(
    ("status", "outcome", "words"),
    [
        (200, "no_upgrade", "HTTP 200 without an upgrade"),
        (302, "redirect", "redirects are not followed"),
        (503, "handshake_refused", "HTTP 503 (the SDK would reconnect)"),
        (403, "handshake_refused", "HTTP 403 (the SDK would renew_then_reconnect)"),
    ],
)
async def test_a_refused_handshake_says_why(status: int, outcome: str, words: str) -> None:
    """The first strategy is refused; the report names the refusal, the next one works."""
    async with FakeGiosg() as giosg:
        await giosg.refuse_handshakes(status, retry_after=7, count=1)
        report = await probe(ORG, base_url=giosg.base_url, listen=0)

    raw = _result(report, "raw")
    assert not raw.ok
    assert raw.outcome == outcome
    assert raw.handshake_status == status
    assert words in raw.detail
    assert dict(raw.headers)["Retry-After"] == "7"
    assert _result(report, "sockjs").ok
    assert report.exit_status == 0


async def test_a_close_right_after_open_and_a_refused_subscription() -> None:
    """A socket closed before the subscription's answer, and a ``__qr__`` refusal."""
    async with FakeGiosg() as giosg:
        await _set_authorize(giosg, _echo_secrets(giosg))
        report = await probe(ORG, base_url=giosg.base_url, strategies=("raw", "sockjs"))
        secrets = _issued_secrets(giosg)

    raw = _result(report, "raw")
    assert raw.outcome == "closed_after_open"
    assert raw.close_code == 4403
    assert "before answering the subscription" in raw.detail
    assert raw.frames.get("close") == 1
    # The reason quoted the token and the secret: both masked.
    assert raw.close_reason is not None
    assert raw.close_reason == "bad token=***"

    sockjs = _result(report, "sockjs")
    assert sockjs.outcome == "subscription_refused"
    assert "rejected token=*** visitor_secret_id=***" in sockjs.detail

    assert not report.ok
    assert report.exit_status == 1
    output = report.to_text() + json.dumps(report.to_json())
    assert secrets
    for secret in secrets:
        assert secret not in output


async def test_server_pings_are_counted() -> None:
    """WebSocket pings from the server (sockjs-node's heartbeat) are a frame kind."""
    async with FakeGiosg() as giosg:
        pings: list[asyncio.Future[Any]] = []

        def allow_and_ping(token: str, channel: str) -> bool | str:
            pings.extend(asyncio.ensure_future(c.ws.ping()) for c in giosg.router.clients)
            return True

        await _set_authorize(giosg, allow_and_ping)
        report = await probe(ORG, base_url=giosg.base_url, strategies=("raw",), listen=0.3)

    raw = _result(report, "raw")
    assert raw.ok
    assert raw.frames.get("ping") == 1


async def test_a_socket_url_off_the_allowed_hosts_is_not_opened() -> None:
    """A ``socket_url`` on a foreign host: no socket is opened, the report says why."""
    async with FakeGiosg() as giosg:

        def foreign(payload: dict[str, Any]) -> dict[str, Any]:
            return {**payload, "socket_url": "https://router.example.net/router"}

        giosg.state.auth_response_hook = foreign
        report = await probe(ORG, base_url=giosg.base_url)

    assert [result.outcome for result in report.strategies] == ["untrusted_url"] * 3
    assert report.sockjs_info is None  # nothing is sent to that host
    assert "not on the allowed hosts list" in report.strategies[0].detail
    assert report.exit_status == 1


async def test_a_rejected_organization_stops_before_the_sockets() -> None:
    async with FakeGiosg(organizations={"another-org"}) as giosg:
        report = await probe(ORG, base_url=giosg.base_url)
        handshakes = await giosg.call(lambda: giosg.router.handshakes)

    assert report.error is not None
    assert report.error.startswith("the organization was rejected: auth answered HTTP 404")
    assert report.auth.status == 404
    assert report.strategies == ()
    assert report.exit_status == 2
    assert handshakes == 0


def test_frame_kinds_and_header_selection() -> None:
    assert [frame_kind(t) for t in ("o", "h", 'a["x"]', 'c[3000,"x"]', '["__qr__"]')] == [
        "sockjs-open",
        "sockjs-heartbeat",
        "sockjs-array",
        "sockjs-close",
        "text",
    ]
    headers = [("set-cookie", "session=abc"), ("via", "1.1 a"), ("VIA", "1.1 b"), ("date", "d")]
    assert select_headers(headers) == (("Via", "1.1 a"), ("Via", "1.1 b"), ("Date", "d"))


# The command --------------------------------------------------------------------------------


async def _command(*args: str, backend: str, cwd: Path) -> tuple[int, str, str]:
    with anyio.fail_after(120):
        result = await anyio.run_process(
            [sys.executable, "-m", "giosg_visitor", "--backend", backend, "probe", *args],
            cwd=cwd,
            check=False,
        )
    return result.returncode, result.stdout.decode(), result.stderr.decode()


async def test_command_probe_fake(anyio_backend: str, tmp_path: Path) -> None:
    """``python -m giosg_visitor probe --fake``: a report, exit 0, and no file written."""
    status, out, err = await _command("--fake", "--room", "r", backend=anyio_backend, cwd=tmp_path)
    assert status == 0, err
    assert err == ""
    assert "socket raw     OK      HTTP 101" in out
    assert "socket sockjs  OK      HTTP 101" in out
    assert "socket as_is   FAILED  HTTP 404" in out
    assert "sockjs-heartbeat" in out
    assert "room           OK      HTTP 200" in out
    assert f"backend {anyio_backend}" in out
    assert await anyio.Path(tmp_path).exists()
    assert [path async for path in anyio.Path(tmp_path).iterdir()] == []


async def test_command_json_and_store(anyio_backend: str, tmp_path: Path) -> None:
    """``--json`` prints the report as JSON; ``--store`` keeps the visitor in that file."""
    store = tmp_path / "probe.json"
    async with FakeGiosg() as giosg:
        status, out, err = await _command(
            "--org",
            ORG,
            "--base-url",
            giosg.base_url,
            "--store",
            str(store),
            "--json",
            "--strategy",
            "sockjs",
            backend=anyio_backend,
            cwd=tmp_path,
        )
        secrets = _issued_secrets(giosg)
    assert status == 0, err
    report = json.loads(out)
    assert report["ok"] is True
    assert report["worked"] == ["sockjs"]
    assert [s["strategy"] for s in report["strategies"]] == ["sockjs"]
    assert report["strategies"][0]["frames"]["sockjs-open"] == 1
    assert report["versions"]["backend"] == anyio_backend
    assert store.exists()
    stored = store.read_text()
    # The store holds the secret (that is what it is for); the output never does.
    assert any(secret in stored for secret in secrets)
    for secret in secrets:
        assert secret not in out


async def test_command_never_prints_an_issued_secret(anyio_backend: str, tmp_path: Path) -> None:
    """A server that echoes the token and the visitor secret: the output masks both."""
    async with FakeGiosg() as giosg:
        await _set_authorize(giosg, _echo_secrets(giosg))
        text_run = await _command(
            "--org", ORG, "--base-url", giosg.base_url, backend=anyio_backend, cwd=tmp_path
        )
        json_run = await _command(
            "--org",
            ORG,
            "--base-url",
            giosg.base_url,
            "--json",
            backend=anyio_backend,
            cwd=tmp_path,
        )
        secrets = _issued_secrets(giosg)
    for status, out, err in (text_run, json_run):
        assert status == 1, err
        assert "visitor_secret_id=***" in out
        for secret in secrets:
            assert secret not in out
            assert secret not in err
    assert len(secrets) == 4  # two visitors: a token and a secret each


async def test_command_exit_status_when_no_strategy_works(
    anyio_backend: str, tmp_path: Path
) -> None:
    async with FakeGiosg() as giosg:
        await giosg.refuse_handshakes(403)
        status, out, err = await _command(
            "--org", ORG, "--base-url", giosg.base_url, backend=anyio_backend, cwd=tmp_path
        )
    assert status == 1, err
    assert "result: FAILED, none of 3 strategies worked" in out
    assert "HTTP 403 (the SDK would renew_then_reconnect)" in out


async def test_command_rejected_organization(anyio_backend: str, tmp_path: Path) -> None:
    """A rejected organization: exit 2 and one clear line on stderr."""
    async with FakeGiosg(organizations={"another-org"}) as giosg:
        status, out, err = await _command(
            "--org", ORG, "--base-url", giosg.base_url, backend=anyio_backend, cwd=tmp_path
        )
    assert status == 2
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(
        "giosg-visitor probe: error: the organization was rejected: auth answered HTTP 404"
    )
    assert "result: FAILED before the sockets" in out


async def test_command_without_network(anyio_backend: str, tmp_path: Path) -> None:
    """Nothing listens at the API origin: exit 2 and one clear line on stderr."""
    base_url = f"http://127.0.0.1:{_free_port()}"
    status, _, err = await _command(
        "--org", ORG, "--base-url", base_url, backend=anyio_backend, cwd=tmp_path
    )
    assert status == 2
    assert err.splitlines() == [
        "giosg-visitor probe: error: no network: could not reach the API "
        "(visitor auth: ConnectError)"
    ]


async def test_command_needs_an_organization(anyio_backend: str, tmp_path: Path) -> None:
    status, out, err = await _command(backend=anyio_backend, cwd=tmp_path)
    assert status == 2
    assert out == ""
    assert err == "giosg-visitor probe: error: --org is required (or --fake)\n"


# Against a real SockJS server ------------------------------------------------------------


async def test_probe_against_a_real_sockjs_node_router(sockjs_router: SockJSRouter) -> None:
    """sockjs-node: both framings subscribe, framed sessions heartbeat with WebSocket
    pings, and the prefix itself is a plain page (200 without an upgrade)."""
    async with FakeGiosg(socket_url=sockjs_router.socket_url) as giosg:
        await sockjs_router.attach(giosg)
        report = await probe(ORG, base_url=giosg.base_url, listen=4 * sockjs_router.heartbeat)
        stats = await sockjs_router.stats()

    assert report.worked == ["raw", "sockjs"]
    assert report.exit_status == 0
    assert stats["subs"] == 2
    assert stats["subs_refused"] == 0
    assert report.sockjs_info is not None
    assert report.sockjs_info.detail.startswith("websocket: true")

    raw = _result(report, "raw")
    assert raw.frames.get("text") == 1
    assert "ping" not in raw.frames  # sockjs-node never heartbeats its raw endpoint

    sockjs = _result(report, "sockjs")
    assert sockjs.frames.get("sockjs-open") == 1
    assert sockjs.frames.get("sockjs-array") == 1
    assert sockjs.frames.get("ping", 0) >= 2
    assert "sockjs-heartbeat" not in sockjs.frames

    as_is = _result(report, "as_is")
    assert as_is.outcome == "no_upgrade"
    assert as_is.handshake_status == 200


async def test_command_against_a_real_sockjs_node_router_that_refuses_a_sub(
    sockjs_router: SockJSRouter, anyio_backend: str, tmp_path: Path
) -> None:
    """The command against sockjs-node refusing the first ``sub``: the report says so."""
    async with FakeGiosg(socket_url=sockjs_router.socket_url) as giosg:
        await sockjs_router.attach(giosg)
        await sockjs_router.refuse(next=1)
        status, out, err = await _command(
            "--org",
            ORG,
            "--base-url",
            giosg.base_url,
            "--json",
            backend=anyio_backend,
            cwd=tmp_path,
        )
        secrets = _issued_secrets(giosg)
    assert status == 0, err
    report = json.loads(out)
    outcomes = {s["strategy"]: (s["outcome"], s["detail"]) for s in report["strategies"]}
    assert outcomes["raw"] == (
        "subscription_refused",
        "the subscription was refused: refused by the test",
    )
    assert outcomes["sockjs"][0] == "subscribed"
    assert outcomes["as_is"][0] == "no_upgrade"
    for secret in secrets:
        assert secret not in out
