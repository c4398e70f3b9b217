"""Delivery buffers: a channel's :class:`Subscription` and the :class:`ConnectionEvents` stream.

The read loop of a :class:`~giosg_visitor.realtime.RealtimeConnection` hands every
notification, marker and connection event to these objects without ever awaiting; the
consumer side is an async iterator. They know nothing of sockets: the connection they
belong to is only told when the consumer leaves (``_unsubscribe``, ``_remove_listener``).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any, Final, NoReturn, Protocol, Self, final

import anyio
import anyio.lowlevel
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from .._lifecycle import AsyncResource
from .._waiter import Waiter
from ._channels import DELIVERED as _DELIVERED, Delivery as _Delivery
from .events import Change, ConnectionEvent, Gap, Resubscribed, SubscriptionEvent


__all__ = ["ConnectionEvents", "Subscription"]

logger = logging.getLogger(__name__)

#: A subscription's consumer yields at least once per this many items.
_CHECKPOINT_EVERY: Final = 64


class _Owner(Protocol):
    """What a stream tells the connection it belongs to (only when its consumer leaves)."""

    def _unsubscribe(self, subscription: Subscription) -> None: ...

    def _remove_listener(self, listener: ConnectionEvents) -> None: ...


@final
class Subscription(AsyncResource):
    """One consumer's view of a channel: an async iterator of subscription events.

    Yields :class:`~giosg_visitor.realtime.events.Change` notifications and the markers
    :class:`~giosg_visitor.realtime.events.Resubscribed` and
    :class:`~giosg_visitor.realtime.events.Gap` (backfill from REST after either). Ends
    when the subscription or the connection is closed; raises the connection's fatal
    error, or :class:`~giosg_visitor.errors.SubscriptionError` when the server refused the
    channel, after the notifications buffered before it.

    The buffer holds ``max_buffer`` notifications. When it is full the read loop does not
    wait: the notification is dropped (counted in :attr:`dropped`) and a single
    ``Gap(reason="overflow")`` is queued in its place, so the consumer sees exactly where
    to backfill. Markers have reserved room and are never dropped.

    Create it with :meth:`~giosg_visitor.realtime.RealtimeConnection.subscribe`; close it
    with :meth:`aclose` or ``async with``.
    """

    __slots__ = (
        "_channel",
        "_closed",
        "_connection",
        "_dropped",
        "_error",
        "_finished",
        "_items",
        "_last_was_marker",
        "_max_buffer",
        "_pulse",
        "_since_checkpoint",
        "_sink",
        "_sink_end",
        "_subscribed",
        "_waiter",
    )

    def __init__(self, connection: _Owner, channel: str, *, max_buffer: int) -> None:
        self._connection = connection
        self._channel = channel
        self._max_buffer = max_buffer
        # A plain deque: the read loop appends, __anext__ pops. Notifications may fill
        # max_buffer slots; two more are reserved for markers. Created by the first
        # delivery and dropped whenever the consumer parks on an empty one (an empty
        # deque is 0.6 KiB; most subscriptions are idle most of the time).
        self._items: deque[SubscriptionEvent] | None = None
        self._waiter: Waiter | None = None
        self._error: BaseException | None = None
        self._finished = False
        self._closed = False
        self._subscribed = False
        self._last_was_marker = False
        self._dropped = 0
        self._since_checkpoint = 0
        # Created when someone waits (an anyio.Event costs ~0.9 KiB on asyncio).
        self._pulse: anyio.Event | None = None
        # Set by _set_sink: events go straight to these callbacks on the read loop.
        self._sink: Callable[[SubscriptionEvent], None] | None = None
        self._sink_end: Callable[[BaseException | None], None] | None = None

    def __repr__(self) -> str:
        return (
            f"<Subscription channel={self._channel!r} subscribed={self._subscribed}"
            f" finished={self._finished} buffered={self.buffered}>"
        )

    @property
    def channel(self) -> str:
        """The channel."""
        return self._channel

    @property
    def is_subscribed(self) -> bool:
        """Whether the server has confirmed the channel on the current socket."""
        return self._subscribed and not self._finished

    @property
    def buffered(self) -> int:
        """Items waiting to be read."""
        return len(self._items) if self._items is not None else 0

    @property
    def dropped(self) -> int:
        """Notifications dropped because the buffer was full."""
        return self._dropped

    async def wait_subscribed(self) -> None:
        """Wait until the server has confirmed the channel on the current socket.

        Raises:
            SubscriptionError: The server refused the channel.
            RuntimeError: The subscription was closed.
            GiosgError: The connection failed for good (its error).
        """
        while True:
            if self._error is not None:
                raise self._error
            if self._finished:
                raise RuntimeError("the subscription is closed")
            if self._subscribed:
                return
            if self._pulse is None:
                self._pulse = anyio.Event()
            await self._pulse.wait()

    async def aclose(self) -> None:
        """Stop receiving the channel (sends ``unsub`` when nobody else listens to it)."""
        self._release()
        await anyio.lowlevel.checkpoint()

    def _release(self) -> None:
        """:meth:`aclose` without its checkpoint, for an owner's synchronous cleanup.

        An ``AsyncExitStack`` callback that raises a cancellation before the owner's task
        group has exited can leave a cycle of ``CancelledError`` contexts (anyio then loops
        forever walking it when the task ends).
        """
        self._connection._unsubscribe(self)
        self._finish(None)
        self._close()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> SubscriptionEvent:
        # Buffered items are returned without a scheduling round trip each, so the
        # consumer drains a burst as fast as the read loop queued it; a checkpoint every
        # _CHECKPOINT_EVERY items keeps it fair to other tasks and cancellable.
        yielded = False
        while True:
            items = self._items
            if items:
                self._since_checkpoint += 1
                if self._since_checkpoint >= _CHECKPOINT_EVERY:
                    self._since_checkpoint = 0
                    await anyio.lowlevel.checkpoint()
                    if not items or items is not self._items:
                        continue
                return items.popleft()
            if self._finished or self._closed:
                await anyio.lowlevel.checkpoint()
                if self._items:
                    continue
                if self._error is not None:
                    raise self._error
                raise StopAsyncIteration
            self._since_checkpoint = 0
            if not yielded:
                # Let the read loop run once before parking: during a burst it has queued
                # more by then (on trio, websockets yields once per message), and one
                # reschedule costs less than an Event, a park and a wake-up.
                yielded = True
                await anyio.lowlevel.checkpoint()
                continue
            if self._waiter is not None:
                # It would take the first one's wake-up, and strand it.
                raise RuntimeError("another task is already iterating this subscription")
            self._items = None
            waiter = self._waiter = Waiter()
            try:
                await waiter.wait()
            finally:
                self._waiter = None

    if not TYPE_CHECKING:
        # Only at run time: type checkers keep reporting `await visitor.subscribe(...)`
        # as an error, and the run-time message says what to write instead.
        def __await__(self) -> Generator[Any, None, NoReturn]:
            raise TypeError(
                "subscribe() is not awaitable: use `async with visitor.subscribe(channel) "
                "as subscription:` and iterate it"
            )

    def _set_sink(
        self,
        on_event: Callable[[SubscriptionEvent], None],
        on_end: Callable[[BaseException | None], None],
    ) -> None:
        """Hand every event to *on_event* on the read loop instead of buffering it.

        For an SDK-internal consumer that only folds events into state: it needs no task
        of its own parked on the iterator. What is buffered now goes to *on_event* first,
        in order. *on_end* is called once when the subscription ends: with the
        connection's fatal error or the server's refusal, or ``None`` on a close (at once
        if it has already ended). Neither may block; an exception either raises is logged
        and never reaches the read loop.
        """
        self._sink, self._sink_end = on_event, on_end
        items, self._items = self._items, None
        for item in items or ():
            self._to_sink(item)
        if self._finished:
            self._end_sink()

    def _to_sink(self, event: SubscriptionEvent) -> None:
        sink = self._sink
        assert sink is not None
        try:
            sink(event)
        except Exception as exc:  # the read loop must not die of a consumer's bug
            logger.exception(
                "a callback of the subscription to %r failed: %s", self._channel, type(exc).__name__
            )

    def _end_sink(self) -> None:
        on_end, self._sink_end = self._sink_end, None
        if on_end is None:
            return
        try:
            on_end(self._error)
        except Exception as exc:  # as in _to_sink
            logger.exception(
                "a callback of the subscription to %r failed: %s", self._channel, type(exc).__name__
            )

    # Private methods called by the connection (on the read loop: never block).

    def _deliver(self, event: Change) -> _Delivery:
        if self._finished:
            return _Delivery.DROPPED
        if self._sink is not None:
            self._to_sink(event)
            return _DELIVERED
        items = self._items
        if items is None:
            items = self._items = deque()
        elif len(items) >= self._max_buffer:
            self._dropped += 1
            if self._last_was_marker:
                # The marker at the end of the buffer already covers this notification.
                return _Delivery.DROPPED
            self._mark(Gap(channel=self._channel, reason="overflow"))
            return _Delivery.GAP
        items.append(event)
        self._last_was_marker = False
        waiter = self._waiter
        if waiter is not None:
            # Wake the consumer once; it finds everything queued until it runs.
            self._waiter = None
            waiter.set()
        return _DELIVERED

    def _mark(self, marker: Resubscribed | Gap) -> None:
        if self._finished:
            return
        if self._sink is not None:
            self._to_sink(marker)
            return
        # Only markers sit beyond the notification slots: past them, this one is implied.
        items = self._items
        if items is None:
            items = self._items = deque()
        if len(items) < self._max_buffer + 2:
            items.append(marker)
            if self._waiter is not None:
                self._waiter.set()
        self._last_was_marker = True

    def _set_subscribed(self, value: bool) -> None:
        self._subscribed = value
        self._wake()

    def _finish(self, error: BaseException | None) -> None:
        if self._finished:
            return
        self._finished = True
        self._subscribed = False
        if error is not None:
            self._error = error
        if self._waiter is not None:
            self._waiter.set()
        self._wake()
        if self._sink is not None:
            self._end_sink()

    def _close(self) -> None:
        """The consumer is gone: forget what is buffered, end the iteration."""
        self._closed = True
        self._items = None
        if self._waiter is not None:
            self._waiter.set()

    def _wake(self) -> None:
        pulse, self._pulse = self._pulse, None
        if pulse is not None:
            pulse.set()


@final
class ConnectionEvents(AsyncResource):
    """An async iterator of :data:`~giosg_visitor.realtime.events.ConnectionEvent` values.

    Created by :meth:`~giosg_visitor.realtime.RealtimeConnection.events`; receives the
    events emitted after its creation. Bounded: when the consumer falls behind by more
    than a few hundred events, newer events are dropped (and counted in
    :attr:`dropped`). Ends when the connection closes or fails. Close it with
    :meth:`aclose` or ``async with``.
    """

    def __init__(self, connection: _Owner, *, max_buffer: int) -> None:
        self._connection = connection
        send, receive = anyio.create_memory_object_stream[ConnectionEvent](max_buffer)
        self._send: MemoryObjectSendStream[ConnectionEvent] = send
        self._receive: MemoryObjectReceiveStream[ConnectionEvent] = receive
        self.dropped = 0

    def __repr__(self) -> str:
        return f"<ConnectionEvents dropped={self.dropped}>"

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> ConnectionEvent:
        try:
            return await self._receive.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            raise StopAsyncIteration from None

    async def aclose(self) -> None:
        """Stop receiving events."""
        self._connection._remove_listener(self)
        self._send.close()
        self._receive.close()
        await anyio.lowlevel.checkpoint()

    def __del__(self) -> None:
        for stream in (getattr(self, "_send", None), getattr(self, "_receive", None)):
            if stream is not None:
                stream.close()

    def _put(self, event: ConnectionEvent) -> None:
        try:
            self._send.send_nowait(event)
        except anyio.WouldBlock:
            self.dropped += 1
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass

    def _end(self) -> None:
        self._send.close()
