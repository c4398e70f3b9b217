"""The sans-I/O message-router protocol, the reconnect maths and the close-code table."""

from __future__ import annotations

import json
import logging
from typing import Any

import attrs
import pytest
from hypothesis import given, settings, strategies as st

from giosg_visitor import Secret
from giosg_visitor._redact import RedactingFilter, redact
from giosg_visitor.realtime import (
    Change,
    Closed,
    Heartbeat,
    Opened,
    RealtimeProtocol,
    SubscribeAck,
    SubscribeFailed,
    UnsubscribeAck,
    protocol as protocol_module,
)
from giosg_visitor.realtime._backoff import (
    CloseAction,
    FailureKind,
    ReconnectPolicy,
    ReconnectTracker,
    Verdict,
    classify_close,
    classify_handshake,
)


CHANNEL = "/api/v5/public/visitors/8a60b202474547dbb8ce19737e4c166f/chats"
TOKEN = "eyJhbGciOiJIUzI1NiJ9.payload-of-a-visitor-token.signature"


def sockjs(*messages: Any) -> str:
    """A SockJS ``a`` frame carrying ``messages`` (each JSON-encoded once more)."""
    return "a" + json.dumps([json.dumps(message) for message in messages])


def subscribed(protocol: RealtimeProtocol, channel: str = CHANNEL) -> int:
    """Subscribe and return the query id, discarding the outgoing frame."""
    [query] = protocol.send_subscribe([channel], TOKEN)
    protocol.data_to_send()
    return query


class TestSending:
    def test_sub_frame_shape(self) -> None:
        """A ``sub`` is ``["sub", [channel, token], {"query": n}]`` in its own raw frame."""
        protocol = RealtimeProtocol()
        queries = protocol.send_subscribe([CHANNEL], TOKEN)
        assert queries == [1]
        [frame] = protocol.data_to_send()
        assert json.loads(frame) == ["sub", [CHANNEL, TOKEN], {"query": 1}]
        assert protocol.data_to_send() == []

    def test_query_ids_unique_and_increasing(self) -> None:
        """Query ids increase across subs and unsubs, starting from ``first_query``."""
        protocol = RealtimeProtocol(first_query=41)
        first = protocol.send_subscribe(["/a", "/b", "/c"], TOKEN)
        second = protocol.send_unsubscribe("/a")
        third = protocol.send_subscribe(["/d"], TOKEN)
        assert [*first, second, *third] == [41, 42, 43, 44, 45]
        assert protocol.next_query == 46

    def test_unsub_frame_shape(self) -> None:
        """An ``unsub`` is ``["unsub", [channel], {"query": n}]``."""
        protocol = RealtimeProtocol()
        query = protocol.send_unsubscribe(CHANNEL)
        [frame] = protocol.data_to_send()
        assert json.loads(frame) == ["unsub", [CHANNEL], {"query": query}]

    def test_sockjs_batches_messages_in_one_frame(self) -> None:
        """In SockJS mode all queued messages leave in one array-of-strings frame."""
        protocol = RealtimeProtocol(framing="sockjs")
        protocol.send_subscribe(["/a", "/b"], TOKEN)
        [frame] = protocol.data_to_send()
        messages = [json.loads(text) for text in json.loads(frame)]
        assert messages == [
            ["sub", ["/a", TOKEN], {"query": 1}],
            ["sub", ["/b", TOKEN], {"query": 2}],
        ]

    def test_repr_hides_tokens(self) -> None:
        """The repr never shows queued frames (they hold tokens)."""
        protocol = RealtimeProtocol()
        protocol.send_subscribe([CHANNEL], TOKEN)
        assert TOKEN not in repr(protocol)

    @pytest.mark.parametrize("channels", [[""], "/a"], ids=["empty-channel", "str-not-list"])
    def test_bad_channels_rejected(self, channels: Any) -> None:
        """Empty channel names and a bare ``str`` are programming errors."""
        with pytest.raises((ValueError, TypeError)):
            RealtimeProtocol().send_subscribe(channels, TOKEN)

    def test_unknown_framing_rejected(self) -> None:
        """Only ``raw`` and ``sockjs`` framings exist."""
        with pytest.raises(ValueError, match="framing"):
            RealtimeProtocol(framing="json")  # type: ignore[arg-type]


