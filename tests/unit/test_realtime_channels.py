"""The channel table, stepped by hand: subscribe, ack, retry once on refusal, reauthorize.

No sockets, no clock, no event loop: events go in, frames (through a real
RealtimeProtocol) and calls on the subscribers' buffers come out.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from giosg_visitor import Secret
from giosg_visitor.errors import SubscriptionError
from giosg_visitor.realtime import (
    Change,
    Gap,
    RealtimeProtocol,
    Resubscribed,
    SubscribeAck,
    SubscribeFailed,
)
from giosg_visitor.realtime._channels import ChannelTable, ConnectionStats, Delivery


CHANNEL = "/api/v5/public/visitors/8a60b202474547dbb8ce19737e4c166f/chats"
OTHER = "/api/v5/public/visitors/8a60b202474547dbb8ce19737e4c166f/rooms"
OLD = Secret("token-old")
NEW = Secret("token-new")


class FakeSink:
    """A subscriber's buffer that records what the table did to it."""

    def __init__(self, *, room: int = 10) -> None:
        self.items: list[Any] = []
        self.subscribed = False
        self.error: BaseException | None = None
        self.finished = False
        self.closed = False
        self.room = room

    def _deliver(self, event: Change) -> Delivery:
        if len(self.items) >= self.room:
            return Delivery.GAP
        self.items.append(event)
        return Delivery.DELIVERED

    def _mark(self, marker: Resubscribed | Gap) -> None:
        self.items.append(marker)

    def _set_subscribed(self, value: bool) -> None:
        self.subscribed = value

    def _finish(self, error: BaseException | None) -> None:
        self.finished = True
        self.error = error

    def _close(self) -> None:
        self.closed = True


def sent(protocol: RealtimeProtocol) -> list[tuple[str, str, int]]:
    """The messages written: (kind, channel, query)."""
    out = []
    for frame in protocol.data_to_send():
        kind, args, meta = json.loads(frame)
        out.append((kind, args[0], meta["query"]))
    return out


def flush(table: ChannelTable, protocol: RealtimeProtocol, token: Secret = OLD) -> list[Any]:
    ops = table.take()
    table.write(ops, token if ChannelTable.needs_token(ops) else None, protocol)
    return sent(protocol)


def refusal(query: int, channel: str = CHANNEL) -> SubscribeFailed:
    return SubscribeFailed(query=query, channel=channel, reason=None)


def never_fresh(token: Secret) -> bool:
    return False


def test_subscribe_before_open_waits_and_open_sends_one_batch() -> None:
    """Channels wanted before a socket opens are all sent when it opens, in order."""
    table, protocol = ChannelTable(), RealtimeProtocol()
    table.add(CHANNEL, FakeSink())
    table.add(OTHER, FakeSink())
    assert not table.has_work
    assert table.opened() == 2
    assert [(k, c) for k, c, _ in flush(table, protocol)] == [("sub", CHANNEL), ("sub", OTHER)]
    assert not table.has_work


def test_second_subscriber_sends_nothing_and_is_confirmed_at_once() -> None:
    """A second subscriber to a confirmed channel needs no new sub and is subscribed now."""
    table, protocol = ChannelTable(), RealtimeProtocol()
    table.opened()
    first = FakeSink()
    table.add(CHANNEL, first)
    [(_, _, query)] = flush(table, protocol)
    assert table.acked(SubscribeAck(query=query, channel=CHANNEL))
    assert first.subscribed
    second = FakeSink()
    table.add(CHANNEL, second)
    assert second.subscribed
    assert not table.has_work


def test_ack_of_an_earlier_socket_counts_for_nothing() -> None:
    """An ack for a query sent on a socket that has since ended changes nothing."""
    table, protocol = ChannelTable(), RealtimeProtocol()
    sink = FakeSink()
    table.add(CHANNEL, sink)
    table.opened()
    [(_, _, old_query)] = flush(table, protocol)
    table.socket_ended()
    table.opened()
    flush(table, protocol)
    assert not table.acked(SubscribeAck(query=old_query, channel=CHANNEL))
    assert not sink.subscribed


def test_resubscribed_marker_only_after_a_reconfirmation() -> None:
    """The first confirmation subscribes; a confirmation on a later socket marks the gap."""
    table, protocol = ChannelTable(), RealtimeProtocol()
    sink = FakeSink()
    table.add(CHANNEL, sink)
    table.opened()
    [(_, _, query)] = flush(table, protocol)
    table.acked(SubscribeAck(query=query, channel=CHANNEL))
    assert sink.items == []
    table.socket_ended()
    assert not sink.subscribed
    table.opened()
    [(_, _, query)] = flush(table, protocol)
    table.acked(SubscribeAck(query=query, channel=CHANNEL))
    assert sink.items == [Resubscribed(channel=CHANNEL)]
    assert sink.subscribed


def test_refusal_retries_once_with_the_refused_token_named() -> None:
    """A refused sub queues one retry carrying the refused token; a renewed token recovers."""
    stats = ConnectionStats()
    table, protocol = ChannelTable(stats=stats), RealtimeProtocol()
    sink = FakeSink()
    table.add(CHANNEL, sink)
    table.opened()
    [(_, _, query)] = flush(table, protocol, OLD)
    assert table.refused(refusal(query, CHANNEL), never_fresh)
    ops = table.take()
    assert [(op.kind, op.channel) for op in ops] == [("retry", CHANNEL)]
    assert ChannelTable.refused_tokens(ops) == {OLD}
    table.write(ops, NEW, protocol)
    [(kind, channel, query)] = sent(protocol)
    assert (kind, channel) == ("sub", CHANNEL)
    assert table.acked(SubscribeAck(query=query, channel=CHANNEL))
    assert sink.subscribed
    assert not sink.finished
    assert (stats.refusals, stats.refusals_recovered) == (1, 1)


