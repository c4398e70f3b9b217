"""A conformance suite for :class:`~giosg_visitor.stores.Store` implementations.

In the spirit of ``trio.testing.check_two_way_stream``: one coroutine that exercises the
whole contract and fails with an :class:`AssertionError` saying which promise was broken.
"""

from __future__ import annotations

import inspect
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Final, NoReturn

import anyio
import attrs

from giosg_visitor._secret import Secret
from giosg_visitor.errors import StoreError
from giosg_visitor.stores import OrganizationSession, StoredToken, VisitorRecord
from giosg_visitor.stores.base import Store


__all__ = ["check_store"]

StoreFactory = Callable[[], Store | Awaitable[Store]]
Outage = Callable[[], AbstractAsyncContextManager[object]]

# How long a second holder is watched to make sure it cannot enter a held lock.
_EXCLUSION_WINDOW: Final = 0.2
# Generous bound for things that must happen (a free lock taken, saves finished).
_DEADLINE: Final = 10.0
_CONCURRENT_SAVES: Final = 50


class _ProbeError(Exception):
    """Raised inside ``lock()`` to check that the lock is released on error."""


def _fail(message: str) -> NoReturn:
    raise AssertionError(f"check_store: {message}")


async def check_store(store: Store | StoreFactory, *, outage: Outage | None = None) -> None:
    """Check that ``store`` keeps the :class:`~giosg_visitor.stores.Store` contract.

    Runs on asyncio and trio. Only fresh random keys (``check-store/<uuid>/...``) are used
    and deleted again, so it may run against a store that holds real data. It checks:

    * ``load`` of a missing key returns ``None``;
    * ``save`` then ``load`` round-trips records exactly, secrets included (sessions,
      tokens, a token-only record; keys with Unicode, ``/``, ``:`` and spaces);
    * ``save`` overwrites, ``delete`` forgets, deleting a missing key is no error;
    * saving or deleting one key never disturbs another, also with 50 concurrent saves;
    * ``lock(key)`` keeps a second holder of the same key out until it is released, while
      another key's lock stays free; ``save`` works while the lock is held;
    * the lock is released on an exception in the block, on cancellation inside it and
      when a waiter is cancelled;
    * with ``outage``: while the backing storage is unavailable, ``save`` raises a
      :class:`~giosg_visitor.StoreError` whose message and chain hold no secret of the
      record, ``load`` and ``lock`` either work or raise a ``StoreError``, and afterwards
      the record saved before the outage is still there and saves work again.

    Args:
        store: A store, or a callable (sync or async) that returns one; it is called once.
        outage: A callable returning an async context manager inside which the store's
            storage fails (another process holding a SQLite database with
            ``BEGIN EXCLUSIVE``, a Redis server that is stopped, a folder made
            immutable): how to break it is the caller's to know.

    Raises:
        AssertionError: A check failed; the message says which.
    """
    resolved: object = store
    # A class is a factory even though, as an object, it has every method of the protocol.
    if isinstance(store, type) or not isinstance(store, Store):
        if not callable(store):
            raise TypeError(f"expected a Store or a factory, got {type(store).__name__}")
        made = store()
        resolved = await made if inspect.isawaitable(made) else made
    if not isinstance(resolved, Store):
        raise TypeError(f"the factory returned {type(resolved).__name__}, not a Store")
    await _Suite(resolved, outage=outage).run()