class TestReceiving:
    def test_ack(self) -> None:
        """``__qr__`` without ``fail`` acknowledges the matching ``sub``."""
        protocol = RealtimeProtocol()
        query = subscribed(protocol)
        protocol.receive_text(json.dumps(["__qr__", [[]], {"query": query}]))
        assert protocol.events_received() == [SubscribeAck(query=query, channel=CHANNEL)]
        assert protocol.pending_queries == 0

    def test_failed_sub(self) -> None:
        """``"fail": true`` refuses the ``sub``; a string first argument is the reason."""
        protocol = RealtimeProtocol()
        query = subscribed(protocol)
        protocol.receive_text(
            json.dumps(["__qr__", ["permission denied"], {"query": query, "fail": True}])
        )
        assert protocol.events_received() == [
            SubscribeFailed(query=query, channel=CHANNEL, reason="permission denied")
        ]

    def test_failed_sub_without_reason(self) -> None:
        """A failure whose first argument is not a string has no reason."""
        protocol = RealtimeProtocol()
        query = subscribed(protocol)
        protocol.receive_text(json.dumps(["__qr__", [None], {"query": query, "fail": True}]))
        [event] = protocol.events_received()
        assert event == SubscribeFailed(query=query, channel=CHANNEL, reason=None)

    def test_unsub_answer(self) -> None:
        """The answer to an ``unsub`` is an :class:`UnsubscribeAck`."""
        protocol = RealtimeProtocol()
        query = protocol.send_unsubscribe(CHANNEL)
        protocol.receive_text(json.dumps(["__qr__", [[]], {"query": query}]))
        assert protocol.events_received() == [UnsubscribeAck(query=query, channel=CHANNEL)]

    def test_unknown_query_skipped(self) -> None:
        """A ``__qr__`` for a query never sent (or answered twice) is counted and skipped."""
        protocol = RealtimeProtocol()
        query = subscribed(protocol)
        ack = json.dumps(["__qr__", [[]], {"query": query}])
        protocol.receive_text(ack)
        protocol.receive_text(ack)
        protocol.receive_text(json.dumps(["__qr__", [[]], {"query": 999}]))
        assert len(protocol.events_received()) == 1
        assert protocol.stats.unknown_query == 2

    @pytest.mark.parametrize(
        ("body", "expected_id"),
        [
            pytest.param(
                {"action": "added", "resourceId": "r1", "resource": {"id": "r1"}}, "r1", id="camel"
            ),
            pytest.param(
                {"action": "added", "resource_id": "r2", "resource": {"id": "x"}}, "r2", id="snake"
            ),
            pytest.param(
                {"action": "changed", "resource": {"id": "r3", "a": 1}}, "r3", id="resource-id"
            ),
            pytest.param({"action": "removed", "resourceId": 7}, "7", id="int-id"),
            pytest.param({"action": "removed"}, None, id="no-id"),
        ],
    )
    def test_changed(self, body: dict[str, Any], expected_id: str | None) -> None:
        """``changed`` accepts ``resourceId`` and ``resource_id`` (and falls back to ``id``)."""
        protocol = RealtimeProtocol()
        protocol.receive_text(json.dumps(["changed", [CHANNEL, body]]))
        [event] = protocol.events_received()
        assert event == Change(
            channel=CHANNEL,
            action=body["action"],
            resource_id=expected_id,
            resource=body.get("resource"),
        )

    def test_changed_channel_from_object(self) -> None:
        """The channel may come from the object's ``channel`` key (current docs' shape)."""
        protocol = RealtimeProtocol()
        body = {"channel": CHANNEL, "action": "changed", "resource_id": "r", "resource": {}}
        protocol.receive_text(json.dumps(["changed", [body]]))
        protocol.receive_text(json.dumps(["changed", [None, body]]))
        events = protocol.events_received()
        assert [event.channel for event in events if isinstance(event, Change)] == [CHANNEL] * 2

    def test_unknown_action_counted(self) -> None:
        """An action other than added/changed/removed is skipped and counted."""
        protocol = RealtimeProtocol()
        protocol.receive_text(json.dumps(["changed", [CHANNEL, {"action": "exploded"}]]))
        assert protocol.events_received() == []
        assert protocol.stats.unknown_action == 1

    @pytest.mark.parametrize(
        ("text", "counter"),
        [
            pytest.param("{not json", "invalid_json", id="invalid-json"),
            pytest.param("", "invalid_json", id="empty"),
            pytest.param('{"a": 1}', "malformed", id="object"),
            pytest.param("[1]", "malformed", id="short-array"),
            pytest.param('["changed", {}]', "malformed", id="args-not-array"),
            pytest.param('["changed", [], 3]', "malformed", id="kwargs-not-object"),
            pytest.param('["changed", ["/c", 5]]', "malformed", id="body-not-object"),
            pytest.param(
                '["changed", ["/c", {"resource": 1, "action": "added"}]]',
                "malformed",
                id="resource-not-object",
            ),
            pytest.param('["changed", [{"action": "added"}]]', "malformed", id="no-channel"),
            pytest.param('["__qr__", [[]], {"query": "1"}]', "malformed", id="query-str"),
            pytest.param('["__qr__", [[]], {"query": true}]', "malformed", id="query-bool"),
            pytest.param('["hello", []]', "unknown_method", id="unknown-method"),
            pytest.param("[" * 100_000, "invalid_json", id="deep-nesting"),
        ],
    )
    def test_malformed_raw_frames_skipped(self, text: str, counter: str) -> None:
        """Malformed frames are counted under the right counter and never raise."""
        protocol = RealtimeProtocol()
        protocol.receive_text(text)
        assert protocol.events_received() == []
        assert getattr(protocol.stats, counter) == 1
        assert protocol.stats.skipped == 1

    def test_skipped_frames_logged_without_contents(self, caplog: pytest.LogCaptureFixture) -> None:
        """The DEBUG log of a skipped frame names the problem, never the frame."""
        protocol = RealtimeProtocol()
        with caplog.at_level(logging.DEBUG, logger="giosg_visitor.realtime"):
            protocol.receive_text(json.dumps(["sub", [CHANNEL, TOKEN], {"query": 1}]))
            protocol.receive_text("garbage " + TOKEN)
        assert caplog.records
        assert TOKEN not in caplog.text