def test_second_refusal_on_the_same_socket_is_final() -> None:
    """After one retry, another refusal ends the subscribers with a SubscriptionError."""
    table, protocol = ChannelTable(), RealtimeProtocol()
    sink = FakeSink()
    table.add(CHANNEL, sink)
    table.opened()
    [(_, _, query)] = flush(table, protocol, OLD)
    table.refused(SubscribeFailed(query=query, channel=CHANNEL, reason="expired"), never_fresh)
    [(_, _, query)] = flush(table, protocol, NEW)
    assert not table.refused(refusal(query, CHANNEL), never_fresh)
    assert isinstance(sink.error, SubscriptionError)
    assert table.names() == []


def test_refusal_of_a_fresh_token_is_final_at_once() -> None:
    """When the owner calls the refused token fresh, no retry is queued."""
    table, protocol = ChannelTable(), RealtimeProtocol()
    sink = FakeSink()
    table.add(CHANNEL, sink)
    table.opened()
    [(_, _, query)] = flush(table, protocol, OLD)
    assert not table.refused(refusal(query, CHANNEL), lambda t: t == OLD)
    assert isinstance(sink.error, SubscriptionError)
    assert not table.has_work


def test_retry_that_could_only_resend_the_refused_token_is_final() -> None:
    """No renewal replaced the token: the retry refuses instead of resending it."""
    table, protocol = ChannelTable(), RealtimeProtocol()
    sink = FakeSink()
    table.add(CHANNEL, sink)
    table.opened()
    [(_, _, query)] = flush(table, protocol, OLD)
    table.refused(SubscribeFailed(query=query, channel=CHANNEL, reason="nope"), never_fresh)
    assert flush(table, protocol, OLD) == []
    assert isinstance(sink.error, SubscriptionError)
    assert "nope" in str(sink.error)


def test_reauthorize_is_done_when_every_sub_was_answered() -> None:
    """A reauthorization resends every channel and finishes after the last answer."""
    table, protocol = ChannelTable(), RealtimeProtocol()
    table.add(CHANNEL, FakeSink())
    table.add(OTHER, FakeSink())
    assert table.reauthorize(lambda: None) is None  # no socket: nothing to do
    table.opened()
    for _, channel, query in flush(table, protocol):
        table.acked(SubscribeAck(query=query, channel=channel))
    done: list[bool] = []
    reauth = table.reauthorize(lambda: done.append(True))
    assert reauth is not None
    answers = flush(table, protocol, NEW)
    assert [c for _, c, _ in answers] == [CHANNEL, OTHER]
    table.acked(SubscribeAck(query=answers[0][2], channel=CHANNEL))
    assert done == []
    table.refused(refusal(answers[1][2], OTHER), never_fresh)
    assert done == [True]


def test_reauthorize_ends_with_the_socket() -> None:
    """A socket that ends before the answers finishes the reauthorization (no hang)."""
    table, protocol = ChannelTable(), RealtimeProtocol()
    table.add(CHANNEL, FakeSink())
    table.opened()
    flush(table, protocol)
    done: list[bool] = []
    table.reauthorize(lambda: done.append(True))
    flush(table, protocol)
    table.socket_ended()
    assert done == [True]


def test_last_subscriber_leaving_sends_unsub_only_if_subscribed_here() -> None:
    """unsub goes out for a channel sent on this socket; a never-sent one leaves quietly."""
    table, protocol = ChannelTable(), RealtimeProtocol()
    first, second = FakeSink(), FakeSink()
    table.add(CHANNEL, first)
    table.add(CHANNEL, second)
    table.opened()
    flush(table, protocol)
    table.remove(CHANNEL, first)
    assert not table.has_work
    table.remove(CHANNEL, second)
    assert [(k, c) for k, c, _ in flush(table, protocol)] == [("unsub", CHANNEL)]
    table.socket_ended()
    table.add(OTHER, FakeSink())
    sink = FakeSink()
    table.add(CHANNEL, sink)
    table.remove(CHANNEL, sink)
    assert not table.has_work


def test_route_counts_unrouted_and_reports_a_gap() -> None:
    """Notifications reach their channel's subscribers; a full buffer yields one Gap."""
    stats = ConnectionStats()
    table = ChannelTable(stats=stats)
    sink = FakeSink(room=1)
    table.add(CHANNEL, sink)
    change = Change(channel=CHANNEL, action="added", resource_id="1", resource={})
    assert table.route(change) is None
    assert table.route(change) == Gap(channel=CHANNEL, reason="overflow")
    assert table.route(Change(channel=OTHER, action="added", resource_id="2", resource={})) is None
    assert (stats.dropped_notifications, stats.unrouted) == (1, 1)


@pytest.mark.parametrize("consumers_gone", [False, True])
def test_close_ends_every_subscriber(consumers_gone: bool) -> None:
    """Closing ends every subscriber with the error and forgets the channels."""
    table = ChannelTable()
    sink = FakeSink()
    table.add(CHANNEL, sink)
    error = RuntimeError("gone")
    table.close(error, consumers_gone=consumers_gone)
    assert sink.error is error
    assert sink.closed is consumers_gone
    assert table.names() == []