@attrs.define
class _Suite:
    store: Store
    outage: Outage | None = None
    prefix: str = attrs.field(factory=lambda: f"check-store/{uuid.uuid4().hex}/")
    used: set[str] = attrs.field(factory=set)

    def key(self, name: str) -> str:
        key = self.prefix + name
        self.used.add(key)
        return key

    async def run(self) -> None:
        await self.check_missing()
        await self.check_round_trip()
        await self.check_overwrite_and_delete()
        await self.check_isolation()
        await self.check_concurrent_saves()
        await self.check_lock_excludes()
        await self.check_lock_per_key()
        await self.check_save_under_lock()
        await self.check_lock_released_on_error()
        await self.check_lock_released_on_cancel()
        await self.check_cancelled_waiter()
        if self.outage is not None:
            await self.check_outage(self.outage)
        for key in sorted(self.used):
            await self.store.delete(key)
        for key in sorted(self.used):
            if await self.store.load(key) is not None:
                _fail(f"load({key!r}) returned a record after the suite deleted it")

    # Records and keys. ----------------------------------------------------------------------

    async def expect(self, key: str, expected: VisitorRecord | None, context: str) -> None:
        try:
            loaded = await self.store.load(key)
        except Exception as exc:
            _fail(f"{context}: load({key!r}) raised {type(exc).__name__}: {exc}")
        if expected is None:
            if loaded is not None:
                _fail(f"{context}: load({key!r}) returned {loaded!r}, expected None")
            return
        if not isinstance(loaded, VisitorRecord):
            _fail(f"{context}: load({key!r}) returned {loaded!r}, expected a VisitorRecord")
        _compare(loaded, expected, f"{context}: load({key!r})")

    async def check_missing(self) -> None:
        await self.expect(self.key("never-saved"), None, "a key that was never saved")

    async def check_round_trip(self) -> None:
        records = {
            "plain": _record(),
            "ünïcødé-ключ-鍵-🔑": _record(sessions=2, tokens=1),
            "with/slash:and:colon/": _record(sessions=1),
            "with spaces and \t tab": _record(tokens=2),
            "token-only": _record(secret=False, tokens=1),
            "long-" + "x" * 120: _record(sessions=3, tokens=2),
        }
        for name, record in records.items():
            key = self.key(name)
            await self.store.save(key, record)
            await self.expect(key, record, "round trip after save")

    async def check_overwrite_and_delete(self) -> None:
        key = self.key("overwrite")
        first, second = _record(sessions=1), _record(tokens=1)
        await self.store.save(key, first)
        await self.store.save(key, second)
        await self.expect(key, second, "save over an existing record")
        await self.store.delete(key)
        await self.expect(key, None, "after delete")
        for attempt in ("a deleted key", "a never-saved key"):
            missing = key if attempt == "a deleted key" else self.key("never-saved-either")
            try:
                await self.store.delete(missing)
            except Exception as exc:
                _fail(f"delete() of {attempt} raised {type(exc).__name__}: {exc}")
        await self.store.save(key, first)
        await self.expect(key, first, "save after delete")

    async def check_isolation(self) -> None:
        a, b = self.key("isolation-a"), self.key("isolation-b")
        record_a, record_b = _record(sessions=1), _record(sessions=1, tokens=1)
        await self.store.save(a, record_a)
        await self.store.save(b, record_b)
        await self.expect(a, record_a, "saving another key")
        await self.store.delete(b)
        await self.expect(a, record_a, "deleting another key")
        await self.expect(b, None, "after delete")

    async def check_concurrent_saves(self) -> None:
        records = {
            self.key(f"concurrent-{i}"): _record(sessions=i % 3) for i in range(_CONCURRENT_SAVES)
        }
        errors: list[BaseException] = []

        async def save(key: str, record: VisitorRecord) -> None:
            try:
                await self.store.save(key, record)
            except Exception as exc:
                errors.append(exc)

        with anyio.move_on_after(_DEADLINE) as scope:
            async with anyio.create_task_group() as tg:
                for key, record in records.items():
                    tg.start_soon(save, key, record)
        if errors:
            _fail(
                f"{len(errors)} of {_CONCURRENT_SAVES} concurrent saves raised, the first "
                f"{type(errors[0]).__name__}: {errors[0]}"
            )
        if scope.cancelled_caught:
            _fail(f"{_CONCURRENT_SAVES} concurrent saves did not finish in {_DEADLINE} s")
        for key, record in records.items():
            await self.expect(key, record, f"{_CONCURRENT_SAVES} concurrent saves")

    # Locks. -----------------------------------------------------------------------------

    async def acquire_free(self, key: str, context: str) -> None:
        """Take and release ``lock(key)``, failing if it is not free within the deadline."""
        with anyio.move_on_after(_DEADLINE) as scope:
            async with self.store.lock(key):
                pass
        if scope.cancelled_caught:
            _fail(f"lock({key!r}) could not be taken within {_DEADLINE} s {context}")

    async def check_lock_excludes(self) -> None:
        key = self.key("lock-excludes")
        entered = anyio.Event()
        entered_while_held = released_but_stuck = False

        async def second_holder() -> None:
            async with self.store.lock(key):
                entered.set()

        # Failures are raised after the task group, which would wrap them in a group.
        async with anyio.create_task_group() as tg:
            async with self.store.lock(key):
                tg.start_soon(second_holder)
                with anyio.move_on_after(_EXCLUSION_WINDOW):
                    await entered.wait()
                entered_while_held = entered.is_set()
            if not entered_while_held:
                with anyio.move_on_after(_DEADLINE) as scope:
                    await entered.wait()
                released_but_stuck = scope.cancelled_caught
            tg.cancel_scope.cancel()
        if entered_while_held:
            _fail(f"a second lock({key!r}) was entered while the first was held")
        if released_but_stuck:
            _fail(f"a waiting lock({key!r}) was not entered after the holder released it")

    async def check_lock_per_key(self) -> None:
        held, other = self.key("lock-held"), self.key("lock-other")
        async with self.store.lock(held):
            await self.acquire_free(other, f"while lock({held!r}) was held (locks are per key)")

    async def check_save_under_lock(self) -> None:
        key = self.key("save-under-lock")
        record = _record(sessions=1, tokens=1)
        with anyio.move_on_after(_DEADLINE) as scope:
            async with self.store.lock(key):
                await self.store.save(key, record)
                await self.expect(key, record, "save() while holding lock(key)")
        if scope.cancelled_caught:
            _fail(f"save() or load() while holding lock({key!r}) did not finish (deadlock?)")

    async def check_lock_released_on_error(self) -> None:
        key = self.key("lock-error")
        try:
            async with self.store.lock(key):
                raise _ProbeError
        except _ProbeError:
            pass
        else:
            _fail(f"lock({key!r}) swallowed an exception raised inside its block")
        await self.acquire_free(key, "after an exception inside the previous holder's block")

    async def check_lock_released_on_cancel(self) -> None:
        key = self.key("lock-cancel")
        with anyio.CancelScope() as scope:
            async with self.store.lock(key):
                scope.cancel()
                await anyio.sleep_forever()
        await self.acquire_free(key, "after the previous holder was cancelled inside it")

    async def check_cancelled_waiter(self) -> None:
        key = self.key("lock-cancelled-waiter")
        entered = False

        async def waiter() -> None:
            nonlocal entered
            with anyio.move_on_after(_EXCLUSION_WINDOW / 2):
                async with self.store.lock(key):
                    entered = True

        async with self.store.lock(key), anyio.create_task_group() as tg:
            tg.start_soon(waiter)
        if entered:
            _fail(f"a second lock({key!r}) was entered while the first was held")
        await self.acquire_free(key, "after a waiter was cancelled")

    # Failures. ---------------------------------------------------------------------------

    async def check_outage(self, outage: Outage) -> None:
        key = self.key("outage")
        before, during = _record(sessions=1, tokens=1), _record(sessions=1, tokens=1)
        await self.store.save(key, before)
        secrets_during = _secrets_of(during)
        raised: BaseException | None = None
        async with outage():
            try:
                await self.store.save(key, during)
            except Exception as exc:
                raised = exc
            if raised is None:
                _fail("save() during the outage returned instead of raising a StoreError")
            if not isinstance(raised, StoreError):
                _fail(
                    f"save() during the outage raised {type(raised).__name__}, not a "
                    "StoreError subclass"
                )
            _no_secret_in_chain(raised, secrets_during, "save() during the outage")
            try:
                loaded = await self.store.load(key)
            except StoreError as exc:
                _no_secret_in_chain(exc, _secrets_of(before), "load() during the outage")
            except Exception as exc:
                _fail(f"load() during the outage raised {type(exc).__name__}, not a StoreError")
            else:
                if loaded is not None:
                    _compare(loaded, before, "load() during the outage (a failed save)")
            try:
                with anyio.move_on_after(_DEADLINE):
                    async with self.store.lock(key):
                        pass
            except StoreError:
                pass
            except Exception as exc:
                _fail(f"lock() during the outage raised {type(exc).__name__}, not a StoreError")
        await self.expect(key, before, "after the outage (the save during it failed)")
        await self.store.save(key, during)
        await self.expect(key, during, "a save after the outage")