class TestSockJS:
    def test_control_frames(self) -> None:
        """``o``, ``h`` and ``c[code, reason]`` become Opened, Heartbeat and Closed."""
        protocol = RealtimeProtocol(framing="sockjs")
        for frame in ("o", "h", 'c[3000,"Go away!"]'):
            protocol.receive_text(frame)
        assert protocol.events_received() == [
            Opened(),
            Heartbeat(),
            Closed(code=3000, reason="Go away!"),
        ]
        assert protocol.stats.heartbeats == 1

    def test_array_frame_carries_several_messages(self) -> None:
        """An ``a`` frame holds several JSON-encoded messages, parsed in order."""
        protocol = RealtimeProtocol(framing="sockjs")
        query = subscribed(protocol)
        protocol.receive_text(
            sockjs(
                ["__qr__", [[]], {"query": query}],
                ["changed", [CHANNEL, {"action": "added", "resourceId": "m1"}]],
            )
        )
        events = protocol.events_received()
        assert events[0] == SubscribeAck(query=query, channel=CHANNEL)
        assert isinstance(events[1], Change)
        assert events[1].resource_id == "m1"

    def test_bad_message_does_not_cost_its_neighbours(self) -> None:
        """One malformed message in an ``a`` frame is skipped; the others still count."""
        protocol = RealtimeProtocol(framing="sockjs")
        good = json.dumps(["changed", [CHANNEL, {"action": "added", "resourceId": "x"}]])
        protocol.receive_text("a" + json.dumps(["{bad", 5, good]))
        assert len(protocol.events_received()) == 1
        assert protocol.stats.invalid_json == 1
        assert protocol.stats.malformed == 1

    def test_single_message_frame(self) -> None:
        """The legacy ``m"<msg>"`` frame is accepted."""
        protocol = RealtimeProtocol(framing="sockjs")
        message = json.dumps(["changed", [CHANNEL, {"action": "removed", "resourceId": "x"}]])
        protocol.receive_text("m" + json.dumps(message))
        assert len(protocol.events_received()) == 1

    @pytest.mark.parametrize(
        "text",
        ["", "x", "ox", "hh", "a{}", "a[", 'c["x"]', "c[1]", 'm["not a string"]', "[1,2]"],
    )
    def test_malformed_sockjs_frames(self, text: str) -> None:
        """Unknown or malformed SockJS frames are counted and skipped."""
        protocol = RealtimeProtocol(framing="sockjs")
        protocol.receive_text(text)
        assert protocol.events_received() == []
        assert protocol.stats.skipped == 1


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4)
    ),
    max_leaves=20,
)
message_like = st.tuples(
    st.sampled_from(["__qr__", "changed", "sub", "x"]),
    json_values,
    json_values,
).map(list)


