"""The socket keepalive: a ping every ``interval``, the link dropped when nothing answers.

Life is any inbound frame since the ping (it proves the link as a pong would) or the
pong itself. A link that shows none within ``timeout`` is dropped without a closing
handshake (close code 1011, "keepalive ping timeout").

Two ways to run it, one rule:

* :class:`TimedKeepalive`, for sockets that can send a ping without waiting
  (``send_ping``, as the default transport's can): a chain of calls on the shared
  :class:`~giosg_visitor._timers.Timers`, so an idle connection has no keepalive task,
  and a ping costs no task, task group or event.
* :func:`keepalive_task`, for sockets that can only ``await ping()`` until the pong:
  a task per connection that races the pong against the timeout.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Final, final

import anyio

from giosg_visitor._timers import Timer, Timers
from giosg_visitor.errors import ConnectionClosedError, GiosgError

from ._backoff import Drop, classify_close
from ._transport import SocketConnection


if TYPE_CHECKING:
    from .connection import RealtimeConnection


__all__ = ["TimedKeepalive", "keepalive_task", "send_failure_grace"]

_ABNORMAL_CLOSURE: Final = 1006
_KEEPALIVE_CLOSE: Final = 1011
#: How long a failed send waits for the reader to report the server's close code.
_SEND_FAILURE_GRACE: Final = 0.5

SendPing = Callable[[], Awaitable[Callable[[], bool] | None]]


def send_failure_grace(exc: Exception) -> float:
    """Seconds to wait before reporting a failed send (or ping) as the socket's end.

    A send that races the server's close frame knows no close code; the reader is about
    to learn the real one (4401 means "renew first"), and reports it first if it can.
    """
    if isinstance(exc, ConnectionClosedError) and exc.code == _ABNORMAL_CLOSURE:
        return _SEND_FAILURE_GRACE
    return 0.0


def _timed_out() -> Drop:
    return Drop(
        code=_KEEPALIVE_CLOSE,
        reason="keepalive ping timeout",
        verdict=classify_close(_KEEPALIVE_CLOSE),
        abort=True,
    )


@final
class TimedKeepalive:
    """One socket's keepalive as calls on shared timers (no task of its own).

    Each round: send a ping at once (``send_ping``), look for life after
    ``min(interval, timeout)`` and, if none yet, at ``timeout``; the next round starts
    ``interval`` after this one (at once when the timeout outlasted the interval). When
    the ping cannot go out without waiting (the socket's writes are backed up), that
    round races ``ping()`` against the timeout in a short-lived task instead.

    Created when the socket opens; :meth:`cancel` it when the socket ends.
    """

    __slots__ = (
        "_answered",
        "_connection",
        "_group",
        "_interval",
        "_seen",
        "_send_ping",
        "_socket",
        "_stopped",
        "_timeout",
        "_timer",
        "_timers",
    )

    def __init__(
        self,
        connection: RealtimeConnection,
        socket: SocketConnection,
        send_ping: SendPing,
        *,
        interval: float,
        timeout: float,
        timers: Timers,
        group: anyio.abc.TaskGroup,
    ) -> None:
        self._connection = connection
        self._socket = socket
        self._send_ping = send_ping
        self._interval = interval
        self._timeout = timeout
        self._timers = timers
        self._group = group
        self._seen = 0
        self._answered: Callable[[], bool] = _not_yet
        self._stopped = False
        self._timer: Timer = timers.call_later(interval, self._ping)

    def cancel(self) -> None:
        """End the schedule (the socket ended)."""
        self._stopped = True
        self._timer.cancel()

    async def _ping(self) -> None:
        connection = self._connection
        self._seen = connection._rx_count
        try:
            answered = await self._send_ping()
        except (GiosgError, OSError) as exc:
            if self._stopped:
                return  # the socket ended meanwhile: nothing to report
            drop = Drop.from_error(exc)
            self._timer = self._timers.call_later(
                send_failure_grace(exc), lambda: connection._lost(drop)
            )
            return
        if self._stopped:
            return  # the socket ended while the ping went out (trio sends suspend)
        if answered is None:
            self._group.start_soon(self._race)
            return
        self._answered = answered
        self._timer = self._timers.call_later(min(self._interval, self._timeout), self._check)

    def _check(self) -> None:
        first = min(self._interval, self._timeout)
        if self._alive():
            self._timer = self._timers.call_later(self._interval - first, self._ping)
        elif self._timeout > first:
            self._timer = self._timers.call_later(self._timeout - first, self._last_check)
        else:
            self._connection._lost(_timed_out())

    def _last_check(self) -> None:
        if self._alive():
            # The timeout outlasted the interval: the next ping is due now.
            self._timer = self._timers.call_later(0.0, self._ping)
        else:
            self._connection._lost(_timed_out())

    def _alive(self) -> bool:
        """Whether a frame arrived since the ping or its pong did."""
        connection = self._connection
        if connection._rx_count != self._seen:
            return True
        if not self._answered():
            return False
        if not connection._watches_frames:
            connection._touch()  # the pong is a frame the socket did not report
        return True

    async def _race(self) -> None:
        alive, error = await race_pong(self._connection, self._socket, self._timeout)
        if self._stopped:
            return
        if alive:
            self._timer = self._timers.call_later(self._interval, self._ping)
        else:
            await _report(self._connection, error)


def _not_yet() -> bool:
    return False


async def keepalive_task(
    connection: RealtimeConnection, socket: SocketConnection, interval: float, ping_timeout: float
) -> None:
    """The keepalive of a socket without ``send_ping``: one task, a race per ping."""
    while True:
        await connection._clock.sleep(interval)
        alive, error = await race_pong(connection, socket, ping_timeout)
        if not alive:
            await _report(connection, error)
            return


async def _report(connection: RealtimeConnection, error: Exception | None) -> None:
    if error is None:
        connection._lost(_timed_out())
    else:
        await connection._lost_after_grace(error)


async def race_pong(
    connection: RealtimeConnection, socket: SocketConnection, ping_timeout: float
) -> tuple[bool, Exception | None]:
    """Whether the link answered within ``ping_timeout``, and the error if the ping failed."""
    alive = False
    error: Exception | None = None
    rx_pulse = connection._rx_pulse = anyio.Event()
    async with anyio.create_task_group() as race:

        async def ping() -> None:
            nonlocal alive, error
            try:
                await socket.ping()
            except (GiosgError, OSError) as exc:
                error = exc
            else:
                alive = True
                if not connection._watches_frames:
                    connection._touch()  # the pong is a frame the socket did not report
            race.cancel_scope.cancel()

        async def any_frame() -> None:
            nonlocal alive
            await rx_pulse.wait()
            alive = True
            race.cancel_scope.cancel()

        race.start_soon(ping)
        # Any inbound frame proves the link alive, as a pong would.
        race.start_soon(any_frame)
        await connection._clock.sleep(ping_timeout)
        race.cancel_scope.cancel()
    return alive, error


@final
class IdleWatchdog:
    """Drops a socket that receives no frame at all for ``idle_timeout`` (on shared timers).

    It looks a few times per timeout: a frame counter, not a clock read per frame.
    """

    __slots__ = ("_connection", "_idle", "_quiet_since", "_seen", "_timer", "_timers")

    def __init__(self, connection: RealtimeConnection, idle_timeout: float, timers: Timers) -> None:
        self._connection = connection
        self._idle = idle_timeout
        self._timers = timers
        self._seen = connection._rx_count
        self._quiet_since = connection._clock.monotonic()
        self._timer = timers.call_later(idle_timeout / 4, self._check)

    def cancel(self) -> None:
        """End the watch (the socket ended)."""
        self._timer.cancel()

    def _check(self) -> None:
        connection = self._connection
        now = connection._clock.monotonic()
        if connection._rx_count != self._seen:
            self._seen = connection._rx_count
            self._quiet_since = now
        elif now - self._quiet_since >= self._idle:
            connection._lost(
                Drop(
                    code=_ABNORMAL_CLOSURE,
                    reason="no frame, heartbeat or pong received",
                    verdict=classify_close(_ABNORMAL_CLOSURE),
                    abort=True,
                )
            )
            return
        self._timer = self._timers.call_later(self._idle / 4, self._check)