def _secrets_of(record: VisitorRecord) -> list[str]:
    values = [s.reveal() for s in (record.visitor_secret_id,) if s is not None]
    values += [s.access_token.reveal() for s in record.sessions.values()]
    values += [t.access_token.reveal() for t in record.tokens.values()]
    return values


def _no_secret_in_chain(error: BaseException, values: list[str], context: str) -> None:
    """Fail if a secret is in the message or repr of ``error`` or of its causes."""
    seen: BaseException | None = error
    depth = 0
    while seen is not None and depth < 10:
        text = f"{seen} {seen!r}"
        if any(value in text for value in values):
            _fail(f"{context}: {type(seen).__name__} quotes a secret of the record")
        seen = seen.__cause__ or seen.__context__
        depth += 1


def _compare(loaded: VisitorRecord, expected: VisitorRecord, context: str) -> None:
    """Compare field by field so the message says what differs (secrets are masked)."""
    if loaded == expected:
        return
    if _reveal(loaded.visitor_secret_id) != _reveal(expected.visitor_secret_id):
        _fail(f"{context}: visitor_secret_id differs from the saved one")
    for name in ("sessions", "tokens"):
        got, want = getattr(loaded, name), getattr(expected, name)
        if set(got) != set(want):
            _fail(f"{context}: {name} keys {sorted(got)} != saved {sorted(want)}")
        for item, value in want.items():
            if got[item] != value:
                field_name = next(
                    (
                        field.name
                        for field in attrs.fields(type(value))
                        if _reveal(getattr(got[item], field.name))
                        != _reveal(getattr(value, field.name))
                    ),
                    "?",
                )
                _fail(f"{context}: {name}[{item!r}].{field_name} differs from the saved value")
    _fail(f"{context}: returned {loaded!r}, saved {expected!r}")