class TestFuzz:
    @settings(max_examples=300, deadline=None)
    @given(text=st.text(), framing=st.sampled_from(["raw", "sockjs"]))
    def test_arbitrary_text_never_raises(self, text: str, framing: Any) -> None:
        """Any text at all, in either framing, is parsed or skipped: never an exception."""
        protocol = RealtimeProtocol(framing=framing)
        protocol.send_subscribe(["/a"], TOKEN)
        protocol.receive_text(text)
        protocol.events_received()

    @settings(max_examples=300, deadline=None)
    @given(value=json_values | message_like, framing=st.sampled_from(["raw", "sockjs"]))
    def test_arbitrary_json_never_raises(self, value: Any, framing: Any) -> None:
        """Any JSON value, raw or wrapped in a SockJS frame, never raises."""
        protocol = RealtimeProtocol(framing=framing)
        protocol.send_subscribe(["/a", "/b"], TOKEN)
        text = json.dumps(value)
        protocol.receive_text(text if framing == "raw" else "a" + json.dumps([text]))
        for event in protocol.events_received():
            assert not isinstance(event, Opened | Heartbeat)

    @settings(max_examples=200, deadline=None)
    @given(query=st.integers(min_value=1, max_value=3), fail=json_values)
    def test_qr_answers_each_query_at_most_once(self, query: int, fail: Any) -> None:
        """However ``fail`` is spelled, a query gets one answer and the rest are unknown."""
        protocol = RealtimeProtocol()
        protocol.send_subscribe(["/a", "/b", "/c"], TOKEN)
        frame = json.dumps(["__qr__", [[]], {"query": query, "fail": fail}])
        protocol.receive_text(frame)
        protocol.receive_text(frame)
        assert len(protocol.events_received()) == 1
        assert protocol.stats.unknown_query == 1


def _outcome(protocol: RealtimeProtocol, text: str, *, fast: bool) -> tuple[Any, ...]:
    """What one frame produces: the returned change, the queued events and the stats."""
    returned = protocol.receive_notification(text) if fast else None
    if not fast:
        protocol.receive_text(text)
    events = protocol.events_received()
    return returned, events, attrs.asdict(protocol.stats)


def _json_result(decode: Any, text: str) -> tuple[str, str]:
    try:
        return "ok", repr(decode(text))
    except RecursionError:
        return "error", "RecursionError"
    except ValueError:
        return "error", "ValueError"


