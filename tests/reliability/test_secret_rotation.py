"""A rotated ``visitor_secret_id`` is stored before it is used, even under SIGKILL.

Giosg's docs warn that the secret auth echoes is not guaranteed to stay the one that was
sent. The SDK therefore saves an auth answer (the record with the new secret) before the
answer's token or secret is used, and the old secret is only forgotten by that save.

``FakeGiosg(rotate_secrets=...)`` answers every auth that carries a secret with a new one:
``"grace"`` keeps every superseded secret valid for the same visitor for a while (here:
longer than the whole test), ``"strict"`` accepts only the newest.

* In-process ordering, for all four stores (memory, file, SQLite, Redis): on every request
  the SDK sends, the store already holds the newest secret the fake issued for the visitor.
  This is the only meaningful check for ``MemoryStore``: it lives in the process, so
  nothing of it survives a kill, and "durable" for it means "in the store before any
  request uses it".
* SIGKILL trials, for FileStore, SQLiteStore and RedisStore: a forked worker
  (``_rotation_child.py``, against the fake in this process) renews and makes a request in
  a loop; it is killed at a random point between an auth request being sent and the next
  request being sent, and the next worker on the same store must resume the same visitor
  (its start includes a renewal, so the stored secret is really presented). In grace mode
  every trial resumes the same visitor. In strict mode a visitor can only be lost when the
  kill fell inside "response received -> durable save done" (or the fake had answered and
  the answer was still in flight to the dead worker, which no client can help); every
  loss must be explained that way. The window's duration is measured on every renewal
  (p50/p99 go to the figures). Every worker also shows the order itself: after each auth
  answer, its save is done before the next request is sent.
* A kill almost always lands while the worker holds the store's renewal lock (the auth
  request and the save happen under it), so the restarted worker first has to get past a
  lock whose holder died. FileStore's lock is a kernel lock, dropped with the process.
  SQLiteStore's lease (30 s by default) is taken over at once when its holder is dead
  (the holder keeps a kernel lock on a byte of ``<path>.holders``): the trials use the
  default lease and bound every restart well below it, and
  ``test_a_lease_left_by_a_killed_process_does_not_delay_the_next_one`` checks it
  directly. A Redis lease can only expire (Redis cannot see a client's death), so a
  restart waits up to ``lease_seconds``: the Redis trials use ``REDIS_TRIAL_LEASE``
  (see there).

Short mode: ``SHORT_TRIALS`` kills per store, split over both modes and both backends.
The long mode (``scripts/reliability --long``) runs ``GIOSG_ROTATION_TRIALS`` (default
1,000) per store.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final, cast

import anyio
import attrs
import httpx
import pytest
from anyio.streams.buffered import BufferedByteReceiveStream

from giosg_visitor import Visitor
from giosg_visitor.stores import FileStore, MemoryStore, RedisStore, SQLiteStore, Store
from giosg_visitor.testing import FakeGiosg, RotationMode

from .._helpers import ORG_ID
from ._rotation_child import FAST_RENEWAL, ROOM_ID
from .figures import WINDOW_HISTOGRAM, Figures


ROOT = Path(__file__).resolve().parents[2]
TRIALS_ENV = "GIOSG_ROTATION_TRIALS"
#: Kills per store in the default suite (over 2 modes x 2 backends).
SHORT_TRIALS = 100
#: Kills per store in the long mode (unless GIOSG_ROTATION_TRIALS says otherwise).
LONG_TRIALS = 1000
#: A generous bound for the median of "response received -> durable save done" (it is a
#: few milliseconds; the p99, which the target puts under 50 ms, is printed, not asserted).
WINDOW_P50_BOUND: Final = 0.25
#: Longer than any run: in grace mode a superseded secret never runs out during a test.
GRACE = 3600.0
#: The Redis lease of the trial workers. Nearly every kill leaves the dead worker's lease
#: behind, and Redis only drops it when it expires, so each restart waits up to this long
#: (with the default 30 s, 100 trials would take close to an hour). Short is safe here:
#: a lease only has to outlast a renewal while another process competes for it, and the
#: trials never run two workers at once.
REDIS_TRIAL_LEASE: Final = 0.05
#: A restart (fork, start, first renewal) that takes longer than this waited for a dead
#: worker's lock: the default leases are 30 s, a restart takes tens of milliseconds.
RESTART_BOUND: Final = 10.0


def _store(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> Store:
    if kind == "memory":
        return MemoryStore()
    if kind == "file":
        return FileStore(tmp_path / "visitors.json")
    if kind == "sqlite":
        return SQLiteStore(tmp_path / "visitors.sqlite3")
    url: str = request.getfixturevalue("redis_url")
    return RedisStore(url, prefix=f"rotation-{os.getpid()}-{time.monotonic_ns()}:")


STORES: Final = ("file", "sqlite", "redis")


def _newest_secret(giosg: FakeGiosg, visitor_id: str) -> str | None:
    for identity in giosg.state.visitors.values():
        if identity.visitor_ids.get(ORG_ID) == visitor_id:
            return identity.secret
    return None


@pytest.mark.parametrize("kind", ["memory", *STORES])
async def test_the_rotated_secret_is_in_the_store_before_any_request_uses_it(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest, figures: Figures
) -> None:
    """Strict rotation, 30 renewals: every request finds the newest secret stored."""
    store = _store(kind, tmp_path, request)
    violations: list[str] = []
    checked = 0
    async with FakeGiosg(rooms=[ROOM_ID], rotate_secrets="strict") as giosg:

        async def check(sent: httpx.Request) -> None:
            nonlocal checked
            record = await store.load("default")
            if record is None or record.visitor_secret_id is None:
                if giosg.state.rotations or giosg.state.visitors:
                    violations.append(f"{sent.method} {sent.url.path}: nothing stored")
                return
            session = record.sessions.get(ORG_ID)
            assert session is not None
            newest = _newest_secret(giosg, session.visitor_id)
            checked += 1
            if record.visitor_secret_id.reveal() != newest:
                violations.append(
                    f"{sent.method} {sent.url.path} sent while the store held a superseded "
                    f"secret (after {giosg.state.rotations} rotations)"
                )

        async with (
            httpx.AsyncClient(event_hooks={"request": [check]}) as client,
            Visitor(
                ORG_ID,
                base_url=giosg.base_url,
                store=store,
                http_client=client,
                realtime=False,
                renewal=FAST_RENEWAL,
            ) as visitor,
        ):
            first = visitor.visitor_id
            for _ in range(30):
                await visitor.renew()
                await visitor.room(ROOM_ID)
            assert visitor.visitor_id == first
        assert giosg.state.rotations == 30
    if isinstance(store, SQLiteStore | RedisStore):
        await store.aclose()
    figures.add("trials.rotation_checks", checked)
    figures.add("rotation.order_violations", len(violations))
    assert violations == [], violations[:5]
    assert checked >= 60  # every renewal's auth and every request after it


# SIGKILL trials -----------------------------------------------------------------------------


@attrs.define
class _Trials:
    """What the kills of one (store, mode, backend) run found."""

    kills: int = 0
    lost: int = 0
    #: Where each kill fell: "before the answer", "answer in flight", "save window",
    #: "after the save", "after the next request".
    where: dict[str, int] = attrs.field(factory=dict)
    unexplained: list[str] = attrs.field(factory=list)
    order_violations: list[str] = attrs.field(factory=list)
    windows: list[float] = attrs.field(factory=list)
    cycles: list[float] = attrs.field(factory=list)
    #: Seconds from asking for a worker to its first renewal done (or its loss found).
    restarts: list[float] = attrs.field(factory=list)


def _analyse(events: list[tuple[str, float]], trials: _Trials) -> str:
    """Record windows and order from one worker's events; where its kill fell."""
    last_recv: float | None = None
    saved_since_recv = True
    last_sent: float | None = None
    last = "before the answer"
    for name, at in events:
        if name == "sent":
            last_sent = at
            last = "before the answer"
        elif name == "recv":
            last_recv, saved_since_recv = at, False
            last = "save window"
        elif name == "saved":
            if last_recv is not None and not saved_since_recv:
                trials.windows.append(at - last_recv)
            saved_since_recv = True
            last = "after the save"
        elif name == "next":
            if not saved_since_recv:
                trials.order_violations.append("a request was sent before the answer was saved")
            if last_sent is not None:
                trials.cycles.append(at - last_sent)
            last = "after the next request"
    return last


