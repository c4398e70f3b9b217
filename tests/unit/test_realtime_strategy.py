"""The socket strategy chooser, stepped by hand: what "auto" tries, learns and gives up on."""

from __future__ import annotations

from giosg_visitor.errors import ConnectionClosedError
from giosg_visitor.realtime import HandshakeRejectedError
from giosg_visitor.realtime._backoff import Drop, FailureKind
from giosg_visitor.realtime._strategy import StrategyChooser


HOST = "router.example:443"


def refused(status: int) -> Drop:
    return Drop.from_error(HandshakeRejectedError(f"HTTP {status}", status_code=status))


def closed(code: int = 1006) -> Drop:
    return Drop.from_error(ConnectionClosedError("closed", code=code))


def test_a_fixed_strategy_is_never_second_guessed() -> None:
    """Outside "auto", a refusal is an ordinary drop for the reconnect rules."""
    chooser = StrategyChooser(strategy="sockjs", framing="auto")
    assert chooser.pick(HOST) == "sockjs"
    attempt = chooser.begin("sockjs", HOST)
    assert attempt.framing == "sockjs"
    drop = refused(404)
    assert chooser.dropped(drop, now=0.0) is drop
    assert chooser.refusals == []


def test_auto_moves_on_and_gives_up_naming_every_refusal() -> None:
    """Each refused endpoint moves on at once; the last refusal makes a fatal drop."""
    chooser = StrategyChooser(strategy="auto", framing="auto")
    tried = []
    outcome = None
    for status in (404, 200, 404):
        derivation = chooser.pick(HOST)
        tried.append(derivation)
        chooser.begin(derivation, HOST)
        outcome = chooser.dropped(refused(status), now=0.0)
        if status != 404 or len(tried) < 3:
            assert outcome is None
    assert tried == ["raw", "sockjs", "as_is"]
    assert outcome is not None
    assert outcome.verdict.kind is FailureKind.FATAL
    assert isinstance(outcome.error, HandshakeRejectedError)
    message = str(outcome.error)
    assert "raw: HTTP 404" in message
    assert "sockjs: HTTP 200 without upgrade" in message
    assert chooser.refusals == []  # used up: the next round starts over


def test_auth_and_server_errors_are_not_refusals() -> None:
    """A 401 or a 503 says the endpoint exists: the usual reconnect rules apply."""
    chooser = StrategyChooser(strategy="auto", framing="auto")
    for status in (401, 503):
        chooser.begin(chooser.pick(HOST), HOST)
        drop = refused(status)
        assert chooser.dropped(drop, now=0.0) is drop
    assert chooser.pick(HOST) == "raw"


def test_a_close_right_after_open_refuses_a_later_one_does_not() -> None:
    """Closed within two seconds of opening, before any protocol: not this endpoint."""
    chooser = StrategyChooser(strategy="auto", framing="auto")
    chooser.begin(chooser.pick(HOST), HOST)
    chooser.opened(10.0)
    assert chooser.dropped(closed(), now=11.0) is None
    assert [r.kind for r in chooser.refusals] == ["closed_after_open"]
    chooser.begin(chooser.pick(HOST), HOST)  # sockjs framing now
    chooser.opened(20.0)
    assert chooser.dropped(closed(), now=40.0) is None  # no SockJS "o" frame ever
    assert [r.kind for r in chooser.refusals] == ["closed_after_open", "no_sockjs_open"]


def test_what_worked_is_remembered_per_host() -> None:
    """Once the server spoke the protocol, the next attempt on that host skips probing."""
    chooser = StrategyChooser(strategy="auto", framing="auto")
    chooser.begin(chooser.pick(HOST), HOST)
    chooser.dropped(refused(404), now=0.0)
    attempt = chooser.begin(chooser.pick(HOST), HOST)
    assert attempt.probing
    chooser.opened(1.0)
    chooser.proved()
    assert chooser.in_use == "sockjs"
    other = StrategyChooser(strategy="auto", framing="auto")
    assert other.pick(HOST) == "sockjs"
    assert not other.begin("sockjs", HOST).probing
    drop = closed()
    assert other.dropped(drop, now=1.5) is drop