HOSTILE_JSON = [
    pytest.param("[NaN, Infinity, -Infinity]", id="nan-infinity"),
    pytest.param("[1e400, -1e400]", id="float-overflow"),
    pytest.param("[123456789012345678901234567890]", id="int-beyond-64-bits"),
    pytest.param("[-9223372036854775809, 18446744073709551616]", id="int-just-beyond"),
    pytest.param("[18446744073709551615, -9223372036854775808]", id="int-64-bit-edges"),
    pytest.param("[" + "9" * 5000 + "]", id="int-too-long-for-str"),
    pytest.param('["\\ud800", "\\udc00x"]', id="lone-surrogate-escapes"),
    pytest.param('["\ud800"]', id="lone-surrogate-char"),
    pytest.param("[" * 100_000, id="deep-nesting"),
    pytest.param("[1] x", id="trailing-garbage"),
    pytest.param('["a\x01"]', id="control-character"),
    pytest.param("\ufeff[1]", id="byte-order-mark"),
    pytest.param('{"a": 1, "a": 2}', id="duplicate-keys"),
    pytest.param("[0.1, -0.0, 5e-324, 1.7976931348623157e308, 1E5]", id="floats"),
    pytest.param('["\\u00e9\\ud83d\\ude00", "\u00e9\U0001f600"]', id="unicode"),
]


class TestFastPath:
    """``receive_notification`` (the read loop's fast path) and the JSON decoder."""

    @pytest.mark.parametrize("text", HOSTILE_JSON)
    def test_decoder_matches_json_loads(self, text: str) -> None:
        """The frame decoder gives json.loads' result, or its kind of error, on hostile JSON."""
        assert _json_result(protocol_module._decode, text) == _json_result(json.loads, text)

    @settings(max_examples=300, deadline=None)
    @given(value=json_values | message_like)
    def test_decoder_matches_json_loads_on_any_json(self, value: Any) -> None:
        """Any JSON value decodes to what json.loads gives."""
        text = json.dumps(value)
        assert _json_result(protocol_module._decode, text) == _json_result(json.loads, text)

    @pytest.mark.parametrize(
        "text",
        [
            pytest.param(
                json.dumps(["changed", [CHANNEL, {"action": "added", "resourceId": "m1"}]]),
                id="minimal",
            ),
            pytest.param(
                json.dumps(
                    [
                        "changed",
                        [CHANNEL, {"action": "removed", "resourceId": "m1", "resource": None}],
                    ]
                ),
                id="resource-null",
            ),
            pytest.param(
                json.dumps(["changed", [CHANNEL, {"action": "changed", "resource": {"id": 7}}]]),
                id="id-from-resource",
            ),
            pytest.param(
                json.dumps(["changed", [{"action": "added", "channel": CHANNEL}]]), id="one-arg"
            ),
            pytest.param(json.dumps(["changed", [CHANNEL, {"action": "added"}], {}]), id="kwargs"),
            pytest.param(json.dumps(["changed", [CHANNEL, {"action": "nope"}]]), id="bad-action"),
            pytest.param(
                json.dumps(["changed", [CHANNEL, {"action": ["added"]}]]), id="list-action"
            ),
            pytest.param(
                json.dumps(["changed", [CHANNEL, {"action": "added", "resource": [1]}]]),
                id="resource-list",
            ),
            pytest.param(json.dumps(["changed", ["", {"action": "added"}]]), id="empty-channel"),
            pytest.param(json.dumps(["__qr__", [[]], {"query": 1}]), id="ack"),
            pytest.param("[NaN]", id="nan"),
            pytest.param("[" * 100_000, id="deep-nesting"),
            pytest.param("not json", id="invalid"),
        ],
    )
    def test_fast_path_equals_full_path(self, text: str) -> None:
        """A frame gives the same events and counts by either path."""
        fast_protocol, full_protocol = RealtimeProtocol(), RealtimeProtocol()
        subscribed(fast_protocol)
        subscribed(full_protocol)
        returned, queued, stats = _outcome(fast_protocol, text, fast=True)
        _, full_events, full_stats = _outcome(full_protocol, text, fast=False)
        assert ([returned] if returned is not None else []) + queued == full_events
        assert stats == full_stats

    @settings(max_examples=300, deadline=None)
    @given(value=json_values | message_like)
    def test_fast_path_equals_full_path_on_any_json(self, value: Any) -> None:
        """Any JSON frame gives the same events and counts by either path."""
        text = json.dumps(value)
        fast_protocol, full_protocol = RealtimeProtocol(), RealtimeProtocol()
        returned, queued, stats = _outcome(fast_protocol, text, fast=True)
        _, full_events, full_stats = _outcome(full_protocol, text, fast=False)
        assert ([returned] if returned is not None else []) + queued == full_events
        assert stats == full_stats

    def test_fast_path_returns_the_change(self) -> None:
        """The common notification is returned, not queued, and equals a built Change."""
        protocol = RealtimeProtocol()
        resource = {"id": "m1", "message": "hi"}
        text = json.dumps(
            ["changed", [CHANNEL, {"action": "added", "resourceId": "m1", "resource": resource}]]
        )
        change = protocol.receive_notification(text)
        assert change == Change(
            channel=CHANNEL, action="added", resource_id="m1", resource=resource
        )
        assert repr(change).startswith("Change(channel=")
        assert protocol.events_received() == []
        assert (protocol.stats.frames, protocol.stats.messages, protocol.stats.events) == (1, 1, 1)

    def test_sockjs_frames_take_the_full_path(self) -> None:
        """In SockJS mode nothing is returned; events are queued as by receive_text."""
        protocol = RealtimeProtocol(framing="sockjs")
        frame = sockjs(["changed", [CHANNEL, {"action": "added", "resourceId": "m1"}]])
        assert protocol.receive_notification(frame) is None
        [event] = protocol.events_received()
        assert isinstance(event, Change)