def _reveal(value: object) -> object:
    return value.reveal() if isinstance(value, Secret) else value


def _record(*, secret: bool = True, sessions: int = 0, tokens: int = 0) -> VisitorRecord:
    """A record full of random secrets (some non-ASCII) and odd but valid values."""
    now = time.time()

    def token() -> Secret:
        return Secret(f"{secrets.token_urlsafe(24)}-é✓\"\\'")

    return VisitorRecord(
        visitor_secret_id=Secret(secrets.token_urlsafe(32)) if secret else None,
        sessions={
            org: OrganizationSession(
                organization_id=org,
                visitor_id=secrets.token_hex(16),
                socket_url="https://messagerouter.giosg.com",
                access_token=token(),
                expires_at=now + 3600.125 * (i + 1),
                lifetime=3600.0,
                extra={"minimal_bar_version": i, "nested": {"list": [1, 2.5, None, "ü"]}},
            )
            for i, org in ((i, f"org-{i}-{uuid.uuid4().hex[:8]}") for i in range(sessions))
        },
        tokens={
            f"token-{i}": StoredToken(
                access_token=token(),
                refresh_token=token() if i % 2 == 0 else None,
                expires_at=now + 60.5 * (i + 1),
                lifetime=60.5,
                scope="read write" if i else None,
            )
            for i in range(tokens)
        },
        version=secrets.randbelow(1_000_000),
    )
