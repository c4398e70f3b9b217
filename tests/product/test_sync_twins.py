"""Every public member of the async API has its blocking twin in giosg_visitor.sync.

The twins are generated from the async methods and properties (descriptors in
``sync.py``); the few written by hand (lifecycles, streams, waits) must still match:
same parameters, names, kinds, defaults and annotations, except that a waiting call or a
stream may take one more trailing ``timeout`` (default ``None``). ``VisitorPool`` has no
blocking twin (the pool serves many visitors on one loop; the blocking API is one
visitor per thread), so it is not listed.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from giosg_visitor import chat as async_chat, rooms, sync, visitor as async_visitor
from giosg_visitor.realtime import streams
from giosg_visitor.testing import FakeGiosg

from .._helpers import ORG_ID


ROOM_ID = "9926bdfa-56e0-11e5-b98c-6c4008c08dfe"
OTHER_ORG = "0b5f1c8e-56e1-11e5-b98c-6c4008c08dfe"

PAIRS: list[tuple[type, type]] = [
    (async_visitor.Visitor, sync.Visitor),
    (async_chat.Chat, sync.Chat),
    (async_chat.MessageStream, sync.MessageStream),
    (async_chat.MemberStream, sync.MemberStream),
    (rooms.OnlineOperators, sync.OnlineOperators),
    (streams.Subscription, sync.Subscription),
]

#: Async protocol methods and their blocking names.
RENAMED = {
    "aclose": "close",
    "__aenter__": "__enter__",
    "__aexit__": "__exit__",
    "__aiter__": "__iter__",
    "__anext__": "__next__",
}


def public_members(cls: type) -> Iterator[tuple[str, Any]]:
    """The async class's public API: properties, methods, coroutines, async iterators."""
    for name in sorted(dir(cls)):
        if name.startswith("_") and name not in RENAMED:
            continue
        member = inspect.getattr_static(cls, name)
        if isinstance(member, property) or inspect.isfunction(member):
            yield name, member


def signature_without_self(func: Callable[..., Any]) -> list[inspect.Parameter]:
    parameters = list(inspect.signature(func).parameters.values())
    if parameters and parameters[0].name == "self":
        parameters = parameters[1:]
    return parameters


def twin_of(sync_cls: type, name: str) -> Any:
    # An instance that was never set up: reading a generated twin binds it without I/O.
    return getattr(object.__new__(sync_cls), RENAMED.get(name, name))


def pairs_and_members() -> Iterator[Any]:
    for async_cls, sync_cls in PAIRS:
        for name, member in public_members(async_cls):
            yield pytest.param(async_cls, sync_cls, name, member, id=f"{sync_cls.__name__}.{name}")


@pytest.mark.parametrize(("async_cls", "sync_cls", "name", "member"), list(pairs_and_members()))
def test_every_async_member_has_a_blocking_twin(
    async_cls: type, sync_cls: type, name: str, member: Any
) -> None:
    twin_name = RENAMED.get(name, name)
    static = inspect.getattr_static(sync_cls, twin_name, None)
    assert static is not None, f"sync.{sync_cls.__name__} lacks {twin_name} (async: {name})"
    if isinstance(member, property):
        assert isinstance(static, property | sync._Mirror), (
            f"sync.{sync_cls.__name__}.{twin_name} must be a property like the async one"
        )
        return
    twin = twin_of(sync_cls, name)
    assert callable(twin)
    assert not inspect.iscoroutinefunction(twin), f"{twin_name} must block, not return a coroutine"
    expected = signature_without_self(member)
    actual = signature_without_self(twin)
    if len(actual) == len(expected) + 1:
        extra = actual[-1]
        assert (extra.name, extra.default) == ("timeout", None), (twin_name, extra)
        assert name.startswith("wait_") or _returns_a_stream(async_cls, member), (
            f"only waits and streams take a timeout; {twin_name} does not wait"
        )
        actual = actual[:-1]
    assert actual == expected, f"sync.{sync_cls.__name__}.{twin_name}: {actual} != {expected}"


def _returns_a_stream(async_cls: type, member: Callable[..., Any]) -> bool:
    module = inspect.getmodule(async_cls)
    annotation = inspect.signature(member).return_annotation
    returned = getattr(module, annotation, None) if isinstance(annotation, str) else annotation
    return returned is not None and hasattr(returned, "__anext__")


def test_generated_twins_carry_the_async_docstring_and_signature() -> None:
    twin = twin_of(sync.Chat, "send")
    assert twin.__doc__ == async_chat.Chat.send.__doc__
    assert twin.__name__ == "send"
    start_chat = twin_of(sync.Visitor, "start_chat")
    assert inspect.signature(start_chat).return_annotation == "Chat"
    assert [p.name for p in inspect.signature(start_chat).parameters.values()] == [
        "room_id",
        "join_room",
    ]
    assert sync.Chat.id.__doc__ == async_chat.Chat.id.__doc__


def test_a_twin_must_keep_the_async_name() -> None:
    """A generated twin bound to another name is refused when the class is built."""
    # Python 3.11 wraps an error of __set_name__ in a RuntimeError; 3.12 raises it as is.
    with pytest.raises((TypeError, RuntimeError)) as raised:

        class Wrong:
            post = sync._blocking(async_chat.Chat.send)

    assert "same name" in f"{raised.value} {raised.value.__cause__}"


@pytest.fixture
def server() -> Iterator[FakeGiosg]:
    fake = FakeGiosg(organizations={ORG_ID, OTHER_ORG}, rooms=[ROOM_ID])
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()


def test_the_new_twins_work(server: FakeGiosg) -> None:
    """brand, base_url, store, realtime and for_organization, live on the fake."""
    with sync.Visitor(ORG_ID, base_url=server.base_url, key="k1") as visitor:
        brand = visitor.brand(ROOM_ID)
        assert brand is None or isinstance(brand, dict)
        assert str(visitor.base_url) == server.base_url.rstrip("/")
        assert visitor.store is visitor.async_visitor.store
        assert visitor.realtime is visitor.async_visitor.realtime
        assert visitor.http_client is visitor.async_visitor.http_client
        other = visitor.for_organization(OTHER_ORG)
        assert repr(other).endswith("state=anonymous>")
        with other:
            assert other.organization_id == OTHER_ORG
            assert len(other.visitor_id) == 32
            assert other.visitor_id != visitor.visitor_id
        with pytest.raises(RuntimeError, match="closed"):
            other.room(ROOM_ID)
        again = visitor.for_organization(OTHER_ORG).start()
    # Closing the parent closed the visitor that ran on its loop.
    with pytest.raises(RuntimeError, match="closed"):
        again.room(ROOM_ID)