class TestCloseClassification:
    @pytest.mark.parametrize(
        ("code", "action"),
        [
            pytest.param(None, CloseAction.RECONNECT, id="no-close-frame"),
            *[
                pytest.param(code, CloseAction.RECONNECT, id=str(code))
                for code in (1000, 1001, 1005, 1006, 1008, 1011, 1012, 1013, 1014, 3000, 4000, 4999)
            ],
            *[
                pytest.param(code, CloseAction.RENEW_THEN_RECONNECT, id=str(code))
                for code in (4001, 4003, 4401, 4403)
            ],
            *[
                pytest.param(code, CloseAction.RECONNECT, id=f"protocol-{code}")
                for code in (1002, 1003, 1007, 1009)
            ],
        ],
    )
    def test_close_codes(self, code: int | None, action: CloseAction) -> None:
        """Auth closes (4001/4003/4401/4403) renew then reconnect; every other code reconnects."""
        assert classify_close(code).action is action

    @pytest.mark.parametrize("code", [1002, 1003, 1007, 1009])
    def test_protocol_codes_are_protocol_failures(self, code: int) -> None:
        """1002/1003/1007/1009 feed the protocol-failure counter."""
        assert classify_close(code).kind is FailureKind.PROTOCOL

    @pytest.mark.parametrize(
        ("status", "retry_after", "action", "wait"),
        [
            pytest.param(401, None, CloseAction.RENEW_THEN_RECONNECT, None, id="401"),
            pytest.param(403, None, CloseAction.RENEW_THEN_RECONNECT, None, id="403"),
            pytest.param(404, None, CloseAction.FAIL, None, id="404"),
            pytest.param(400, None, CloseAction.FAIL, None, id="400"),
            pytest.param(302, None, CloseAction.FAIL, None, id="302"),
            pytest.param(429, 7.0, CloseAction.RECONNECT, 7.0, id="429-retry-after"),
            pytest.param(503, 3.0, CloseAction.RECONNECT, 3.0, id="503-retry-after"),
            pytest.param(429, None, CloseAction.RECONNECT, None, id="429"),
            pytest.param(500, 9.0, CloseAction.RECONNECT, None, id="500-ignores-retry-after"),
            pytest.param(502, None, CloseAction.RECONNECT, None, id="502"),
            pytest.param(504, None, CloseAction.RECONNECT, None, id="504"),
            pytest.param(200, None, CloseAction.RECONNECT, None, id="200"),
        ],
    )
    def test_handshake_statuses(
        self, status: int, retry_after: float | None, action: CloseAction, wait: float | None
    ) -> None:
        """401/403 renew; 3xx, 400, 404 fail; 429, 5xx reconnect (Retry-After: 429/503 only)."""
        verdict = classify_handshake(status, retry_after)
        assert verdict.action is action
        assert verdict.retry_after == wait

    def test_auth_rejection_renews_once_then_fails(self) -> None:
        """A first auth rejection renews and reconnects; a second in a row fails."""
        tracker = ReconnectTracker()
        auth = classify_close(4401)
        assert tracker.failed(0.0, auth, 0.5).action is CloseAction.RENEW_THEN_RECONNECT
        assert tracker.failed(1.0, auth, 0.5).action is CloseAction.FAIL

    def test_accepted_token_resets_auth_failures(self) -> None:
        """Once the server accepts a token, the next auth rejection renews again."""
        tracker = ReconnectTracker()
        auth = classify_handshake(401)
        tracker.failed(0.0, auth, 0.5)
        tracker.connected(1.0)
        tracker.authorized()
        assert tracker.failed(2.0, auth, 0.5).action is CloseAction.RENEW_THEN_RECONNECT

    def test_three_protocol_failures_fail(self) -> None:
        """Three consecutive protocol failures (1002/1003/1007/1009) fail the connection."""
        tracker = ReconnectTracker()
        actions = []
        for step, code in enumerate((1009, 1007, 1002)):
            tracker.connected(step * 2.0)
            actions.append(tracker.failed(step * 2.0 + 1, classify_close(code), 0.5).action)
        assert actions == [CloseAction.RECONNECT, CloseAction.RECONNECT, CloseAction.FAIL]

    def test_stable_connection_resets_protocol_failures(self) -> None:
        """A connection that stayed up ``stable_after`` seconds forgets protocol failures."""
        tracker = ReconnectTracker()
        tracker.connected(0.0)
        tracker.failed(1.0, classify_close(1009), 0.5)
        tracker.connected(2.0)
        tracker.failed(3.0, classify_close(1009), 0.5)
        tracker.connected(4.0)
        decision = tracker.failed(100.0, classify_close(1009), 0.5)
        assert decision.action is CloseAction.RECONNECT

    def test_fatal_verdict_fails(self) -> None:
        """A fatal verdict fails at once."""
        tracker = ReconnectTracker()
        assert tracker.failed(0.0, Verdict(kind=FailureKind.FATAL), 0.5).action is CloseAction.FAIL

    def test_retry_after_is_honoured_and_capped(self) -> None:
        """A server ``Retry-After`` is the delay, capped at ``max_retry_after``."""
        tracker = ReconnectTracker(policy=ReconnectPolicy(max_retry_after=60.0))
        assert tracker.failed(0.0, classify_handshake(503, 12.0), 0.99).delay == 12.0
        assert tracker.failed(1.0, classify_handshake(429, 3600.0), 0.99).delay == 60.0


