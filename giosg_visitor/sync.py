"""A blocking facade over :class:`giosg_visitor.Visitor` for scripts and plain REPLs.

Each :class:`Visitor` here runs its own event loop in a background thread (an anyio
``BlockingPortal``) and drives the async SDK on it, so the blocking calls work anywhere:
in a plain script, in the Python or IPython REPL, and in a Jupyter notebook whose own
event loop is running in the main thread.

Example:
    >>> from giosg_visitor import sync
    >>> with sync.Visitor(ORG_ID) as visitor:
    ...     chat = visitor.start_chat(ROOM_ID)
    ...     chat.send("Hello!")
    ...     for message in chat.messages(timeout=60):
    ...         print(message.sender_public_name, message.message)

Every object mirrors its async counterpart: its calls and properties are generated from
the async ones (same arguments, same documentation). Waiting calls take an optional ``timeout``
(seconds) and raise the built-in :class:`TimeoutError` when it runs out; for the
iterators (messages, member changes, online operators, raw channels) a timeout, like
Ctrl-C, interrupts only the waiting, so no item is ever lost. Close the visitor (or use
``with``) to stop its thread; using any object after that raises :class:`RuntimeError`.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import CancelledError, Future
from contextlib import AbstractContextManager
from functools import partial
from types import TracebackType
from typing import (
    Any,
    ClassVar,
    Concatenate,
    Generic,
    Literal,
    ParamSpec,
    Protocol,
    Self,
    TypeVar,
    TypeVarTuple,
    final,
    overload,
)

import anyio
import httpx
from anyio.from_thread import BlockingPortal, start_blocking_portal

from . import visitor as _visitor
from ._auth import SessionState
from .chat import Chat as _AsyncChat
from .models import ChatInfo, IdentityChange, Membership, Message, OnlineUser
from .realtime.connection import RealtimeConnection
from .realtime.events import SubscriptionEvent
from .realtime.streams import Subscription as _AsyncSubscription
from .rooms import OnlineOperators as _AsyncOnlineOperators
from .stores.base import Store


__all__ = [
    "Chat",
    "MemberStream",
    "MessageStream",
    "OnlineOperators",
    "Subscription",
    "Visitor",
]

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)
PosArgsT = TypeVarTuple("PosArgsT")
P = ParamSpec("P")
R = TypeVar("R")
A = TypeVar("A")
F = TypeVar("F", bound=Callable[..., Any])


class _AsyncSteps(Protocol[T_co]):
    def __anext__(self) -> Awaitable[T_co]: ...


class _AsyncStream(_AsyncSteps[T_co], Protocol[T_co]):
    async def aclose(self) -> None: ...


class _Closable(Protocol):
    def _close_for_shutdown(self) -> None: ...


@final
class _Runner:
    """The portal thread of one sync visitor, and the resources opened through it."""

    def __init__(self, portal: BlockingPortal) -> None:
        self.portal = portal
        self._lock = threading.Lock()
        self._closed = False
        self._resources: dict[int, _Closable] = {}

    @property
    def is_closed(self) -> bool:
        return self._closed

    def call(self, func: Callable[[*PosArgsT], Awaitable[T]], *args: *PosArgsT) -> T:
        """Run ``await func(*args)`` on the loop and wait for it."""
        self._check_open()
        return self._wait(self.portal.start_task_soon(func, *args))

    def submit(self, func: Callable[[], Awaitable[T]]) -> Future[T]:
        """Start ``await func()`` on the loop; the caller waits for the future."""
        self._check_open()
        return self.portal.start_task_soon(func)

    def run_sync(self, func: Callable[[*PosArgsT], T], *args: *PosArgsT) -> T:
        """Run ``func(*args)`` on the loop thread (where the async objects live)."""
        self._check_open()
        return self._wait(self.portal.start_task_soon(func, *args))

    def call_unchecked(self, func: Callable[[*PosArgsT], Awaitable[T]], *args: *PosArgsT) -> T:
        """:meth:`call`, also while closing."""
        return self._wait(self.portal.start_task_soon(func, *args))

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("the visitor is closed")

    @staticmethod
    def _wait(future: Future[T]) -> T:
        try:
            return future.result()
        except CancelledError:
            # The portal cancelled the call because the visitor was closed meanwhile.
            raise RuntimeError("the visitor was closed while waiting") from None
        except BaseException:
            # Interrupted while waiting (Ctrl-C): do not leave the call running on the loop.
            future.cancel()
            raise

    def track(self, resource: _Closable) -> None:
        with self._lock:
            if self._closed:
                raise RuntimeError("the visitor is closed")
            self._resources[id(resource)] = resource

    def untrack(self, resource: _Closable) -> None:
        with self._lock:
            self._resources.pop(id(resource), None)

    def begin_close(self) -> list[_Closable] | None:
        """Mark closed; return the open resources, or ``None`` if already closing."""
        with self._lock:
            if self._closed:
                return None
            self._closed = True
            resources = list(self._resources.values())
            self._resources.clear()
        return resources


async def _with_timeout(seconds: float | None, func: Callable[[], Awaitable[T]]) -> T:
    with anyio.fail_after(seconds):
        return await func()


@final
class _Stepper(Generic[T]):
    """Blocking ``next()`` over an async iterator on the loop.

    A timeout stops the *waiting*, never the step itself: the step keeps running on the
    loop and the next call picks up its result. Cancelling a step instead could lose an
    item (one taken off the stream, or a backfill after a reconnect, cut short).
    """

    def __init__(self, runner: _Runner, anext: Callable[[], Awaitable[T]]) -> None:
        self._runner = runner
        self._anext = anext
        self._step: Future[T] | None = None

    def next(self, timeout: float | None, *, closed: Callable[[], bool]) -> T:
        step = self._step
        if step is None:
            step = self._step = self._runner.submit(self._anext)
        try:
            item = step.result(timeout)
        except TimeoutError as exc:
            if step.done() and not step.cancelled() and step.exception() is exc:
                self._step = None
                raise  # the step itself failed with a TimeoutError
            # Only the wait ran out (or the step finished just now): keep the step.
            raise TimeoutError(f"nothing arrived within {timeout} seconds") from None
        except StopAsyncIteration:
            self._step = None
            raise StopIteration from None
        except CancelledError:
            # Cancelled by close() (here or in another thread): the iteration ends.
            self._step = None
            raise StopIteration from None
        except RuntimeError:
            self._step = None
            if closed():
                raise StopIteration from None
            raise
        except Exception:
            self._step = None
            raise
        self._step = None
        return item


# Generated twins ---------------------------------------------------------------------------
#
# A blocking twin is not written out by hand: each one is a descriptor built from the
# async method or property it mirrors, so its signature and docstring are the async
# one's (tests/product/test_sync_twins.py checks every public member of the async API has its
# twin). Only what genuinely differs is written here: lifecycles, streams (which take a
# ``timeout`` per step) and waits (which take a ``timeout``).


class _Twin(Protocol):
    """What a blocking twin holds: its async object and the runner of its loop."""

    @property
    def _target(self) -> Any: ...

    def _require_runner(self) -> _Runner: ...


@final
class _Blocking(Generic[P, R]):
    """A blocking twin of an async method: awaits it on the visitor's loop and waits.

    ``convert`` turns the async result into its twin (an async ``Chat`` into a
    :class:`Chat`). The bound twin carries the async method's signature (``self``
    dropped, the converted return type) and docstring, for ``help()`` and IDEs.
    """

    def __init__(
        self,
        method: Callable[Concatenate[Any, P], Awaitable[Any]],
        convert: Callable[[Any, Any], R] | None,
        returns: object = inspect.Parameter.empty,
    ) -> None:
        self._method = method
        self._convert = convert
        self._name = method.__name__
        self._owner: type = object  # set by __set_name__
        self.__doc__ = method.__doc__
        signature = inspect.signature(method)
        if convert is not None:
            signature = signature.replace(return_annotation=returns)
        self.__signature__ = signature

    def __set_name__(self, owner: type, name: str) -> None:
        if name != self._name:
            raise TypeError(f"{owner.__name__}.{name} mirrors {self._name}: use the same name")
        self._owner = owner

    @overload
    def __get__(
        self, instance: None, owner: type | None = None
    ) -> Callable[Concatenate[Any, P], R]: ...

    @overload
    def __get__(self, instance: _Twin, owner: type | None = None) -> Callable[P, R]: ...

    def __get__(
        self, instance: _Twin | None, owner: type | None = None
    ) -> Callable[Concatenate[Any, P], R] | Callable[P, R]:
        if instance is None:
            return self._unbound()
        convert = self._convert
        name = self._name

        def blocking(*args: P.args, **kwargs: P.kwargs) -> R:
            runner = instance._require_runner()
            method = getattr(instance._target, name)
            result = runner.call(partial(method, *args, **kwargs))
            return convert(instance, result) if convert is not None else result

        parameters = list(self.__signature__.parameters.values())[1:]
        return self._describe(blocking, self.__signature__.replace(parameters=parameters))

    def _unbound(self) -> Callable[Concatenate[Any, P], R]:
        """The twin as read from the class: a plain function, for ``help()`` and the docs."""

        def unbound(twin: _Twin, /, *args: P.args, **kwargs: P.kwargs) -> R:
            return self.__get__(twin)(*args, **kwargs)

        return self._describe(unbound, self.__signature__)

    def _describe(self, func: F, signature: inspect.Signature) -> F:
        func.__name__ = self._name
        func.__qualname__ = f"{self._owner.__name__}.{self._name}"
        func.__module__ = __name__
        func.__doc__ = self.__doc__
        func.__signature__ = signature  # type: ignore[attr-defined]
        return func


def _blocking(method: Callable[Concatenate[Any, P], Awaitable[R]]) -> _Blocking[P, R]:
    """The blocking twin of ``method`` (same arguments, same result)."""
    return _Blocking(method, None)


def _blocking_to(
    method: Callable[Concatenate[Any, P], Awaitable[A]],
    convert: Callable[[Any, A], R],
    returns: object,
) -> _Blocking[P, R]:
    """The blocking twin of ``method`` whose result becomes ``convert(twin, result)``."""
    return _Blocking(method, convert, returns)


@final
class _Mirror(Generic[T]):
    """A read-only property that reads the async object's property of the same name."""

    def __init__(self, source: Any) -> None:
        self.__doc__ = source.__doc__ if isinstance(source, property) else None
        self._name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self._name = name

    @overload
    def __get__(self, instance: None, owner: type | None = None) -> property: ...

    @overload
    def __get__(self, instance: _Twin, owner: type | None = None) -> T: ...

    def __get__(self, instance: _Twin | None, owner: type | None = None) -> property | T:
        if instance is None:
            # Read from the class, it is a property (for help() and the docs).
            return property(partial(_read, name=self._name), doc=self.__doc__)
        value: T = _read(instance, name=self._name)
        return value


