"""(e) Renewal spread: N visitors over several token lifetimes, on virtual time.

N visitors (``realtime=False``) are started at the same virtual instant, the worst case
for a thundering herd (a process restart), against FakeGiosg's app in-process (its
``transport()``), everything on one virtual clock. Each visitor also sends a GET every
``lifetime / --requests-per-lifetime`` seconds (random phase) so that an expired token,
if the SDK ever sent one, would be seen by the fake. Then virtual time runs for
``--lifetimes`` token lifetimes.

Reported:

* renewals per token generation (the k-th renewal of every visitor): each must be N
  (+-1 %), i.e. every token renewed exactly once;
* renewals in the whole run vs the number the policy implies for each visitor, and vs
  one renewal per narrow interval from the start (the least a late renewal allows: the
  wide spread of the first renewal after a start should cost about one renewal per
  visitor per start, no more);
* expired-token requests seen by the fake (must be 0);
* the largest number of renewals in any one-second window, against the mean rate over
  the busiest generation's spread (the jitter window) and over the whole run;
* the peak renewal rate (over windows of 1/20 of the first renewal's spread) against
  ``N / spread``: a fleet started at one instant must not renew faster than its jitter
  spreads it.

The "server" is the fake's app on the same loop; it does no I/O, so it cannot be a
bottleneck of what is counted here (counts and virtual timestamps, not throughput).
Target: renewals per lifetime = N +-1 %, zero expired-token requests, and a peak rate of
at most 2 x N / spread.
"""

from __future__ import annotations

import heapq
import itertools
import random
import time
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from typing import Any

import _common as common
import anyio
import anyio.lowlevel
import httpx

from giosg_visitor import MemoryStore, RenewalPolicy, Visitor
from giosg_visitor.stores import VisitorRecord
from giosg_visitor.testing import FakeGiosg


class VirtualClock:
    """A virtual :class:`~giosg_visitor.Clock` that wakes sleepers in batches.

    Like ``giosg_visitor.testing.FakeClock``, but sleepers whose deadlines fall within
    ``resolution`` of each other wake together, and "everything is idle again" is checked
    cheaply per backend (anyio's ``wait_all_tasks_blocked`` sleeps 0.1 s of real time on
    asyncio whenever a task is still runnable, far too slow for 10^4 wake-ups).
    """

    def __init__(self, backend: str, *, resolution: float = 0.01) -> None:
        self._now = 1000.0
        self._wall_offset = 1_700_000_000.0 - self._now
        self._sleepers: list[tuple[float, int, anyio.Event]] = []
        self._counter = itertools.count()
        self._backend = backend
        self._resolution = resolution

    def monotonic(self) -> float:
        """Virtual monotonic seconds."""
        return self._now

    def time(self) -> float:
        """Virtual UNIX time."""
        return self._now + self._wall_offset

    async def sleep(self, seconds: float) -> None:
        """Sleep ``seconds`` of virtual time."""
        if seconds <= 0:
            await anyio.lowlevel.checkpoint()
            return
        event = anyio.Event()
        heapq.heappush(self._sleepers, (self._now + seconds, next(self._counter), event))
        await event.wait()

    async def settle(self) -> None:
        """Return once every other task is blocked (no I/O is in flight in this bench)."""
        if self._backend == "trio":
            import trio.testing

            await trio.testing.wait_all_tasks_blocked()
            return
        import asyncio

        loop = asyncio.get_running_loop()
        idle_rounds = 0
        while idle_rounds < 2:
            await asyncio.sleep(0)
            # Bench-only peek at the loop's ready queue: empty twice in a row = idle.
            idle_rounds = idle_rounds + 1 if not loop._ready else 0  # type: ignore[attr-defined]

    async def run_until(self, when: float) -> None:
        """Advance virtual time to ``when``, waking sleepers batch by batch."""
        await self.settle()
        while self._sleepers and self._sleepers[0][0] <= when:
            deadline = self._sleepers[0][0]
            self._now = max(self._now, deadline)
            while self._sleepers and self._sleepers[0][0] <= deadline + self._resolution:
                heapq.heappop(self._sleepers)[2].set()
            await self.settle()
        self._now = max(self._now, when)