failure_kinds = st.sampled_from([FailureKind.TRANSIENT, FailureKind.PROTOCOL, FailureKind.AUTH])


class TestBackoffSchedule:
    def test_first_retry_within_one_second(self) -> None:
        """The first retry after a drop waits U(0, 1 s)."""
        policy = ReconnectPolicy()
        assert policy.delay(0, 0.0) == 0.0
        assert policy.delay(0, 0.999) < 1.0

    def test_delays_grow_to_the_cap(self) -> None:
        """The ceiling doubles per retry up to 30 s."""
        policy = ReconnectPolicy()
        assert [policy.delay(n, 1.0) for n in range(7)] == [1, 2, 4, 8, 16, 30, 30]

    @settings(max_examples=300, deadline=None)
    @given(
        steps=st.lists(
            st.tuples(
                st.floats(min_value=0, max_value=200),  # time connected before the drop
                st.floats(min_value=0, max_value=1, exclude_max=True),  # jitter draw
                st.booleans(),  # whether the attempt opened a socket at all
            ),
            min_size=1,
            max_size=40,
        )
    )
    def test_schedule_bounds(self, steps: list[tuple[float, float, bool]]) -> None:
        """Every delay is within ReconnectPolicy's bounds for its retry and suspension state."""
        policy = ReconnectPolicy()
        tracker = ReconnectTracker(policy=policy)
        now = 0.0
        retries = 0
        down_since: float | None = now
        for uptime, draw, opened in steps:
            if opened:
                tracker.connected(now)
                opened_at = now
                now += uptime
                # Compare as the tracker does (now - opened_at), not uptime: floats round.
                if now - opened_at >= policy.stable_after:
                    retries = 0
                down_since = now
            assert down_since is not None
            decision = tracker.failed(now, Verdict(kind=FailureKind.TRANSIENT), draw)
            if now - down_since >= policy.suspend_after:
                assert decision.suspended
                assert 24.0 <= decision.delay <= 36.0
            else:
                assert not decision.suspended
                ceiling = 1.0 if retries == 0 else min(30.0, 2.0**retries)
                assert 0.0 <= decision.delay <= ceiling
            retries += 1
            now += decision.delay

    @settings(max_examples=200, deadline=None)
    @given(kinds=st.lists(failure_kinds, min_size=1, max_size=20), draw=st.floats(0, 1))
    def test_escalation_never_retries_forever_on_auth_or_protocol(
        self, kinds: list[FailureKind], draw: float
    ) -> None:
        """Without a successful socket in between, auth fails on the 2nd, protocol on the 3rd."""
        tracker = ReconnectTracker()
        auth = protocol = 0
        for step, kind in enumerate(kinds):
            decision = tracker.failed(float(step), Verdict(kind=kind), draw)
            auth += kind is FailureKind.AUTH
            protocol += kind is FailureKind.PROTOCOL
            expect_fail = auth >= 2 or protocol >= 3
            assert (decision.action is CloseAction.FAIL) == expect_fail
            if expect_fail:
                break