def _read(twin: _Twin, *, name: str) -> Any:
    return getattr(twin._target, name)


class _BlockingStream(Generic[T]):
    """A blocking iterator over an async stream that lives on the visitor's loop."""

    _what: ClassVar[str] = "stream"

    def __init__(
        self,
        runner: _Runner,
        stream: _AsyncSteps[T],
        timeout: float | None,
        release: Callable[[], object],
    ) -> None:
        self._runner = runner
        self._stream = stream
        self._timeout = timeout
        self._closed = False
        self._stepper = _Stepper(runner, stream.__anext__)
        self._release = release  # how to stop following, on the loop
        runner.track(self)

    @classmethod
    def over(cls, runner: _Runner, stream: _AsyncStream[T], timeout: float | None) -> Self:
        """The twin of ``stream``, released with the stream's ``aclose()``."""
        return cls(runner, stream, timeout, partial(runner.call_unchecked, stream.aclose))

    @property
    def _target(self) -> _AsyncSteps[T]:
        return self._stream

    def _require_runner(self) -> _Runner:
        return self._runner

    @property
    def is_closed(self) -> bool:
        """Whether the stream (or its visitor) is closed."""
        return self._closed or self._runner.is_closed

    def __iter__(self) -> Self:
        return self

    def __next__(self) -> T:
        """The next item, waiting at most ``timeout`` seconds (if one was given).

        A timeout (or Ctrl-C) interrupts only the waiting: nothing is lost, and the next
        call continues where this one stopped.

        Raises:
            TimeoutError: Nothing arrived within the timeout (the stream stays usable).
            StopIteration: The stream has ended, or was closed while this call waited.
            RuntimeError: The stream or its visitor was closed before the call.
        """
        if self.is_closed:
            raise RuntimeError(f"the {self._what} is closed")
        return self._stepper.next(self._timeout, closed=lambda: self.is_closed)

    def close(self) -> None:
        """Stop following (releases the subscription). Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self._runner.untrack(self)
        if not self._runner.is_closed:
            self._release()

    def _close_for_shutdown(self) -> None:
        if not self._closed:
            self._closed = True
            self._release()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


@final
class MessageStream(_BlockingStream[Message]):
    """A chat's messages, history then live, each once and in order (blocking iterator).

    Get one from :meth:`Chat.messages`. Iterate with ``for message in stream``; each
    step waits at most the stream's ``timeout``. Close it (or use ``with``) to release
    the subscription early; closing the visitor closes it too.
    """

    def __repr__(self) -> str:
        return f"<sync.MessageStream closed={self.is_closed}>"


@final
class MemberStream(_BlockingStream[Membership]):
    """A chat's membership updates, current members first (blocking iterator).

    Get one from :meth:`Chat.member_changes`.
    """

    def __repr__(self) -> str:
        return f"<sync.MemberStream closed={self.is_closed}>"


@final
class Subscription(_BlockingStream[SubscriptionEvent]):
    """Raw events of a real-time channel (blocking iterator).

    Get one from :meth:`Visitor.subscribe`. Yields
    :class:`~giosg_visitor.Change` notifications and the
    :class:`~giosg_visitor.Resubscribed` / :class:`~giosg_visitor.Gap` markers.
    """

    _stream: _AsyncSubscription

    channel: _Mirror[str] = _Mirror(_AsyncSubscription.channel)
    is_subscribed: _Mirror[bool] = _Mirror(_AsyncSubscription.is_subscribed)
    buffered: _Mirror[int] = _Mirror(_AsyncSubscription.buffered)
    dropped: _Mirror[int] = _Mirror(_AsyncSubscription.dropped)

    def wait_subscribed(self, timeout: float | None = None) -> None:
        """Wait until the server has confirmed the channel.

        Raises:
            TimeoutError: Not confirmed within ``timeout`` seconds.
            SubscriptionError: The server refused the channel.
        """
        self._runner.call(_with_timeout, timeout, self._stream.wait_subscribed)

    def __repr__(self) -> str:
        return f"<sync.Subscription channel={self.channel!r} closed={self.is_closed}>"


@final
class OnlineOperators(_BlockingStream[list[OnlineUser]]):
    """The operators online in a room, live (blocking).

    Get one from :meth:`Visitor.online_operators`; it is following the room already.
    Read :attr:`current`, or iterate to wait for each change (each step waits at most
    the ``timeout`` given to :meth:`Visitor.online_operators`)::

        with visitor.online_operators(ROOM_ID, timeout=30) as operators:
            print([op.public_name for op in operators.current])
            for current in operators:
                print(len(current), "online")
    """

    _what = "online-operators view"
    _stream: _AsyncOnlineOperators

    def __init__(self, runner: _Runner, operators: _AsyncOnlineOperators, timeout: float | None):
        # The async view follows the room while entered: entered here, exited on close.
        context = runner.portal.wrap_async_context_manager(operators)
        context.__enter__()
        release = partial(context.__exit__, None, None, None)
        try:
            super().__init__(runner, operators, timeout, release)
        except BaseException:
            release()  # the visitor closed meanwhile: stop following at once
            raise

    @property
    def room_id(self) -> str:
        """The room."""
        return self._stream.room_id

    @property
    def current(self) -> list[OnlineUser]:
        """The operators online now (as of the last change seen)."""
        if self.is_closed:
            return self._stream.current
        # Read on the loop thread: the loop mutates the underlying dict.
        return self._runner.run_sync(lambda: self._stream.current)

    @property
    def is_online(self) -> bool:
        """Whether any operator is online."""
        return bool(self.current)

    def __repr__(self) -> str:
        online = len(self._stream.current)
        return f"<sync.OnlineOperators room={self.room_id} online={online}>"


def _chat_twin(twin: _Twin, chat: _AsyncChat) -> Chat:
    return Chat(twin._require_runner(), chat)


@final
class Chat:
    """One chat of the visitor (blocking twin of :class:`giosg_visitor.Chat`).

    Get one from :meth:`Visitor.start_chat`, :meth:`Visitor.chat` or :meth:`Visitor.chats`.
    Its :attr:`info` (and so :attr:`is_ended` and :attr:`is_waiting`) follows the server
    live while the visitor is open. Every call takes the arguments of its async twin.
    """

    def __init__(self, runner: _Runner, chat: _AsyncChat) -> None:
        self._runner = runner
        self._chat = chat

    @property
    def _target(self) -> _AsyncChat:
        return self._chat

    def _require_runner(self) -> _Runner:
        return self._runner

    id: _Mirror[str] = _Mirror(_AsyncChat.id)
    room_id: _Mirror[str | None] = _Mirror(_AsyncChat.room_id)
    info: _Mirror[ChatInfo] = _Mirror(_AsyncChat.info)
    is_ended: _Mirror[bool] = _Mirror(_AsyncChat.is_ended)
    is_waiting: _Mirror[bool] = _Mirror(_AsyncChat.is_waiting)

    refresh = _blocking(_AsyncChat.refresh)
    send = _blocking(_AsyncChat.send)
    choose = _blocking(_AsyncChat.choose)
    history = _blocking(_AsyncChat.history)
    transcript = _blocking(_AsyncChat.transcript)
    members = _blocking(_AsyncChat.members)
    typing = _blocking(_AsyncChat.typing)
    set_participating = _blocking(_AsyncChat.set_participating)
    end = _blocking(_AsyncChat.end)

    def wait_changed(self, timeout: float | None = None) -> ChatInfo:
        """Wait for the next change of :attr:`info` and return it.

        Raises:
            TimeoutError: No change within ``timeout`` seconds.
        """
        return self._runner.call(_with_timeout, timeout, self._chat.wait_changed)

    def wait_ended(self, timeout: float | None = None) -> None:
        """Wait until the chat has ended (returns at once if it has).

        Raises:
            TimeoutError: Still open after ``timeout`` seconds.
        """
        self._runner.call(_with_timeout, timeout, self._chat.wait_ended)

    def messages(
        self, *, include_history: bool = True, timeout: float | None = None
    ) -> MessageStream:
        """History, then live messages: each exactly once, in server order, gap-free.

        Args:
            include_history: Yield the messages sent before the call first.
            timeout: Seconds each step may wait for the next message before
                :class:`TimeoutError` (``None``: no limit).
        """
        stream = self._runner.run_sync(
            partial(self._chat.messages, include_history=include_history)
        )
        return MessageStream.over(self._runner, stream, timeout)

    def member_changes(self, *, timeout: float | None = None) -> MemberStream:
        """Live membership updates (operators joining, typing, leaving), current first.

        Args:
            timeout: Seconds each step may wait before :class:`TimeoutError`.
        """
        stream = self._runner.run_sync(self._chat.member_changes)
        return MemberStream.over(self._runner, stream, timeout)

    def __repr__(self) -> str:
        state = "ended" if self.is_ended else ("waiting" if self.is_waiting else "open")
        return f"<sync.Chat {self.id} {state}>"


@final
class Visitor:
    """A visitor in Giosg live chat, with blocking calls (runs its own event loop thread).

    Takes the same arguments as :class:`giosg_visitor.Visitor`. Start it with ``with``
    (or :meth:`start`, then :meth:`close`): starting authenticates or resumes the visitor
    and opens the real-time socket, on a loop in a background thread, so it also works
    while another event loop (Jupyter's, say) runs in the calling thread. Every call
    takes the arguments of its async twin; properties read the async visitor's.

    Example:
        >>> with Visitor(ORG_ID, base_url=giosg.base_url) as visitor:
        ...     chat = visitor.start_chat(ROOM_ID)
        ...     chat.send("Hello!")

    Args:
        organization_id: The Giosg organization (UUID).
        backend: The event loop that runs the visitor: ``"asyncio"`` or ``"trio"``.
        backend_options: Options for that backend (as for :func:`anyio.run`).
        **kwargs: Everything else :class:`giosg_visitor.Visitor` accepts
            (``base_url``, ``store``, ``key``, ``timeouts``...).

    Raises:
        ValueError: An argument is invalid (checked at once, before anything starts).
    """

    def __init__(
        self,
        organization_id: str,
        *,
        backend: Literal["asyncio", "trio"] = "asyncio",
        backend_options: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if backend not in ("asyncio", "trio"):
            raise ValueError('backend must be "asyncio" or "trio"')
        # Creating the async visitor does no I/O and binds nothing to a loop: it only
        # checks the arguments, so mistakes surface here rather than in the thread.
        self._setup(_visitor.Visitor(organization_id, **kwargs), parent=None)
        self._backend = backend
        self._backend_options = backend_options

    def _setup(self, visitor: _visitor.Visitor, parent: Visitor | None) -> None:
        self._visitor = visitor
        # A visitor from for_organization() runs on its parent's loop (it may share the
        # parent's HTTP client, which belongs to that loop).
        self._parent = parent
        self._portal_context: AbstractContextManager[BlockingPortal] | None = None
        self._visitor_context: AbstractContextManager[_visitor.Visitor] | None = None
        self._runner: _Runner | None = None
        self._start_lock = threading.Lock()
        self._started = False
        self._closed = False

    @property
    def _target(self) -> _visitor.Visitor:
        return self._visitor

    # Lifecycle ----------------------------------------------------------------------------

    def start(self) -> Self:
        """Start the loop thread and the visitor (auth or resume, socket open).

        Returns:
            The visitor itself, so ``visitor = sync.Visitor(ORG_ID).start()`` works.

        Raises:
            RuntimeError: Started before (a visitor starts only once).
            GiosgError: Authentication or connection failed (the thread is stopped).
        """
        with self._start_lock:
            if self._closed:
                raise RuntimeError("the visitor is closed")
            if self._started:
                raise RuntimeError("a Visitor can be started only once; create a new one")
            self._started = True
        if self._parent is not None:
            parent_runner = self._parent._require_runner()
            visitor_context = parent_runner.portal.wrap_async_context_manager(self._visitor)
            visitor_context.__enter__()
            self._visitor_context = visitor_context
            self._runner = _Runner(parent_runner.portal)
            parent_runner.track(self)
            return self
        portal_context = start_blocking_portal(self._backend, self._backend_options)
        portal = portal_context.__enter__()
        visitor_context = portal.wrap_async_context_manager(self._visitor)
        try:
            visitor_context.__enter__()
        except BaseException as exc:
            portal_context.__exit__(type(exc), exc, exc.__traceback__)
            raise
        self._portal_context = portal_context
        self._visitor_context = visitor_context
        self._runner = _Runner(portal)
        return self

    def close(self) -> None:
        """Close open streams, stop the visitor and its loop thread. Safe to call twice.

        Iterations blocked in other threads end (``StopIteration``); other calls blocked
        in other threads raise :class:`RuntimeError`. Visitors made with
        :meth:`for_organization` are closed first (they run on this one's loop).
        """
        with self._start_lock:
            self._closed = True
        runner = self._runner
        if runner is None:
            return
        resources = runner.begin_close()
        if resources is None:
            return
        if self._parent is not None and self._parent._runner is not None:
            self._parent._runner.untrack(self)
        try:
            for resource in reversed(resources):
                resource._close_for_shutdown()
        finally:
            try:
                assert self._visitor_context is not None
                self._visitor_context.__exit__(None, None, None)
            finally:
                if self._portal_context is not None:
                    # Cancel calls still waiting in other threads, then join the loop thread.
                    try:
                        runner.portal.call(runner.portal.stop, True)
                    finally:
                        self._portal_context.__exit__(None, None, None)

    def _close_for_shutdown(self) -> None:
        self.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # Properties ---------------------------------------------------------------------------

    organization_id: _Mirror[str] = _Mirror(_visitor.Visitor.organization_id)
    key: _Mirror[str] = _Mirror(_visitor.Visitor.key)
    visitor_id: _Mirror[str] = _Mirror(_visitor.Visitor.visitor_id)
    identity_change: _Mirror[IdentityChange | None] = _Mirror(_visitor.Visitor.identity_change)
    socket_url: _Mirror[str] = _Mirror(_visitor.Visitor.socket_url)
    base_url: _Mirror[httpx.URL] = _Mirror(_visitor.Visitor.base_url)
    store: _Mirror[Store] = _Mirror(_visitor.Visitor.store)
    # Objects of the visitor's loop: use them only inside call(), on that loop.
    realtime: _Mirror[RealtimeConnection] = _Mirror(_visitor.Visitor.realtime)
    auth: _Mirror[httpx.Auth] = _Mirror(_visitor.Visitor.auth)
    http_client: _Mirror[httpx.AsyncClient] = _Mirror(_visitor.Visitor.http_client)

    @property
    def state(self) -> SessionState:
        """The session state (``ANONYMOUS`` before start, ``CLOSED`` after)."""
        return SessionState.CLOSED if self._closed else self._visitor.state

    @property
    def async_visitor(self) -> _visitor.Visitor:
        """The async :class:`giosg_visitor.Visitor` underneath (use it only via :meth:`call`)."""
        return self._visitor

    # Calls --------------------------------------------------------------------------------

    def call(self, func: Callable[[*PosArgsT], Awaitable[T]], *args: *PosArgsT) -> T:
        """Run ``await func(*args)`` on the visitor's loop and return its result.

        The escape hatch to everything of the async API, e.g.
        ``visitor.call(lambda: visitor.async_visitor.realtime.wait_connected())``.
        """
        return self._require_runner().call(func, *args)

    renew = _blocking(_visitor.Visitor.renew)
    start_chat = _blocking_to(_visitor.Visitor.start_chat, _chat_twin, "Chat")
    chat = _blocking_to(_visitor.Visitor.chat, _chat_twin, "Chat")
    room = _blocking(_visitor.Visitor.room)
    brand = _blocking(_visitor.Visitor.brand)
    join_room = _blocking(_visitor.Visitor.join_room)

    def chats(self) -> list[Chat]:
        """The visitor's chats, oldest first."""
        runner = self._require_runner()

        async def collect() -> list[_AsyncChat]:
            return [chat async for chat in self._visitor.chats()]

        return [Chat(runner, chat) for chat in runner.call(collect)]

    def for_organization(self, organization_id: str) -> Visitor:
        """The same visitor (same secret, store and key) in another organization.

        The returned visitor is not started: use it with ``with`` (or :meth:`start`). It
        runs on this visitor's loop thread, so start it while this one is running; closing
        this one closes it too.
        """
        twin = Visitor.__new__(Visitor)
        twin._setup(self._visitor.for_organization(organization_id), parent=self)
        return twin

    def online_operators(self, room_id: str, *, timeout: float | None = None) -> OnlineOperators:
        """Follow the operators online in a room (current value, then each change).

        Args:
            room_id: The room.
            timeout: Seconds each iteration step may wait for a change before
                :class:`TimeoutError` (``None``: no limit).
        """
        runner = self._require_runner()
        operators = runner.run_sync(self._visitor.online_operators, room_id)
        return OnlineOperators(runner, operators, timeout)

    def subscribe(self, channel: str, *, timeout: float | None = None) -> Subscription:
        """Raw events of a real-time channel, as a blocking iterator.

        Args:
            channel: The channel.
            timeout: Seconds each iteration step may wait before :class:`TimeoutError`.
        """
        runner = self._require_runner()
        # Returned in a tuple: the portal awaits an awaitable result, and a subscription
        # only defines __await__ to explain that it is not meant to be awaited.
        (subscription,) = runner.run_sync(lambda: (self._visitor.subscribe(channel),))
        return Subscription.over(runner, subscription, timeout)

    def _require_runner(self) -> _Runner:
        runner = self._runner
        if self._closed or (runner is not None and runner.is_closed):
            raise RuntimeError("the visitor is closed")
        if runner is None:
            raise RuntimeError("the visitor has not been started (use `with Visitor(...)`)")
        return runner

    def __repr__(self) -> str:
        try:
            visitor_id: str | None = self._visitor.visitor_id
        except RuntimeError:
            visitor_id = None
        return (
            f"<sync.Visitor org={self.organization_id} key={self.key!r} "
            f"visitor_id={visitor_id} state={self.state.value}>"
        )