@attrs.define
class _Zygote:
    """``_rotation_child``'s zygote, shared by the module's trial runs (it starts in ~1 s).

    Lines are read in a worker thread so that one process can serve tests on both
    backends. A run that did not read all its workers' lines (it failed) leaves it
    ``clean = False``, and the next run gets a new zygote.
    """

    process: subprocess.Popen[bytes]
    clean: bool = True

    @classmethod
    def start(cls) -> _Zygote:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.reliability._rotation_child"],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        return cls(process)

    def send(self, command: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write((json.dumps(command) + "\n").encode())
        self.process.stdin.flush()

    async def line(self) -> str:
        assert self.process.stdout is not None
        with anyio.fail_after(60):
            text = await anyio.to_thread.run_sync(
                self.process.stdout.readline, abandon_on_cancel=True
            )
        if not text:
            raise AssertionError("the rotation zygote exited")
        return text.decode().rstrip("\n")

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()  # the zygote's loop ends with its stdin
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()


@pytest.fixture(scope="module")
def zygotes() -> Iterator[Callable[[], _Zygote]]:
    """A function returning the module's zygote (a new one after a failed run)."""
    current: list[_Zygote] = []

    def get() -> _Zygote:
        if current and (not current[0].clean or current[0].process.poll() is not None):
            current.pop().close()
        if not current:
            current.append(_Zygote.start())
        return current[0]

    yield get
    for zygote in current:
        zygote.close()


async def _kill_trials(
    kind: str,
    mode: str,
    backend: str,
    count: int,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> _Trials:
    rng = random.Random(f"{kind}-{mode}-{backend}")
    zygote: _Zygote = request.getfixturevalue("zygotes")()
    base: dict[str, Any] = {"kind": kind, "backend": backend}
    if kind == "file":
        base["path"] = str(tmp_path / f"{mode}.json")
    elif kind == "sqlite":
        base["path"] = str(tmp_path / f"{mode}.sqlite3")
    else:
        base["url"] = request.getfixturevalue("redis_url")
        base["prefix"] = f"rotation-{mode}-{backend}-{time.monotonic_ns()}:"
        base["lease_seconds"] = REDIS_TRIAL_LEASE
    trials = _Trials()
    rotation = cast(RotationMode, mode)
    zygote.clean = False  # until this run has read every line of its workers
    async with FakeGiosg(rooms=[ROOM_ID], rotate_secrets=rotation, rotation_grace=GRACE) as giosg:
        base["base_url"] = giosg.base_url
        line = zygote.line

        def answered() -> int:
            return sum(1 for r in giosg.state.auth_requests if r.status == 200)

        key = 0
        expected: str | None = None
        previous = "none"  # where the previous kill fell
        seen = 0  # auth answers the workers received
        unseen_at_kill = 0
        for trial in range(3 * count + 1):  # the last start only checks the last kill
            command = {**base, "key": f"visitor-{key}"}
            asked = time.monotonic()
            zygote.send(command)
            events: list[tuple[str, float]] = []
            while True:
                text = await line()
                name, _, rest = text.partition(" ")
                if name in ("sent", "recv", "saved", "next"):
                    events.append((name, float(rest)))
                    seen += name == "recv"
                elif name in ("ready", "lost", "exit"):
                    break
                else:
                    raise AssertionError(f"unexpected line from the worker: {text!r}")
            if trial:  # the first start also waits for the zygote's imports
                took = time.monotonic() - asked
                trials.restarts.append(took)
                # At once: every later restart would wait as long.
                assert took < RESTART_BOUND, (
                    f"a restarted worker took {took:.1f} s: it waited for a dead worker's lock"
                )
            if name != "ready":
                # The stored secret no longer authenticates this visitor.
                if name == "lost":
                    assert (await line()).startswith("exit")
                trials.lost += 1
                explained = previous == "save window" or (
                    previous == "before the answer" and unseen_at_kill > 0
                )
                if mode == "grace" or not explained:
                    trials.unexplained.append(f"trial {trial}: lost after a kill {previous}")
                key += 1
                expected = None
                continue
            pid, _, visitor_id = rest.partition(" ")
            if expected is None:
                expected = visitor_id
            elif visitor_id != expected:
                trials.lost += 1
                trials.unexplained.append(f"trial {trial}: another visitor after {previous}")
                expected = visitor_id
            if trials.kills == count:
                with contextlib.suppress(ProcessLookupError):  # it may have failed
                    os.kill(int(pid), signal.SIGKILL)
                while not (await line()).startswith("exit"):
                    pass
                break
            # Wait for an auth request of the loop, then kill at a random point of
            # the cycle up to the next request (the cycle's length is learned).
            while True:
                name, _, rest = (await line()).partition(" ")
                if name == "lost":  # no kill yet: the worker's own renewal was refused
                    raise AssertionError(f"trial {trial}: a running worker lost its visitor")
                events.append((name, float(rest)))
                seen += name == "recv"
                if name == "sent":
                    break
            span = statistics.median(trials.cycles[-50:]) if trials.cycles else 0.01
            await anyio.sleep(rng.uniform(0, span * 1.1))
            with contextlib.suppress(ProcessLookupError):  # it failed: its lines say why
                os.kill(int(pid), signal.SIGKILL)
            trials.kills += 1
            while True:
                text = await line()
                name, _, rest = text.partition(" ")
                if name == "exit":
                    break
                if name == "lost":  # refused before the kill landed
                    raise AssertionError(f"trial {trial}: a running worker lost its visitor")
                events.append((name, float(rest)))
                seen += name == "recv"
            previous = _analyse(events, trials)
            # An answer the fake gave that the dead worker never read.
            await anyio.sleep(0.005)
            unseen_at_kill = answered() - seen
            seen = answered()
            trials.where[previous] = trials.where.get(previous, 0) + 1
        zygote.clean = True
    return trials


def _trial_count(long: bool) -> int:
    if long:
        return int(os.environ.get(TRIALS_ENV, str(LONG_TRIALS)))
    return SHORT_TRIALS


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


async def _check_store(
    kind: str,
    mode: str,
    backend: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    figures: Figures,
    *,
    long: bool = False,
) -> None:
    # Per store the trials are split over both modes and both backends.
    count = max(1, _trial_count(long) // 4)
    trials = await _kill_trials(kind, mode, backend, count, tmp_path, request)
    p50 = _percentile(trials.windows, 0.50)
    p99 = _percentile(trials.windows, 0.99)
    in_window = trials.where.get("save window", 0)
    slowest_restart = max(trials.restarts)
    median_restart = statistics.median(trials.restarts)
    explained = trials.lost - len(trials.unexplained)
    print(
        f"\nrotation {kind}/{mode}/{backend}: {trials.kills} kills {trials.where}, "
        f"{trials.lost} visitors lost ({explained} explained); response->save window over "
        f"{len(trials.windows)} renewals: p50 {p50 * 1000:.2f} ms, p99 {p99 * 1000:.2f} ms; "
        f"restarts: median {median_restart * 1000:.0f} ms, slowest {slowest_restart * 1000:.0f} ms"
    )
    figures.add(f"trials.rotation_kills.{kind}", trials.kills)
    figures.add("faults.sigkill", trials.kills)
    figures.add(f"rotation.lost_{mode}", trials.lost)
    figures.add("rotation.explained_losses", explained)
    figures.add("rotation.kills_in_save_window", in_window)
    figures.add("rotation.unexplained_losses", len(trials.unexplained))
    figures.add("rotation.order_violations", len(trials.order_violations))
    figures.add("rotation.save_windows", len(trials.windows))
    for window in trials.windows:  # a histogram, so the summary pools every run's windows
        figures.add(f"{WINDOW_HISTOGRAM}.{kind}.{int(window * 1e4)}")
    figures.maximum("rotation.slowest_restart_ms", round(slowest_restart * 1e3))
    assert trials.order_violations == [], trials.order_violations[:3]
    assert trials.unexplained == [], trials.unexplained[:5]
    if mode == "grace":
        assert trials.lost == 0
    assert trials.kills == count
    if count >= 10:  # the kills are spread over the cycle
        assert len(set(trials.where)) >= 2, trials.where
    # Only the median is bounded: on a loaded 2-core machine a single save can stall for a
    # few hundred milliseconds (seen: 315 ms), so the p99 is measured and printed instead.
    assert p50 < WINDOW_P50_BOUND, f"the save window's median is {p50 * 1000:.1f} ms"


@pytest.mark.parametrize("mode", ["grace", "strict"])
@pytest.mark.parametrize("kind", STORES)
async def test_sigkill_between_auth_and_the_next_request_keeps_the_visitor(
    kind: str,
    mode: str,
    anyio_backend: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    figures: Figures,
) -> None:
    """Kills around rotating renewals: grace loses no visitor, strict only in the window."""
    await _check_store(kind, mode, anyio_backend, tmp_path, request, figures)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["grace", "strict"])
@pytest.mark.parametrize("kind", STORES)
async def test_sigkill_between_auth_and_the_next_request_keeps_the_visitor_long(
    kind: str,
    mode: str,
    anyio_backend: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    figures: Figures,
) -> None:
    """The same with ``GIOSG_ROTATION_TRIALS`` (default 1,000) kills per store."""
    await _check_store(kind, mode, anyio_backend, tmp_path, request, figures, long=True)


# A dead holder's lease ----------------------------------------------------------------------

_HOLDER = """
import sys, anyio
from giosg_visitor.stores import SQLiteStore

async def main() -> None:
    async with SQLiteStore(sys.argv[1]) as store, store.lock("k"):
        print("holding", flush=True)
        await anyio.sleep_forever()

anyio.run(main)
"""


async def _entered_within(store: SQLiteStore, seconds: float) -> bool:
    with anyio.move_on_after(seconds):
        async with store.lock("k"):
            return True
    return False


async def test_a_lease_left_by_a_killed_process_does_not_delay_the_next_one(
    tmp_path: Path,
) -> None:
    """SQLite: a live holder in another process keeps the lock; killed, it frees it at once.

    The lease is the default 30 s. Before the holder's death was detected, a process
    restarted after a SIGKILL inside ``lock()`` (a renewal) waited those 30 s.
    """
    path = tmp_path / "visitors.sqlite3"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    async with SQLiteStore(path) as store:
        process = await anyio.open_process([sys.executable, "-c", _HOLDER, str(path)], env=env)
        try:
            assert process.stdout is not None
            reader = BufferedByteReceiveStream(process.stdout)
            with anyio.fail_after(30):
                assert await reader.receive_until(b"\n", 100) == b"holding"
            assert store.lease_seconds == 30.0
            assert not await _entered_within(store, 0.5)  # alive: it still excludes
            process.send_signal(signal.SIGKILL)
            await process.wait()
            started = time.monotonic()
            assert await _entered_within(store, 5), "waited for the dead holder's lease"
            assert time.monotonic() - started < 5
        finally:
            if process.returncode is None:
                process.kill()
            await process.aclose()
