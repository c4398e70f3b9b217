"""The cluster mode's loops inside one pool: placement, leases, owner sockets, inbound.

Three background tasks run in the pool while it is open:

* **placement**: heartbeats into the membership set, reads the active visitors, and for
  each decides the preferred owner by rendezvous hashing. It claims the visitors this
  worker should own and hands back those another live worker should own. It wakes every
  third of a lease, or at once when the placement epoch in Redis moves.
* **renewal**: extends every owned lease at a third of its length; a lease that is
  refused, or not renewed within two thirds of its length (Redis unreachable), stops its
  owner task before another worker may take it over.
* **owners**: one task per owned visitor holds its socket (a realtime ``Visitor``) and,
  for each open chat, publishes the operator's messages after the chat's cursor into the
  delivery stream with the lease's fencing token.

``inbound()`` reads the delivery stream as a consumer of its group and claims entries
left unacknowledged by dead or stalled workers.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import TYPE_CHECKING, Final, Self, final

import anyio
import anyio.abc
import attrs
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from giosg_visitor._clock import Clock
from giosg_visitor._lifecycle import AsyncResource
from giosg_visitor.errors import GiosgError

from ._placement import preferred_owner
from ._types import ClusterStats, Delivery, DeliveryLostError, Lease, LeaseLostError
from .coordinator import RedisCoordinator, StreamEntry


if TYPE_CHECKING:
    from giosg_visitor.chat import Chat
    from giosg_visitor.visitor import Visitor

__all__ = ["ClusterRuntime", "Deliveries"]

logger = logging.getLogger("giosg_visitor.cluster")

#: How often a worker looks at the placement epoch between ticks.
_EPOCH_POLL: Final = 0.2
#: Longest wait of one XREADGROUP: bounds how long leaving ``inbound()`` takes on trio.
_READ_BLOCK_MS: Final = 500
#: How many owner visitors may be starting at once on one worker.
_MAX_OWNER_STARTS: Final = 20
#: Leases claimed per round trip.
_CLAIM_BATCH: Final = 200
#: Pause after a Redis error in a background loop before trying again.
_ERROR_PAUSE: Final = 0.5


@final
class _Owned:
    """A visitor this worker owns: its lease and the task holding its socket."""

    __slots__ = ("done", "lease", "renewed_at", "rescan", "scope", "seen_activity")

    def __init__(self, lease: Lease, now: float, activity: float) -> None:
        self.lease = lease
        self.renewed_at = now
        self.scope = anyio.CancelScope()
        self.done = anyio.Event()
        self.rescan = anyio.Event()
        self.seen_activity = activity


@final
class Deliveries:
    """The operator messages of the cluster's active visitors (see ``VisitorPool.inbound``)."""

    def __init__(self, receive: MemoryObjectReceiveStream[Delivery]) -> None:
        self._receive = receive

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Delivery:
        try:
            return await self._receive.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None


