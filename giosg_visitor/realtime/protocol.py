"""The Giosg message-router protocol as a sans-I/O state machine.

:class:`RealtimeProtocol` never touches a socket, a clock or an event loop. Like the
protocol objects of websockets, it is driven with four verbs:

* :meth:`~RealtimeProtocol.send_subscribe` / :meth:`~RealtimeProtocol.send_unsubscribe`
  queue outgoing messages and return their query ids;
* :meth:`~RealtimeProtocol.data_to_send` returns the text frames to write;
* :meth:`~RealtimeProtocol.receive_text` takes one incoming text frame;
* :meth:`~RealtimeProtocol.events_received` returns the parsed events.

The wire format (every spelling comes from :mod:`giosg_visitor._facts`): every
application message is a JSON array ``[method, args, kwargs?]``::

    client: ["sub", ["<channel>", "<token>"], {"query": 7}]
            ["unsub", ["<channel>"], {"query": 8}]
    server: ["__qr__", [[]], {"query": 7}]                      subscribed
            ["__qr__", ["reason"], {"query": 7, "fail": true}]  refused
            ["changed", ["<channel>", {"action": ..., "resourceId": ..., "resource": ...}]]

With ``framing="raw"`` each WebSocket text frame is one message. With
``framing="sockjs"`` the server sends ``o`` (open), ``h`` (heartbeat),
``a["<msg>", ...]`` (an array of JSON-encoded messages) and ``c[code, "reason"]``
(close); the client sends a JSON array of JSON-encoded messages.

Incoming data is untrusted. Anything malformed is skipped, counted in
:attr:`RealtimeProtocol.stats` and logged at DEBUG *without* its contents (frames can
carry tokens): :meth:`~RealtimeProtocol.receive_text` never raises.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, Literal, NoReturn, TypeAlias, TypeGuard, final

import attrs
import orjson

from giosg_visitor._facts import (
    ACTION_KEY,
    CHANGED_METHOD,
    CHANNEL_KEY,
    FAIL_KEY,
    QUERY_KEY,
    QUERY_RESPONSE_METHOD,
    RESOURCE_ID_KEYS,
    RESOURCE_KEY,
    RESOURCE_OBJECT_ID_KEY,
    SOCKJS_CLOSE_FRAME,
    SOCKJS_HEARTBEAT_FRAME,
    SOCKJS_MESSAGE_FRAME,
    SOCKJS_MESSAGES_FRAME,
    SOCKJS_OPEN_FRAME,
    SUBSCRIBE_METHOD,
    UNSUBSCRIBE_METHODS,
)

from .events import (
    Action,
    Change,
    Closed,
    Heartbeat,
    Opened,
    ProtocolEvent,
    SubscribeAck,
    SubscribeFailed,
    UnsubscribeAck,
)


__all__ = ["Framing", "ProtocolStats", "RealtimeProtocol"]

logger = logging.getLogger("giosg_visitor.realtime")

#: ``"raw"``: one JSON message per WebSocket frame. ``"sockjs"``: SockJS framing.
Framing: TypeAlias = Literal["raw", "sockjs"]

_ACTION_NAMES: Final[Mapping[str, Action]] = {
    "added": "added",
    "changed": "changed",
    "removed": "removed",
}
_MAX_REASON: Final = 200
#: The notification id spellings, in the order they are tried (then ``resource.id``).
_RESOURCE_ID, _RESOURCE_ID_SNAKE = RESOURCE_ID_KEYS


@final
@attrs.define(kw_only=True)
class ProtocolStats:
    """Counters of what the protocol received and skipped.

    One instance may be shared by the successive protocols of a connection so the counts
    add up across reconnects.

    Attributes:
        frames: Text frames received.
        messages: Application messages parsed (a SockJS ``a`` frame holds several).
        events: Events produced.
        heartbeats: SockJS ``h`` frames.
        invalid_json: Frames or messages that were not valid JSON.
        malformed: Valid JSON of the wrong shape (not an array, wrong element types,
            missing fields, an unknown SockJS frame type).
        unknown_method: Messages whose method is not ``__qr__`` or ``changed``.
        unknown_query: ``__qr__`` answers for a query id we never sent (or answered twice).
        unknown_action: ``changed`` notifications with an action other than
            ``added``/``changed``/``removed``.
    """

    frames: int = 0
    messages: int = 0
    events: int = 0
    heartbeats: int = 0
    invalid_json: int = 0
    malformed: int = 0
    unknown_method: int = 0
    unknown_query: int = 0
    unknown_action: int = 0

    @property
    def skipped(self) -> int:
        """Everything that was dropped as unusable."""
        return (
            self.invalid_json
            + self.malformed
            + self.unknown_method
            + self.unknown_query
            + self.unknown_action
        )


class _SkipError(Exception):
    """Internal: drop the current message and count it under ``counter``."""

    def __init__(self, counter: str, why: str) -> None:
        super().__init__(why)
        self.counter = counter
        self.why = why


@final
class RealtimeProtocol:
    """Sans-I/O state machine for one message-router connection.

    Args:
        framing: ``"raw"`` or ``"sockjs"``.
        first_query: The first query id to use. A connection that reconnects passes the
            next unused id so that ids stay unique across its successive sockets.
        stats: Counters to update; a fresh :class:`ProtocolStats` by default.
    """

    def __init__(
        self,
        *,
        framing: Framing = "raw",
        first_query: int = 1,
        stats: ProtocolStats | None = None,
    ) -> None:
        if framing not in ("raw", "sockjs"):
            raise ValueError(f"framing must be 'raw' or 'sockjs', not {framing!r}")
        self.framing: Framing = framing
        self._sockjs = framing == "sockjs"
        self.stats = stats if stats is not None else ProtocolStats()
        self._next_query = first_query
        self._queries: dict[int, tuple[Literal["sub", "unsub"], str]] = {}
        self._outgoing: list[str] = []
        self._events: list[ProtocolEvent] = []

    def __repr__(self) -> str:
        # Never show the outgoing buffer: ``sub`` messages hold tokens.
        return (
            f"<RealtimeProtocol framing={self.framing} pending_queries={len(self._queries)}"
            f" outgoing={len(self._outgoing)}>"
        )

    def __reduce__(self) -> NoReturn:
        # The outgoing buffer holds ``sub`` frames, and those hold access tokens; a
        # protocol state is tied to one live socket anyway, so nothing is lost.
        raise TypeError("a RealtimeProtocol cannot be pickled (queued frames hold tokens)")

    @property
    def next_query(self) -> int:
        """The query id the next message will use."""
        return self._next_query

    @property
    def pending_queries(self) -> int:
        """How many sent queries still wait for their ``__qr__``."""
        return len(self._queries)

    # Public methods for sending data.

    def send_subscribe(self, channels: Sequence[str], token: str) -> list[int]:
        """Queue one ``sub`` message per channel.

        Args:
            channels: The channels to subscribe to, in order.
            token: The access token that grants them (sent inside each message only).

        Returns:
            The query ids, one per channel, unique and increasing.
        """
        if isinstance(channels, str):
            raise TypeError("channels must be a sequence of channel names, not a str")
        queries = []
        for channel in channels:
            query = self._take_query("sub", channel)
            self._outgoing.append(_dumps([SUBSCRIBE_METHOD, [channel, token], {QUERY_KEY: query}]))
            queries.append(query)
        return queries

    def send_unsubscribe(self, channel: str) -> int:
        """Queue an ``unsub`` message.

        Args:
            channel: The channel to leave.

        Returns:
            The query id of the message.
        """
        query = self._take_query("unsub", channel)
        self._outgoing.append(_dumps([UNSUBSCRIBE_METHODS[0], [channel], {QUERY_KEY: query}]))
        return query

    def data_to_send(self) -> list[str]:
        """Return the text frames to write, in order, and forget them.

        In SockJS mode all queued messages travel in one frame: pipelined subscriptions
        cost one write.
        """
        if not self._outgoing:
            return []
        messages, self._outgoing = self._outgoing, []
        if self.framing == "sockjs":
            return [_dumps(messages)]
        return messages

    # Public methods for receiving data.

    def receive_text(self, text: str) -> None:
        """Parse one incoming text frame. Never raises; bad input is counted and skipped.

        Args:
            text: The frame's text.
        """
        self.stats.frames += 1
        try:
            if self.framing == "sockjs":
                self._receive_sockjs(text)
            else:
                self._receive_message(text)
        except _SkipError as skip:
            self._skip(skip)
        except Exception:  # pragma: no cover - a safety net: the read loop must survive
            self.stats.malformed += 1
            logger.debug("skipped a frame: unexpected parser error", exc_info=False)

    def receive_notification(self, text: str) -> Change | None:
        """Parse one incoming text frame; return it if it is one well-formed notification.

        The read loop's fast path. A raw frame that is exactly ``["changed", [channel,
        {"action": ..., "resourceId": "...", ...}]]`` with a known action and an object (or
        no) ``resource`` is returned as its :class:`~giosg_visitor.realtime.events.Change`
        and not queued. Any other frame is handled exactly as :meth:`receive_text` handles
        it (its events wait in :meth:`events_received`) and ``None`` is returned. The stats
        count the same either way. Never raises.

        Args:
            text: The frame's text.
        """
        if self._sockjs:
            self.receive_text(text)
            return None
        stats = self.stats
        try:
            message = _decode(text)
        except (ValueError, RecursionError):
            stats.frames += 1
            stats.messages += 1
            self._skip(_SkipError("invalid_json", "not valid JSON"))
            return None
        # Cheap exact-type checks for the common shape; anything unusual (including
        # every hostile frame) takes the full validation below.
        if type(message) is list and len(message) == 2 and message[0] == CHANGED_METHOD:
            args = message[1]
            if type(args) is list and len(args) == 2:
                channel, body = args
                if type(channel) is str and channel and type(body) is dict:
                    action = body.get(ACTION_KEY)
                    resource = body.get(RESOURCE_KEY)
                    resource_id = body.get(_RESOURCE_ID)
                    if (
                        type(action) is str
                        and (known := _ACTION_NAMES.get(action)) is not None
                        and (resource is None or type(resource) is dict)
                        and type(resource_id) is str
                        and resource_id
                    ):
                        stats.frames += 1
                        stats.messages += 1
                        stats.events += 1
                        return _new_change(channel, known, resource_id, resource)
        stats.frames += 1
        stats.messages += 1
        try:
            self._receive_parsed(message)
        except _SkipError as skip:
            self._skip(skip)
        except Exception:  # pragma: no cover - a safety net: the read loop must survive
            stats.malformed += 1
            logger.debug("skipped a frame: unexpected parser error", exc_info=False)
        return None

    def events_received(self) -> list[ProtocolEvent]:
        """Return the events parsed since the last call, in order, and forget them."""
        events, self._events = self._events, []
        return events

    # Private methods.

    def _take_query(self, kind: Literal["sub", "unsub"], channel: str) -> int:
        if not isinstance(channel, str) or not channel:
            raise ValueError("a channel must be a non-empty str")
        query = self._next_query
        self._next_query += 1
        self._queries[query] = (kind, channel)
        return query

    def _skip(self, skip: _SkipError) -> None:
        setattr(self.stats, skip.counter, getattr(self.stats, skip.counter) + 1)
        # Only the reason: the frame itself may hold a token.
        logger.debug("skipped a realtime frame: %s", skip.why)

    def _emit(self, event: ProtocolEvent) -> None:
        self.stats.events += 1
        self._events.append(event)

    def _receive_sockjs(self, text: str) -> None:
        if not text:
            raise _SkipError("malformed", "empty SockJS frame")
        kind, body = text[0], text[1:]
        if kind == SOCKJS_OPEN_FRAME and not body:
            self._emit(Opened())
        elif kind == SOCKJS_HEARTBEAT_FRAME and not body:
            self.stats.heartbeats += 1
            self._emit(Heartbeat())
        elif kind == SOCKJS_MESSAGES_FRAME:
            messages = _loads(body)
            if not isinstance(messages, list):
                raise _SkipError("malformed", "SockJS 'a' frame is not an array")
            for message in messages:
                # One bad message must not cost the others of the same frame.
                try:
                    if not isinstance(message, str):
                        raise _SkipError("malformed", "SockJS message is not a string")
                    self._receive_message(message)
                except _SkipError as skip:
                    self._skip(skip)
        elif kind == SOCKJS_MESSAGE_FRAME:
            message = _loads(body)
            if not isinstance(message, str):
                raise _SkipError("malformed", "SockJS 'm' frame is not a string")
            self._receive_message(message)
        elif kind == SOCKJS_CLOSE_FRAME:
            close = _loads(body)
            if (
                not isinstance(close, list)
                or len(close) != 2
                or not _is_int(close[0])
                or not isinstance(close[1], str)
            ):
                raise _SkipError("malformed", "SockJS 'c' frame is not [code, reason]")
            self._emit(Closed(code=close[0], reason=close[1][:_MAX_REASON]))
        else:
            raise _SkipError("malformed", "unknown SockJS frame type")

    def _receive_message(self, text: str) -> None:
        self.stats.messages += 1
        self._receive_parsed(_loads(text))

    def _receive_parsed(self, message: Any) -> None:
        if not isinstance(message, list) or not 2 <= len(message) <= 3:
            raise _SkipError("malformed", "message is not a [method, args, kwargs?] array")
        method, args = message[0], message[1]
        if not isinstance(args, list):
            raise _SkipError("malformed", "message method or args have the wrong type")
        if len(message) == 3 and not isinstance(message[2], dict):
            raise _SkipError("malformed", "message kwargs is not an object")
        # The hot path first: notifications outnumber everything else.
        if method == CHANGED_METHOD:
            self._receive_changed(args)
        elif method == QUERY_RESPONSE_METHOD:
            self._receive_query_response(args, message[2] if len(message) == 3 else {})
        elif not isinstance(method, str):
            raise _SkipError("malformed", "message method or args have the wrong type")
        else:
            raise _SkipError("unknown_method", "unknown message method")

    def _receive_query_response(self, args: list[Any], kwargs: dict[str, Any]) -> None:
        query = kwargs.get(QUERY_KEY)
        if not _is_int(query):
            raise _SkipError("malformed", f"{QUERY_RESPONSE_METHOD} without an integer query id")
        pending = self._queries.pop(query, None)
        if pending is None:
            raise _SkipError(
                "unknown_query", f"{QUERY_RESPONSE_METHOD} for a query id that is not pending"
            )
        kind, channel = pending
        failed = kwargs.get(FAIL_KEY) is True or kwargs.get(FAIL_KEY) == 1
        if kind == "unsub":
            self._emit(UnsubscribeAck(query=query, channel=channel))
        elif failed:
            reason = args[0] if args and isinstance(args[0], str) else None
            if reason is not None:
                reason = reason[:_MAX_REASON]
            self._emit(SubscribeFailed(query=query, channel=channel, reason=reason))
        else:
            self._emit(SubscribeAck(query=query, channel=channel))

    def _receive_changed(self, args: list[Any]) -> None:
        # Draft shape: [channel, {...}]; also accept [{... "channel": ...}].
        if len(args) == 2 and isinstance(args[1], dict):
            outer, body = args[0], args[1]
        elif len(args) == 1 and isinstance(args[0], dict):
            outer, body = None, args[0]
        else:
            raise _SkipError("malformed", "changed args are not [channel, object]")
        channel = outer if isinstance(outer, str) and outer else body.get(CHANNEL_KEY)
        if not isinstance(channel, str) or not channel:
            raise _SkipError("malformed", "changed notification without a channel")
        action = body.get(ACTION_KEY)
        if not isinstance(action, str):
            raise _SkipError("malformed", "changed notification without an action")
        known = _ACTION_NAMES.get(action)
        if known is None:
            raise _SkipError("unknown_action", "changed notification with an unknown action")
        resource = body.get(RESOURCE_KEY)
        if resource is not None and not isinstance(resource, dict):
            raise _SkipError("malformed", "changed resource is not an object")
        resource_id = body.get(_RESOURCE_ID)
        if not isinstance(resource_id, str) or not resource_id:
            resource_id = _resource_id(body, resource)
        self.stats.events += 1
        self._events.append(_new_change(channel, known, resource_id, resource))


_change_new = Change.__new__
_set_channel = Change.__dict__["channel"].__set__
_set_action = Change.__dict__["action"].__set__
_set_resource_id = Change.__dict__["resource_id"].__set__
_set_resource = Change.__dict__["resource"].__set__


def _new_change(
    channel: str, action: Action, resource_id: str | None, resource: Mapping[str, Any] | None
) -> Change:
    """``Change(...)`` at half the cost: the frozen class's slots are set directly.

    Equivalent to the attrs ``__init__`` (which has no validators or converters to skip);
    the read loop builds one per notification, so it matters.
    """
    change = _change_new(Change)
    _set_channel(change, channel)
    _set_action(change, action)
    _set_resource_id(change, resource_id)
    _set_resource(change, resource)
    return change


def _resource_id(body: Mapping[str, Any], resource: Mapping[str, Any] | None) -> str | None:
    for value in (
        body.get(_RESOURCE_ID),
        body.get(_RESOURCE_ID_SNAKE),
        resource.get(RESOURCE_OBJECT_ID_KEY) if resource is not None else None,
    ):
        if isinstance(value, str) and value:
            return value
        if _is_int(value):
            return str(value)
    return None


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


#: ASCII digits to ``0``, every other byte to a space: long digit runs become ``000...``.
_DIGIT_RUNS: Final = bytes(48 if 48 <= byte <= 57 else 32 for byte in range(256))
#: Integers of 19 digits or more may be beyond 64 bits, where orjson returns a float.
_LONG_NUMBER: Final = b"0" * 19


def _decode_orjson(text: str) -> Any:
    """``json.loads(text)``, computed by orjson whenever orjson gives exactly that result.

    orjson refuses what ``json.loads`` takes (NaN, Infinity, out-of-range floats, lone
    surrogates) and returns floats for integers beyond 64 bits: such frames, rare and
    usually hostile, are decoded by ``json.loads``, so the result or the error is the
    standard library's. (The one difference left: nesting. Both refuse deep nesting, at
    about 1,000 levels; orjson's limit is exactly 1,024, ``json.loads``'s depends on the
    stack depth of the caller.)
    """
    try:
        data = text.encode()
    except UnicodeEncodeError:  # a lone surrogate: only json.loads takes it
        return json.loads(text)
    if _LONG_NUMBER in data.translate(_DIGIT_RUNS):
        return json.loads(text)
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(text)


#: The JSON decoder of incoming frames (the benchmarks swap in ``json.loads`` to show
#: what the decoder contributes).
_decode: Callable[[str], Any] = _decode_orjson


def _loads(text: str) -> Any:
    try:
        return _decode(text)
    except (ValueError, RecursionError) as exc:
        raise _SkipError("invalid_json", "not valid JSON") from exc


def _dumps(value: object) -> str:
    return json.dumps(value, separators=(",", ":"))