class TestRedaction:
    def test_redact_masks_every_form(self) -> None:
        """Raw, URL-encoded and JSON-escaped forms of a live secret are masked."""
        secret = Secret("tok/with+special=chars")
        text = "a tok/with+special=chars b tok%2Fwith%2Bspecial%3Dchars c"
        assert redact(text) == "a *** b *** c"
        del secret

    def test_filter_masks_formatted_message(self, caplog: pytest.LogCaptureFixture) -> None:
        """The filter masks secrets in the arguments of a log call."""
        secret = Secret("sekrit-token-123")
        test_logger = logging.getLogger("tests.redaction")
        test_logger.addFilter(RedactingFilter())
        try:
            with caplog.at_level(logging.DEBUG, logger="tests.redaction"):
                test_logger.debug("frame %s", json.dumps(["sub", ["/c", secret.reveal()]]))
        finally:
            test_logger.filters.clear()
        assert "sekrit-token-123" not in caplog.text
        assert "***" in caplog.text

    def test_websockets_logger_hides_frame_payloads(self, caplog: pytest.LogCaptureFixture) -> None:
        """websockets' frame DEBUG lines lose their payload (a partial token could show)."""
        from websockets.frames import Frame, Opcode

        from giosg_visitor.realtime._transport import WEBSOCKETS_LOGGER

        frame = Frame(
            Opcode.TEXT, json.dumps(["sub", [CHANNEL, "x" * 40 + "TAILOFTOKEN"]]).encode()
        )
        with caplog.at_level(logging.DEBUG, logger=WEBSOCKETS_LOGGER.name):
            WEBSOCKETS_LOGGER.debug("> %s", frame)
        assert "TAILOFTOKEN" not in caplog.text
        assert "payload not logged" in caplog.text