@final
class ClusterRuntime(AsyncResource):
    """Runs a pool's share of the cluster (entered by the pool while it is open)."""

    def __init__(
        self,
        coordinator: RedisCoordinator,
        *,
        make_visitor: Callable[[str], Visitor],
        clock: Clock,
    ) -> None:
        self._coordinator = coordinator
        self._make_visitor = make_visitor
        self._clock = clock
        self._owned: dict[str, _Owned] = {}
        self._stats = ClusterStats(worker_id=coordinator.worker_id)
        self._in_flight: set[str] = set()
        self._task_group: anyio.abc.TaskGroup | None = None
        self._stack: AsyncExitStack | None = None
        self._wake = anyio.Event()
        self._inbound_open = False
        self._stopping = False
        self._start_limiter = anyio.CapacityLimiter(_MAX_OWNER_STARTS)
        self._to_activate: set[str] = set()
        self._leaving: set[str] = set()

    # Lifecycle ---------------------------------------------------------------------------

    async def _aopen(self) -> None:
        stack = AsyncExitStack()
        await stack.__aenter__()
        try:
            stack.push_async_callback(self._coordinator.aclose)
            await self._coordinator.heartbeat()
            self._task_group = await stack.enter_async_context(anyio.create_task_group())
            stack.push_async_callback(self._hand_over_all)
            self._task_group.start_soon(self._placement_loop)
            self._task_group.start_soon(self._renewal_loop)
        except BaseException:
            await stack.__aexit__(None, None, None)
            raise
        self._stack = stack

    async def aclose(self) -> None:
        """Hand every lease over and leave the cluster; idempotent."""
        stack, self._stack = self._stack, None
        if stack is not None:
            await stack.aclose()

    async def _hand_over_all(self) -> None:
        """Clean exit: stop the owners, give every lease back, leave the membership."""
        self._stopping = True
        assert self._task_group is not None
        owned = list(self._owned.values())
        for item in owned:
            item.scope.cancel()
        with anyio.move_on_after(5, shield=True):
            for item in owned:
                await item.done.wait()
            for item in owned:
                try:
                    if await self._coordinator.release(item.lease):
                        self._stats.leases_handed_over += 1
                except GiosgError as exc:
                    logger.warning("could not hand over a lease: %s", type(exc).__name__)
            try:
                await self._coordinator.heartbeat(leaving=True)
            except GiosgError as exc:
                logger.warning("could not leave the membership set: %s", type(exc).__name__)
        self._task_group.cancel_scope.cancel()

    # Public surface ------------------------------------------------------------------------

    @property
    def coordinator(self) -> RedisCoordinator:
        """The coordinator this runtime uses."""
        return self._coordinator

    def stats(self) -> ClusterStats:
        """A copy of this worker's counters."""
        self._stats.owned = len(self._owned)
        self._stats.pending = len(self._in_flight)
        return attrs.evolve(self._stats)

    def owned_keys(self) -> list[str]:
        """The visitors whose socket this worker holds."""
        return list(self._owned)

    async def chat_started(self, key: str) -> None:
        """A chat started on this worker: activate ``key`` (retried later if Redis fails)."""
        try:
            await self.activate(key)
        except GiosgError as exc:
            # The chat exists: failing start_chat now would invite a second one.
            logger.warning("could not mark a visitor active (%s); retrying", type(exc).__name__)
            self._to_activate.add(key)

    async def activate(self, key: str) -> None:
        """Mark ``key`` active (a chat started): some worker must own its socket."""
        await self._coordinator.activate(key)
        owned = self._owned.get(key)
        if owned is not None:
            owned.rescan.set()
        self._wake.set()

    @asynccontextmanager
    async def inbound(self) -> AsyncIterator[Deliveries]:
        """Consume the delivery stream while the block runs."""
        if self._inbound_open:
            raise RuntimeError("inbound() is already open on this pool")
        self._inbound_open = True
        try:
            await self._coordinator.ensure_group()
            send, receive = anyio.create_memory_object_stream[Delivery]()
            with receive:
                async with anyio.create_task_group() as task_group:
                    task_group.start_soon(self._read_loop, send.clone())
                    task_group.start_soon(self._claim_loop, send.clone())
                    send.close()
                    try:
                        yield Deliveries(receive)
                    finally:
                        # Stop reading before the channel closes: nothing is read for nobody.
                        task_group.cancel_scope.cancel()
            await self._give_back()
        finally:
            self._inbound_open = False

    # Placement -------------------------------------------------------------------------------

    async def _placement_loop(self) -> None:
        tick = self._coordinator.lease_seconds / 3
        epoch = -1
        while not self._stopping:
            try:
                epoch, members = await self._coordinator.heartbeat()
                self._stats.members = len(members)
                await self._place(members)
            except GiosgError as exc:
                logger.warning("cluster placement failed: %s", type(exc).__name__)
                await anyio.sleep(_ERROR_PAUSE)
                continue
            # Sleep until the next tick, or until placement changed somewhere.
            deadline = self._clock.monotonic() + tick
            while not self._stopping:
                left = deadline - self._clock.monotonic()
                if left <= 0:
                    break
                with anyio.move_on_after(min(_EPOCH_POLL, left)):
                    await self._wake.wait()
                if self._wake.is_set():
                    self._wake = anyio.Event()
                    break
                try:
                    if await self._coordinator.epoch() != epoch:
                        break
                except GiosgError:
                    pass

    async def _place(self, members: list[str]) -> None:
        assert self._task_group is not None
        me = self._coordinator.worker_id
        for key in sorted(self._to_activate):
            await self._coordinator.activate(key)
            self._to_activate.discard(key)
        active = await self._coordinator.active()
        for key, owned in list(self._owned.items()):
            if key not in active:
                # Deactivated (by this owner when idle): nothing to hold.
                owned.scope.cancel()
                continue
            if active[key] != owned.seen_activity:
                owned.seen_activity = active[key]
                owned.rescan.set()
            preferred = preferred_owner(key, members)
            if preferred not in (None, me) and not self._stopping and key not in self._leaving:
                # In its own task: closing a visitor must not hold up placement.
                self._leaving.add(key)
                self._task_group.start_soon(self._hand_over, key, owned)
        if self._stopping or me not in members:
            return
        wanted = [
            key
            for key in active
            if key not in self._owned
            and key not in self._leaving
            and preferred_owner(key, members) == me
        ]
        for start in range(0, len(wanted), _CLAIM_BATCH):
            batch = wanted[start : start + _CLAIM_BATCH]
            # A lease counts from before the claim was sent: Redis's TTL starts later.
            claimed_at = self._clock.monotonic()
            for key, lease in zip(batch, await self._coordinator.claim_many(batch), strict=True):
                # None: the previous owner has not let go yet; the epoch moves when it does.
                if lease is not None and key not in self._owned and not self._stopping:
                    self._stats.leases_taken += 1
                    owned = _Owned(lease, claimed_at, active[key])
                    self._owned[key] = owned
                    self._task_group.start_soon(self._own, owned)

    async def _hand_over(self, key: str, owned: _Owned) -> None:
        try:
            owned.scope.cancel()
            await owned.done.wait()
            if await self._coordinator.release(owned.lease):
                self._stats.leases_handed_over += 1
            logger.debug("handed visitor %s over", key)
        except GiosgError as exc:
            logger.warning("could not hand a visitor over: %s", type(exc).__name__)
        finally:
            self._leaving.discard(key)

    # Leases --------------------------------------------------------------------------------

    async def _renewal_loop(self) -> None:
        """Renew every third of a lease; stop owning by two thirds without a renewal.

        A lease claimed at ``t`` (or last renewed by a call that started at ``t``) is
        Redis's until ``t + lease``. After a failed renewal the loop tries again at the
        latest at ``t + 2/3 lease``, and a visitor whose renewal has not succeeded by then
        is dropped, however long Redis takes to answer.
        """
        lease_seconds = self._coordinator.lease_seconds
        tick = lease_seconds / 3
        delay = tick
        while not self._stopping:
            await self._clock.sleep(delay)
            owned = list(self._owned.values())
            started = self._clock.monotonic()
            deadlines = [item.renewed_at + 2 * tick for item in owned]
            limit = min([tick, *(deadline - started for deadline in deadlines)])
            results: list[bool] | None = None
            with anyio.move_on_after(max(0.01, limit)):
                try:
                    results = await self._coordinator.renew([item.lease for item in owned])
                except GiosgError as exc:
                    logger.warning("lease renewal failed: %s", type(exc).__name__)
            now = self._clock.monotonic()
            if results is None and limit > 0.01 and now - started >= limit:
                logger.warning("lease renewal failed: no answer within %.2f s", limit)
            earliest: float | None = None
            verdicts = results if results is not None else [False] * len(owned)
            for item, deadline, ok in zip(owned, deadlines, verdicts, strict=True):
                if ok:
                    item.renewed_at = started
                elif results is not None or now >= deadline:
                    # Refused, or too close to expiry to go on acting as owner.
                    self._lose(item)
                else:
                    earliest = deadline if earliest is None else min(earliest, deadline)
            delay = tick if earliest is None else max(0.01, min(tick, earliest - now))

    def _lose(self, owned: _Owned) -> None:
        if self._owned.get(owned.lease.key) is owned:
            self._stats.leases_lost += 1
            logger.info("lost the lease of visitor %s", owned.lease.key)
            owned.scope.cancel()
            del self._owned[owned.lease.key]
            self._wake.set()

    # Owner: the visitor's socket -----------------------------------------------------------------

    async def _own(self, owned: _Owned) -> None:
        key = owned.lease.key
        try:
            async with AsyncExitStack() as stack:
                async with self._start_limiter:
                    visitor = await stack.enter_async_context(self._make_visitor(key))
                # Only the work is cancelled: the visitor then closes in the ordinary way
                # (closing it under a cancelled scope leaves its socket unsubscribing
                # into a task group that has already ended).
                with owned.scope:
                    async with anyio.create_task_group() as task_group:
                        await self._follow(owned, visitor, task_group)
        except (GiosgError, BaseExceptionGroup) as exc:
            leaf = _leaf(exc)
            if leaf is None:
                raise
            if isinstance(leaf, LeaseLostError):
                self._lose(owned)
            else:
                await self._give_up(owned, leaf)
        finally:
            if self._owned.get(key) is owned and owned.scope.cancel_called and not self._stopping:
                # Cancelled by placement (hand-over) or deactivation: forget it here.
                del self._owned[key]
            owned.done.set()

    async def _follow(
        self, owned: _Owned, visitor: Visitor, task_group: anyio.abc.TaskGroup
    ) -> None:
        """Pump every open chat; rescan when a chat starts or ends; end when idle."""
        pumping: set[str] = set()
        idle = self._coordinator.idle_seconds
        while True:
            owned.rescan = anyio.Event()
            all_ended = True
            async for chat in visitor.chats():
                if chat.is_ended:
                    continue
                all_ended = False
                if chat.id not in pumping:
                    pumping.add(chat.id)
                    task_group.start_soon(self._pump, owned, chat)
            if all_ended and await self._coordinator.deactivate(owned.lease):
                logger.debug("visitor %s is idle: no longer active", owned.lease.key)
                owned.scope.cancel()
                return
            # A new chat or an ended one sets ``rescan``; the timeout is a safety net
            # (and, with every chat ended, when the idle time may have passed).
            with anyio.move_on_after(max(1.0, idle / 2) if all_ended else idle):
                await owned.rescan.wait()

    async def _give_up(self, owned: _Owned, error: GiosgError) -> None:
        """The visitor could not start or its socket failed for good: free the lease so
        that placement (here or elsewhere) tries again."""
        key = owned.lease.key
        logger.warning("owner of visitor %s stopped: %s", key, type(error).__name__)
        if self._owned.get(key) is not owned:
            return
        del self._owned[key]
        with anyio.CancelScope(shield=True), anyio.move_on_after(5):
            try:
                await self._coordinator.release(owned.lease, counter="")
            except GiosgError:
                pass
        await anyio.sleep(_ERROR_PAUSE)
        self._wake.set()

    async def _pump(self, owned: _Owned, chat: Chat) -> None:
        """Publish the chat's operator messages after its cursor, then live ones."""
        coordinator = self._coordinator
        cursor = await coordinator.cursor(owned.lease.key, chat.id)
        skip: set[str] = set()
        if cursor is not None:
            ids = [message.id for message in await chat.history()]
            if cursor in ids:
                skip = set(ids[: ids.index(cursor) + 1])
        async with anyio.create_task_group() as task_group:
            task_group.start_soon(self._watch_end, owned, chat)
            await self._publish_all(owned, chat, skip)

    async def _watch_end(self, owned: _Owned, chat: Chat) -> None:
        await chat.wait_ended()
        owned.rescan.set()

    async def _publish_all(self, owned: _Owned, chat: Chat, skip: set[str]) -> None:
        coordinator = self._coordinator
        async with chat.messages() as stream:
            async for message in stream:
                if message.id in skip or message.is_from_visitor:
                    continue
                if await coordinator.publish(owned.lease, chat.id, message):
                    self._stats.published += 1
                else:
                    self._stats.duplicates += 1

    # Inbound ---------------------------------------------------------------------------------

    async def _read_loop(self, send: MemoryObjectSendStream[Delivery]) -> None:
        with send:
            while True:
                try:
                    entries = await self._coordinator.read(count=16, block_ms=_READ_BLOCK_MS)
                    await self._hand_to_app(entries, send, redelivered=False)
                except GiosgError as exc:
                    logger.warning("reading deliveries failed: %s", type(exc).__name__)
                    await anyio.sleep(_ERROR_PAUSE)

    async def _claim_loop(self, send: MemoryObjectSendStream[Delivery]) -> None:
        interval = max(0.2, self._coordinator.redeliver_after / 4)
        rounds = 0
        with send:
            while True:
                await anyio.sleep(interval)
                try:
                    entries = await self._coordinator.autoclaim()
                    fresh = [entry for entry in entries if entry.entry_id not in self._in_flight]
                    self._stats.redelivered += len(fresh)
                    await self._hand_to_app(fresh, send, redelivered=True)
                    rounds += 1
                    if rounds % 8 == 1:
                        await self._coordinator.trim()
                except GiosgError as exc:
                    logger.warning("claiming deliveries failed: %s", type(exc).__name__)

    async def _hand_to_app(
        self,
        entries: list[StreamEntry],
        send: MemoryObjectSendStream[Delivery],
        *,
        redelivered: bool,
    ) -> None:
        if not entries:
            return
        # Pending here from now on: given back on exit if the app never saw them.
        self._in_flight.update(entry.entry_id for entry in entries)
        done = await self._coordinator.acked([entry.message.id for entry in entries])
        for entry, already in zip(entries, done, strict=True):
            if already:
                await self._coordinator.drop(entry.entry_id)
                self._in_flight.discard(entry.entry_id)
                continue
            delivery = Delivery(
                key=entry.key,
                chat_id=entry.chat_id,
                message=entry.message,
                entry_id=entry.entry_id,
                redelivered=redelivered,
                ack=self._ack,
            )
            self._stats.delivered += 1
            await send.send(delivery)

    async def _ack(self, delivery: Delivery) -> None:
        result = await self._coordinator.ack(delivery.entry_id, delivery.message.id)
        self._in_flight.discard(delivery.entry_id)
        if result == 1:
            self._stats.acked += 1
            return
        self._stats.ack_refused += 1
        if result == 0:
            raise DeliveryLostError(f"message {delivery.message.id} was acknowledged before")
        raise DeliveryLostError(
            f"delivery {delivery.entry_id} was taken over by another worker; "
            "it is acknowledged there"
        )

    async def _give_back(self) -> None:
        entries, self._in_flight = sorted(self._in_flight), set()
        if not entries:
            return
        with anyio.CancelScope(shield=True), anyio.move_on_after(5):
            try:
                await self._coordinator.give_back(entries)
            except GiosgError as exc:
                logger.warning("could not give deliveries back: %s", type(exc).__name__)


def _leaf(exc: BaseException) -> GiosgError | None:
    """The error that ended an owner: a lost lease first, else any SDK error."""
    leaves: list[BaseException] = []

    def walk(error: BaseException) -> None:
        if isinstance(error, BaseExceptionGroup):
            for inner in error.exceptions:
                walk(inner)
        else:
            leaves.append(error)

    walk(exc)
    for leaf in leaves:
        if isinstance(leaf, LeaseLostError):
            return leaf
    for leaf in leaves:
        if isinstance(leaf, GiosgError):
            return leaf
    return None
