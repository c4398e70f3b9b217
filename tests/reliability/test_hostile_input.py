"""Hostile input. A typed value or a typed error, never a crash; memory bounded.

Property tests (Hypothesis) over every decoder: auth responses, chat resources, store
records, raw bodies, REST bodies and pagination through a live ``Visitor``, and socket
frames through ``RealtimeProtocol``; each input must finish within 50 ms. Then real
sockets: a storm of random frames does not break the read loop, and a 10,000-event burst
to a stalled consumer stays within the subscription's bounded buffer.

The edges this suite found (years 1 and 9999 with a UTC offset; integers beyond float
range in stored records) have their own tests below and are in the strategies too.
"""

from __future__ import annotations

import json
import logging
import random
import time
import tracemalloc
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Final

import anyio
import httpx
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from giosg_visitor import (
    AuthSession,
    GiosgError,
    ProtocolError,
    RetryPolicy,
    Visitor,
)
from giosg_visitor._renewal import RenewalPolicy, normalise_lifetime
from giosg_visitor.models import (
    ChatInfo,
    Membership,
    Message,
    OnlineUser,
    Room,
    VisitorRecord,
    decode_json_object,
)
from giosg_visitor.realtime import (
    Change,
    Closed,
    Gap,
    Heartbeat,
    Opened,
    RealtimeProtocol,
    SubscribeAck,
    SubscribeFailed,
    UnsubscribeAck,
)
from giosg_visitor.testing import MessageRouter

from .._helpers import ORG_ID
from .._router_harness import RouterHarness
from .figures import FIGURES
from .test_realtime_resilience import _connection, _subscribed, _Tokens


LIMIT: Final = 0.05  # seconds per input
CHANNEL: Final = "/api/v5/public/visitors/8a60b202474547dbb8ce19737e4c166f/chats"
FAST: Final = settings(
    max_examples=300,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
LONG: Final = settings(
    max_examples=20_000,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

pytestmark = pytest.mark.canary_fakes_only


def timed(parse: Callable[[], Any], *, again: Callable[[], Any] | None = None) -> Any:
    """Run ``parse``; fail if it took longer than 50 ms twice in a row (once may be noise).

    The second measurement runs ``again`` when given: a stateful parser must not see
    the same input twice (a protocol would count the frame twice), so the caller passes
    the same input on a fresh parser. The first call's result is returned.
    """
    started = time.perf_counter()
    result = parse()
    elapsed = time.perf_counter() - started
    if elapsed >= LIMIT:
        started = time.perf_counter()
        try:
            (again or parse)()
        finally:
            elapsed = time.perf_counter() - started
        assert elapsed < LIMIT, f"one input took {elapsed * 1000:.1f} ms"
    return result


def typed_or_protocol_error(parse: Callable[[], Any], kind: type[Any]) -> None:
    """``parse()`` returns a ``kind`` or raises ProtocolError, nothing else, in time."""

    def run() -> Any:
        try:
            return parse()
        except ProtocolError:
            return None

    result = timed(run)
    assert result is None or isinstance(result, kind)


# Strategies -----------------------------------------------------------------------------------

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**400), max_value=10**400)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=30)
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=25,
)


@st.composite
def timestamps(draw: st.DrawFn) -> str:
    """ISO 8601 timestamps of every shape the parser meets."""
    year = draw(st.integers(1, 9999))
    text = f"{year:04d}-{draw(st.integers(1, 12)):02d}-{draw(st.integers(1, 28)):02d}"
    text += f"T{draw(st.integers(0, 23)):02d}:{draw(st.integers(0, 59)):02d}"
    text += f":{draw(st.integers(0, 59)):02d}"
    if draw(st.booleans()):
        text += f".{draw(st.integers(0, 999)):03d}"
    zone = draw(st.sampled_from(["", "Z", "z", "offset"]))
    if zone == "offset":
        minutes = draw(st.integers(-1439, 1439))
        sign = "-" if minutes < 0 else "+"
        text += f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"
    else:
        text += zone
    return text