class RecordingStore:
    """A MemoryStore that remembers when each key was saved (= each token obtained)."""

    def __init__(self, clock: VirtualClock) -> None:
        self._inner = MemoryStore()
        self._clock = clock
        self.saves: dict[str, list[float]] = {}

    async def load(self, key: str) -> VisitorRecord | None:
        """As MemoryStore."""
        return await self._inner.load(key)

    async def save(self, key: str, record: VisitorRecord) -> None:
        """As MemoryStore, noting the virtual time."""
        self.saves.setdefault(key, []).append(self._clock.monotonic())
        await self._inner.save(key, record)

    async def delete(self, key: str) -> None:
        """As MemoryStore."""
        await self._inner.delete(key)

    def lock(self, key: str) -> AbstractAsyncContextManager[None]:
        """As MemoryStore."""
        return self._inner.lock(key)


@asynccontextmanager
async def world(
    count: int, lifetime: float, clock: VirtualClock, store: RecordingStore
) -> AsyncIterator[tuple[FakeGiosg, list[Visitor], httpx.AsyncClient]]:
    """FakeGiosg in-process on the virtual clock, and ``count`` started visitors."""
    giosg = FakeGiosg(token_lifetime=lifetime, clock=clock)
    async with (
        httpx.AsyncClient(transport=giosg.transport()) as client,
        AsyncExitStack() as stack,
    ):
        visitors = []
        for i in range(count):
            visitor = Visitor(
                common.ORG_ID,
                base_url=giosg.base_url,
                clock=clock,
                http_client=client,
                store=store,
                key=f"user-{i}",
                realtime=False,
            )
            visitors.append(await stack.enter_async_context(visitor))
        yield giosg, visitors, client


def max_in_window(times: list[float], window: float) -> int:
    """The most events in any window of ``window`` seconds (sliding)."""
    best = 0
    start = 0
    for end, t in enumerate(times):
        while t - times[start] >= window:
            start += 1
        best = max(best, end - start + 1)
    return best


async def run(args: Any) -> dict[str, Any]:
    """Start the visitors, run the traffic and the clock, collect the journal."""
    clock = VirtualClock(args.backend)
    store = RecordingStore(clock)
    rng = random.Random(args.seed)
    duration = args.lifetimes * args.lifetime
    statuses: dict[int, int] = {}
    wall = time.perf_counter()
    async with world(args.visitors, args.lifetime, clock, store) as (giosg, visitors, client):
        started_at = clock.monotonic()
        period = args.lifetime / args.requests_per_lifetime

        async def traffic(visitor: Visitor) -> None:
            url = f"{giosg.base_url}/api/v5/public/visitors/{visitor.visitor_id}/chats"
            await clock.sleep(rng.uniform(0, period))
            while True:
                response = await client.get(url, auth=visitor.auth)
                statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
                await clock.sleep(period)

        async with anyio.create_task_group() as tg:
            for visitor in visitors:
                tg.start_soon(traffic, visitor)
            await clock.run_until(started_at + duration)
            tg.cancel_scope.cancel()
        expired = len(giosg.expired_token_requests)
        requests = len(giosg.requests)
    return {
        "saves": store.saves,
        "started_at": started_at,
        "duration": duration,
        "expired": expired,
        "statuses": statuses,
        "requests": requests,
        "wall": time.perf_counter() - wall,
    }


def main() -> None:
    """Parse arguments, run, print the tables and the ratio."""
    parser = common.parser(__doc__.splitlines()[0])
    parser.add_argument("--visitors", type=int, default=1000, help="N")
    parser.add_argument("--lifetime", type=float, default=1800.0, help="token lifetime, s")
    parser.add_argument("--lifetimes", type=float, default=6.0, help="run length")
    parser.add_argument("--requests-per-lifetime", type=float, default=4.0)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    policy = RenewalPolicy()
    low = policy.soft_offset(args.lifetime, 1.0)
    high = policy.soft_offset(args.lifetime, 0.0)
    # The first renewal after the start has the wide spread (if the policy has one).
    first_spread = getattr(policy, "first_spread", None)
    first = first_spread(args.lifetime) if first_spread is not None else high - low
    first_low = min(low, high - first)
    common.print_header(
        "bench_renewal: renewal spread on virtual time",
        backend=args.backend,
        visitors=args.visitors,
        lifetime=f"{args.lifetime:g} s (renewal {low:g}-{high:g} s after issue, jittered;"
        f" the first after the start {first_low:g}-{high:g} s)",
        run=f"{args.lifetimes:g} lifetimes, all visitors started at the same instant",
        traffic=f"one GET per visitor every {args.lifetime / args.requests_per_lifetime:g} s",
    )
    result = common.run(lambda: run(args), args.backend)
    n = args.visitors
    start, end = result["started_at"], result["started_at"] + result["duration"]
    renewals = {key: times[1:] for key, times in result["saves"].items()}
    every = sorted(t for times in renewals.values() for t in times)

    # Generations: the k-th renewal of each visitor. Complete when even the slowest
    # visitor (interval `high` plus a little latency) had time for it.
    complete = int((end - start) // (high + 1.0))
    rows: list[list[object]] = []
    worst = 1.0
    for k in range(1, complete + 1):
        times = sorted(ts[k - 1] for ts in renewals.values() if len(ts) >= k)
        ratio = len(times) / n
        if abs(ratio - 1) > abs(worst - 1):
            worst = ratio
        rows.append(
            [
                f"generation {k}",
                len(times),
                ratio,
                times[0] - start if times else 0.0,
                times[-1] - start if times else 0.0,
                (times[-1] - times[0]) if times else 0.0,
                max_in_window(times, 1.0),
            ]
        )
    common.print_table(
        [
            "",
            "renewals",
            "/ N",
            "first at s",
            "last at s",
            "spread s",
            "max in 1 s",
        ],
        rows,
    )
    # Per visitor: the intervals the policy allows, and the count it implies.
    # "steady": the count if every renewal, the first included, came at the visitor's
    # narrow interval (a token renewed once per narrow interval: the least possible).
    expected = 0
    steady = 0
    bad_intervals = 0
    for times in renewals.values():
        if not times:
            continue
        intervals = [b - a for a, b in itertools.pairwise([start, *times])]
        bad_intervals += int(not first_low - 1e-6 <= intervals[0] <= high + 1.0)
        bad_intervals += sum(1 for i in intervals[1:] if not low - 1e-6 <= i <= high + 1.0)
        later = intervals[1:] or intervals
        interval = sum(later) / len(later)
        expected += 1 + int((end - start - intervals[0]) // interval)
        steady += int((end - start) // interval)
    gen1 = sorted(ts[0] for ts in renewals.values() if ts)
    peak = max_in_window(every, 1.0)
    # The fleet starts at one instant, so the jitter alone spreads it: at most about
    # N / spread renewals per second. One-second counts of a few renewals are mostly
    # Poisson noise, so the bound is checked on windows of 1/20 of the spread.
    spread = max(1.0, high - first_low)
    bound = n / spread
    window = max(1.0, spread / 20)
    peak_rate = max_in_window(every, window) / window
    gen1_rate = len(gen1) / max(1.0, gen1[-1] - gen1[0]) if gen1 else 0.0
    run_rate = len(every) / result["duration"]
    print(f"renewals in the run: {len(every):,} (the policy implies {expected:,} for these")
    print(
        f"  visitors' intervals); intervals outside [{first_low:g}, {high:g}+1] s (first) or"
        f" [{low:g}, {high:g}+1] s (later): {bad_intervals}"
    )
    print(
        f"renewals against one per narrow interval from the start ({steady:,}):"
        f" {len(every) / max(1, steady):.3f}"
    )
    print(
        f"largest number of renewals in any 1 s window: {peak}; mean {gen1_rate:.1f}/s over"
        f" the first generation's spread ({peak / gen1_rate:.2f}x), {run_rate:.2f}/s over"
        " the run"
    )
    print(
        f"N / spread = {n:,} / {spread:g} s = {bound:.2f}/s; peak rate over {window:g} s windows"
        f" {peak_rate:.2f}/s ({peak_rate / bound:.2f}x), in any 1 s: {peak} ({peak / bound:.2f}x)"
    )
    print(f"requests: {result['requests']:,}, statuses {result['statuses']}")
    print(f"expired-token requests seen by the fake: {result['expired']}")
    print(f"(simulated {result['duration']:,.0f} s in {result['wall']:.1f} s of real time)")
    spread_ok = peak_rate <= 2 * bound
    others_ok = (
        result["expired"] == 0 and abs(len(every) - expected) <= 0.01 * expected and spread_ok
    )
    print(
        "zero expired-token requests, run total within 1 % of the policy, peak rate"
        f" <= 2 x N / spread: {'yes' if others_ok else 'NO'}"
    )
    common.ratio_line(
        "renewals_per_lifetime_over_n", worst, "==", 1.0, tolerance=0.01, require=others_ok
    )


if __name__ == "__main__":
    main()