def resource(fields: Mapping[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    """Objects with the known fields (each maybe missing or mistyped) and extra keys."""
    plausible = {name: strategy | json_values for name, strategy in fields.items()}
    objects = st.fixed_dictionaries({}, optional=plausible).flatmap(
        lambda known: st.dictionaries(st.text(max_size=8), json_values, max_size=3).map(
            lambda extra: {**extra, **known}
        )
    )
    return objects | json_values


ids = st.text(min_size=1, max_size=40) | st.uuids().map(str)
AUTH = resource(
    {
        "visitor_id": ids,
        "visitor_secret_id": ids,
        "organization_id": ids,
        "socket_url": st.sampled_from(["https://messagerouter.giosg.com/003/2/router", ""]),
        "access_token": ids,
        "expires_at": timestamps(),
        "expires_in": st.integers(-(10**6), 10**12) | st.floats() | st.text(max_size=12),
    }
)
RESOURCES: dict[str, tuple[Callable[[Any], Any], st.SearchStrategy[Any]]] = {
    "chat": (
        ChatInfo.from_api,
        resource(
            {
                "id": ids,
                "room_id": ids,
                "created_at": timestamps(),
                "ended_at": timestamps(),
                "is_ended": st.booleans(),
                "is_waiting": st.booleans(),
                "message_count": st.integers(),
            }
        ),
    ),
    "message": (
        Message.from_api,
        resource(
            {
                "id": ids,
                "type": st.sampled_from(["msg", "join", "leave"]),
                "created_at": timestamps(),
                "sender_type": st.sampled_from(["visitor", "user"]),
                "message": st.text(max_size=50),
            }
        ),
    ),
    "membership": (
        Membership.from_api,
        resource({"member_id": ids, "is_present": st.booleans(), "message_count": st.integers()}),
    ),
    "room": (
        Room.from_api,
        resource({"id": ids, "is_online": st.booleans(), "brand": json_values}),
    ),
    "online_user": (
        OnlineUser.from_api,
        resource({"id": ids, "public_name": st.text(max_size=20), "avatar": json_values}),
    ),
}


@st.composite
def raw_bodies(draw: st.DrawFn) -> bytes:
    """Bodies as bytes: JSON of anything, truncated, BOM-prefixed, invalid UTF-8, empty."""
    kind = draw(st.sampled_from(["json", "truncated", "bom", "binary", "empty", "deep"]))
    if kind == "binary":
        return draw(st.binary(max_size=200))
    if kind == "empty":
        return draw(st.sampled_from([b"", b" ", b"\n", b"null"]))
    if kind == "deep":
        depth = draw(st.integers(100, 100_000))
        return b"[" * depth + b"]" * draw(st.integers(0, depth))
    text = json.dumps(draw(json_values)).encode()
    if kind == "truncated":
        return text[: draw(st.integers(0, max(0, len(text) - 1)))]
    if kind == "bom":
        return b"\xef\xbb\xbf" + text
    return text


# Decoders -------------------------------------------------------------------------------------


@FAST
@given(data=AUTH)
def test_auth_responses_give_a_session_or_a_protocol_error(data: Any) -> None:
    """Any auth response decodes to an AuthSession or ProtocolError; its lifetime is sane."""
    FIGURES.add("fuzz.bodies", 1)
    typed_or_protocol_error(lambda: AuthSession.from_api(data), AuthSession)
    if isinstance(data, dict):
        policy = RenewalPolicy()
        lifetime = timed(lambda: normalise_lifetime(data.get("expires_in"), policy=policy))
        assert policy.min_lifetime <= lifetime <= policy.max_lifetime


@FAST
@given(
    case=st.sampled_from(sorted(RESOURCES)).flatmap(
        lambda name: st.tuples(st.just(name), RESOURCES[name][1])
    )
)
def test_rest_resources_give_a_model_or_a_protocol_error(case: tuple[str, Any]) -> None:
    """Chats, messages, memberships, rooms, online users: a model or ProtocolError."""
    name, data = case
    parse = RESOURCES[name][0]
    FIGURES.add("fuzz.bodies", 1)
    typed_or_protocol_error(lambda: parse(data), object)


@FAST
@given(body=raw_bodies())
def test_raw_bodies_give_an_object_or_a_protocol_error(body: bytes) -> None:
    """Bytes of any kind decode to a JSON object or ProtocolError, stored records too."""
    FIGURES.add("fuzz.bodies", 2)
    typed_or_protocol_error(lambda: decode_json_object(body, where="fuzz"), dict)
    typed_or_protocol_error(lambda: VisitorRecord.loads(body), VisitorRecord)


stored_records = st.fixed_dictionaries(
    {},
    optional={
        "visitor_secret_id": ids | json_values,
        "version": st.integers() | json_values,
        "sessions": st.dictionaries(
            st.text(max_size=5),
            resource(
                {
                    "organization_id": ids,
                    "visitor_id": ids,
                    "socket_url": ids,
                    "access_token": ids,
                    "expires_at": st.floats() | st.integers(-(10**400), 10**400),
                    "lifetime": st.floats() | st.integers(-(10**400), 10**400),
                }
            ),
            max_size=2,
        )
        | json_values,
        "tokens": json_values,
    },
)


@FAST
@given(data=stored_records)
def test_stored_records_give_a_record_or_a_protocol_error(data: Any) -> None:
    """A store file's record of any shape loads as a VisitorRecord or ProtocolError."""
    FIGURES.add("fuzz.bodies", 1)
    text = json.dumps(data)
    typed_or_protocol_error(lambda: VisitorRecord.loads(text), VisitorRecord)


@pytest.mark.parametrize(
    "stamp", ["9999-12-31T23:59:59-01:00", "0001-01-01T00:30:00+01:00"], ids=["9999", "0001"]
)
def test_an_out_of_range_timestamp_is_a_protocol_error(stamp: str) -> None:
    """A timestamp that cannot be converted to UTC is malformed input, not a crash."""
    chat = {"id": "58f5055c-56e0-11e5-9354-6c4008c08dfe", "created_at": stamp}
    with pytest.raises(ProtocolError):
        ChatInfo.from_api(chat)


@pytest.mark.parametrize("field", ["sessions", "tokens"])
def test_a_stored_number_beyond_float_range_is_a_protocol_error(field: str) -> None:
    """A store file holding 10**400 is a malformed record, not a crash."""
    entry: dict[str, Any] = {"access_token": "t" * 20, "expires_at": 10**400, "lifetime": 60}
    if field == "sessions":
        entry |= {"organization_id": ORG_ID, "visitor_id": "v", "socket_url": "https://x"}
    text = json.dumps({"visitor_secret_id": "s" * 20, field: {"name": entry}})
    with pytest.raises(ProtocolError):
        VisitorRecord.loads(text)


# REST bodies and pagination through a live Visitor --------------------------------------------

BASE: Final = "https://service.giosg.com"
TINY_RETRY: Final = RetryPolicy(
    first_delay=0.001, max_delay=0.002, max_attempts=2, max_retry_after=0.01
)
next_links = st.one_of(
    st.none(),
    st.builds(lambda c: f"{BASE}/api/v5/public/visitors/v/chats?cursor={c}", st.text(max_size=5)),
    st.builds(lambda c: f"/api/v5/public/visitors/v/chats?cursor={c}", st.integers(0, 3)),
    st.sampled_from(
        ["https://attacker.example/x", "http://service.giosg.com/x", f"{BASE}:8443/x", "//x/y"]
    ),
    json_values,
)


@st.composite
def pages(draw: st.DrawFn) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """One HTTP answer: status, headers and a body (usually a page, sometimes junk)."""
    status = draw(st.sampled_from([200, 200, 200, 200, 201, 204, 301, 404, 429, 500, 503]))
    headers = []
    if status == 429 and draw(st.booleans()):
        # Any header bytes a server could send (latin-1, no line breaks).
        text = st.text(st.characters(max_codepoint=255, exclude_characters="\r\n"), max_size=30)
        value = draw(text | st.integers(-5, 10**6).map(str))
        headers.append((b"Retry-After", value.encode("latin-1")))
    if draw(st.integers(0, 4)) == 0:
        return status, headers, draw(raw_bodies())
    results = draw(st.lists(RESOURCES["chat"][1], max_size=4) | json_values)
    page = {"next": draw(next_links), "results": results}
    return status, headers, json.dumps(page).encode()


_AUTH_BODY: Final = {
    "visitor_id": "8a60b202474547dbb8ce19737e4c166f",
    "visitor_secret_id": "fuzz-secret-00000000000000000000",
    "organization_id": ORG_ID,
    "socket_url": "https://messagerouter.giosg.com/003/2/router",
    "access_token": "fuzz-token-000000000000000000000",
    "expires_in": 1800,
}


async def _through_a_visitor(answers: list[tuple[int, list[tuple[bytes, bytes]], bytes]]) -> None:
    queue = list(answers)
    origins: set[tuple[str, str, int | None]] = set()

    def handler(request: httpx.Request) -> httpx.Response:
        origins.add((request.url.scheme, request.url.host, request.url.port))
        if request.url.path.endswith("/auth"):
            return httpx.Response(200, json=_AUTH_BODY)
        if not queue:
            return httpx.Response(404, json={"detail": "Not found."})
        status, headers, body = queue.pop(0)
        return httpx.Response(status, headers=headers, content=body)

    async with (
        httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client,
        Visitor(ORG_ID, base_url=BASE, http_client=client, realtime=False, retry=TINY_RETRY) as v,
    ):
        for call in ("chats", "room", "chat"):
            started = time.perf_counter()
            try:
                if call == "chats":
                    chats = [chat async for chat in v.chats()]
                    assert len(chats) <= 4 * len(answers)
                elif call == "room":
                    await v.room("9926bdfa-56e0-11e5-b98c-6c4008c08dfe")
                else:
                    await v.chat("58f5055c-56e0-11e5-9354-6c4008c08dfe")
            except GiosgError:
                pass
            assert time.perf_counter() - started < 1.0
    assert origins == {("https", "service.giosg.com", None)}


@settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(answers=st.lists(pages(), min_size=1, max_size=5))
async def test_rest_bodies_and_pagination_through_a_visitor(
    answers: list[tuple[int, list[tuple[bytes, bytes]], bytes]],
) -> None:
    """Any page graph and body: typed results or GiosgError, only the API origin asked."""
    FIGURES.add("fuzz.bodies", len(answers))
    await _through_a_visitor(answers)


# Socket frames --------------------------------------------------------------------------------

EVENT_TYPES = (Opened, Heartbeat, Closed, SubscribeAck, SubscribeFailed, UnsubscribeAck, Change)
channels = st.sampled_from([CHANNEL, "/other", ""]) | json_values
changed_bodies = st.fixed_dictionaries(
    {},
    optional={
        "action": st.sampled_from(["added", "changed", "removed", "exploded"]) | json_values,
        "resourceId": json_values,
        "resource_id": json_values,
        "resource": st.dictionaries(st.text(max_size=5), json_values, max_size=4) | json_values,
        "channel": channels,
    },
)
messages = st.one_of(
    st.tuples(st.just("changed"), st.tuples(channels, changed_bodies)).map(
        lambda m: [m[0], list(m[1])]
    ),
    st.tuples(st.just("changed"), st.tuples(changed_bodies)).map(lambda m: [m[0], list(m[1])]),
    st.builds(
        lambda args, query, fail: ["__qr__", args, {"query": query, "fail": fail}],
        json_values,
        st.integers(0, 6) | json_values,
        st.booleans() | json_values,
    ),
    st.lists(json_values, max_size=4),
)


@st.composite
def frames(draw: st.DrawFn) -> str:
    """One text frame: raw or SockJS-framed messages, truncated, or arbitrary text."""
    kind = draw(st.sampled_from(["raw", "sockjs", "control", "truncated", "text"]))
    if kind == "text":
        return draw(st.text(max_size=200))
    if kind == "control":
        return draw(
            st.sampled_from(["o", "h", "c", "a", "m", "x"]).flatmap(
                lambda c: st.builds(lambda body: c + json.dumps(body), json_values) | st.just(c)
            )
        )
    message = json.dumps(draw(messages))
    if kind == "raw":
        return message
    if kind == "truncated":
        return message[: draw(st.integers(0, len(message)))]
    batch = [json.dumps(m) for m in draw(st.lists(messages, min_size=1, max_size=3))]
    return "a" + json.dumps(batch)


class _SafetyNet(logging.Handler):
    """Counts the protocol's "unexpected parser error" lines (an internal crash)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.crashes = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "unexpected parser error" in record.getMessage():
            self.crashes += 1


def _check_frames(texts: list[str], framing: Any) -> None:
    net = _SafetyNet()
    logger = logging.getLogger("giosg_visitor.realtime")
    logger.addHandler(net)
    try:
        protocol = RealtimeProtocol(framing=framing)
        protocol.send_subscribe([CHANNEL, "/other"], "token")
        protocol.data_to_send()
        for count, text in enumerate(texts, 1):
            pending = protocol.pending_queries
            timed(
                lambda: protocol.receive_text(text),  # noqa: B023 - called at once
                again=lambda: RealtimeProtocol(framing=framing).receive_text(text),  # noqa: B023
            )
            events = protocol.events_received()
            assert protocol.stats.frames == count
            assert protocol.pending_queries <= pending
            for event in events:
                assert isinstance(event, EVENT_TYPES)
                if isinstance(event, Change):
                    assert isinstance(event.channel, str)
                    assert event.channel
                    assert event.action in ("added", "changed", "removed")
                    assert event.resource is None or isinstance(event.resource, Mapping)
                    assert event.resource_id is None or isinstance(event.resource_id, str)
                elif isinstance(event, Closed):
                    assert isinstance(event.code, int)
                    assert len(event.reason) <= 200
    finally:
        logger.removeHandler(net)
    assert net.crashes == 0, "the protocol's safety net caught an internal error"


@FAST
@given(texts=st.lists(frames(), min_size=1, max_size=8), framing=st.sampled_from(["raw", "sockjs"]))
def test_socket_frames_give_events_or_are_skipped(texts: list[str], framing: Any) -> None:
    """Any frame sequence: typed events or counted skips, never an internal error."""
    FIGURES.add("fuzz.frames", len(texts))
    _check_frames(texts, framing)


@pytest.mark.slow
@LONG
@given(texts=st.lists(frames(), min_size=1, max_size=8), framing=st.sampled_from(["raw", "sockjs"]))
def test_socket_frames_give_events_or_are_skipped_long(texts: list[str], framing: Any) -> None:
    """Long run: 20,000 frame sequences (repeat with GIOSG_FUZZ_SECONDS for longer)."""
    FIGURES.add("fuzz.frames", len(texts))
    _check_frames(texts, framing)


@pytest.mark.slow
def test_fuzz_every_decoder_for_a_time_budget() -> None:
    """Long run: rerun every property test with fresh seeds for GIOSG_FUZZ_SECONDS."""
    import os

    budget = float(os.environ.get("GIOSG_FUZZ_SECONDS", "600"))
    deadline = time.monotonic() + budget
    runs = 0
    tests: list[Callable[[], None]] = [
        test_auth_responses_give_a_session_or_a_protocol_error,
        test_rest_resources_give_a_model_or_a_protocol_error,
        test_raw_bodies_give_an_object_or_a_protocol_error,
        test_stored_records_give_a_record_or_a_protocol_error,
        test_socket_frames_give_events_or_are_skipped,
    ]
    while time.monotonic() < deadline:
        for test in tests:
            test()
            runs += 1
    assert runs >= len(tests)


def test_a_long_hostile_stream_keeps_protocol_memory_flat() -> None:
    """20,000 random frames through one protocol: traced memory does not grow."""
    rng = random.Random(24)
    protocol = RealtimeProtocol()
    protocol.send_subscribe([CHANNEL], "token")
    protocol.data_to_send()
    samples = [_random_frame(rng) for _ in range(500)]

    def feed(count: int) -> None:
        for i in range(count):
            protocol.receive_text(samples[i % len(samples)])
            protocol.events_received()

    # Only what the SDK's own code keeps counts (the test's log capture grows by design).
    sdk = [tracemalloc.Filter(True, "*/giosg_visitor/*")]

    def held() -> int:
        snapshot = tracemalloc.take_snapshot().filter_traces(sdk)
        return sum(stat.size for stat in snapshot.statistics("filename"))

    # Skip notices are DEBUG records that log capture keeps (and that would hold objects
    # allocated in protocol.py): measure the protocol alone.
    logger = logging.getLogger("giosg_visitor.realtime")
    level = logger.level
    logger.setLevel(logging.INFO)
    tracemalloc.start()
    try:
        feed(2_000)  # warm-up: caches, interned strings
        before = held()
        feed(20_000)
        after = held()
    finally:
        tracemalloc.stop()
        logger.setLevel(level)
    FIGURES.add("fuzz.frames", 22_000)
    assert after - before < 64 * 1024
    assert protocol.stats.frames == 22_000


def _random_frame(rng: random.Random) -> str:
    """A cheap hostile frame generator for the socket tests (no Hypothesis in the loop)."""
    choice = rng.randrange(8)
    seq = rng.randrange(10**6)
    if choice == 0:
        return "".join(chr(rng.randrange(32, 0x2FFF)) for _ in range(rng.randrange(50)))
    if choice == 1:
        return "[" * rng.randrange(1, 3000)
    if choice == 2:
        return json.dumps(["changed", [CHANNEL, {"action": "exploded", "resource": None}]])
    if choice == 3:
        return json.dumps(["changed", [CHANNEL, {"action": "added", "resource": seq}]])
    if choice == 4:
        return json.dumps(["__qr__", [[]], {"query": seq}])
    if choice == 5:
        return json.dumps({"changed": [CHANNEL, {"action": "added"}]})
    if choice == 6:
        return json.dumps(["changed", ["/not/subscribed", {"action": "added", "resource": {}}]])
    return json.dumps(["mystery", [seq], {"x": "y" * rng.randrange(100)}])


# Hostile frames over real sockets -------------------------------------------------------------


@pytest.fixture
def harness() -> Iterator[RouterHarness]:
    """A message router on its own loop, its own (fake-side) frame logs at INFO.

    With 10,000 frames, the fake's thread and the test's thread both logging every frame
    at DEBUG into the same handlers (pytest's log capture and the sentinel) fight for the
    handlers' locks: the test then measures the lock convoy instead of the SDK. The SDK's
    own loggers stay at DEBUG.
    """
    logger = logging.getLogger("giosg_visitor.testing")
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        with RouterHarness(MessageRouter()) as router:
            yield router
    finally:
        logger.setLevel(level)


async def test_a_storm_of_random_frames_does_not_break_the_read_loop(
    harness: RouterHarness, secret_sentinel: Any
) -> None:
    """2,000 random text frames: no drop, every one counted, live delivery continues."""
    rng = random.Random(2024)
    storm = [_random_frame(rng) for _ in range(2_000)]
    tokens = _Tokens(secret_sentinel)
    async with _connection(harness, tokens, ping_interval=10.0, ping_timeout=10.0) as conn:
        subscription = await _subscribed(conn)
        before = conn.stats.protocol.frames

        def blow() -> None:
            for frame in storm:
                harness.router.hostile(frame)
            harness.router.push(CHANNEL, "added", {"id": "after-the-storm"})

        harness.call(blow)
        with anyio.fail_after(20):
            async for item in subscription:
                if isinstance(item, Change) and item.resource_id == "after-the-storm":
                    break
        stats = conn.stats
        received = stats.protocol.frames - before
    FIGURES.add("fuzz.frames", len(storm))
    assert stats.drops == 0
    assert received >= len(storm) + 1


async def test_a_burst_to_a_stalled_consumer_stays_within_the_buffer(
    harness: RouterHarness, secret_sentinel: Any
) -> None:
    """10,000 events to a consumer that reads nothing: buffer bounded, one Gap."""
    tokens = _Tokens(secret_sentinel)
    buffer = 500
    burst = 10_000
    # The pong queues behind the burst: with the suite's 0.5 s keepalive, a loaded machine
    # (every record captured at DEBUG) reads for longer than that and rightly reconnects.
    async with _connection(
        harness, tokens, max_buffer=buffer, ping_interval=10.0, ping_timeout=10.0
    ) as conn:
        subscription = await _subscribed(conn)

        def flood() -> None:
            for seq in range(burst):
                harness.router.push(CHANNEL, "added", {"id": f"b{seq}"})

        harness.call(flood)
        with anyio.fail_after(30):
            while subscription.dropped < burst - buffer:
                assert subscription.buffered <= buffer + 2
                await anyio.sleep(0.01)
        high_water = subscription.buffered
        items = [await anext(subscription) for _ in range(buffer + 1)]
        harness.call(harness.router.push, CHANNEL, "added", {"id": "later"})
        with anyio.fail_after(5):
            later = await anext(subscription)
    FIGURES.add("fuzz.frames", burst)
    assert high_water <= buffer + 2
    assert [type(i) for i in items[-2:]] == [Change, Gap]
    assert isinstance(later, Change)
    assert later.resource_id == "later"
    assert conn.stats.dropped_notifications == burst - buffer
