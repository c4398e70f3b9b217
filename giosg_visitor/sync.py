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

Every object mirrors its async counterpart. Waiting calls take an optional ``timeout``
(seconds) and raise the built-in :class:`TimeoutError` when it runs out; for the
iterators (messages, member changes, online operators, raw channels) a timeout, like
Ctrl-C, interrupts only the waiting, so no item is ever lost. Close the visitor (or use
``with``) to stop its thread; using any object after that raises :class:`RuntimeError`.
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import CancelledError, Future
from contextlib import AbstractContextManager
from functools import partial
from types import TracebackType
from typing import Any, Generic, Literal, Protocol, Self, TypeVar, TypeVarTuple, final

import anyio
from anyio.from_thread import BlockingPortal, start_blocking_portal

from . import visitor as _visitor
from ._auth import SessionState
from .chat import Chat as _AsyncChat
from .models import Action, ChatInfo, IdentityChange, Membership, Message, OnlineUser, Room
from .notebook import Transcript
from .realtime.events import SubscriptionEvent
from .realtime.streams import Subscription as _AsyncSubscription
from .rooms import OnlineOperators as _AsyncOnlineOperators


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


class _AsyncStream(Protocol[T_co]):
    def __anext__(self) -> Awaitable[T_co]: ...

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


class _BlockingStream(Generic[T]):
    """A blocking iterator over an async stream that lives on the visitor's loop."""

    def __init__(self, runner: _Runner, stream: _AsyncStream[T], timeout: float | None) -> None:
        self._runner = runner
        self._stream = stream
        self._timeout = timeout
        self._closed = False
        self._stepper = _Stepper(runner, stream.__anext__)
        runner.track(self)

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
            raise RuntimeError("the stream is closed")
        return self._stepper.next(self._timeout, closed=lambda: self.is_closed)

    def close(self) -> None:
        """Stop following (releases the subscription). Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self._runner.untrack(self)
        if not self._runner.is_closed:
            self._runner.call_unchecked(self._stream.aclose)

    def _close_for_shutdown(self) -> None:
        if not self._closed:
            self._closed = True
            self._runner.call_unchecked(self._stream.aclose)

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

    def __init__(
        self, runner: _Runner, subscription: _AsyncSubscription, timeout: float | None
    ) -> None:
        super().__init__(runner, subscription, timeout)
        self._subscription = subscription

    @property
    def channel(self) -> str:
        """The channel."""
        return self._subscription.channel

    def wait_subscribed(self, timeout: float | None = None) -> None:
        """Wait until the server has confirmed the channel.

        Raises:
            TimeoutError: Not confirmed within ``timeout`` seconds.
            SubscriptionError: The server refused the channel.
        """
        self._runner.call(_with_timeout, timeout, self._subscription.wait_subscribed)

    def __repr__(self) -> str:
        return f"<sync.Subscription channel={self.channel!r} closed={self.is_closed}>"


@final
class OnlineOperators:
    """The operators online in a room, live (blocking).

    Get one from :meth:`Visitor.online_operators`; it is following the room already.
    Read :attr:`current`, or iterate to wait for each change (each step waits at most
    the ``timeout`` given to :meth:`Visitor.online_operators`)::

        with visitor.online_operators(ROOM_ID, timeout=30) as operators:
            print([op.public_name for op in operators.current])
            for current in operators:
                print(len(current), "online")
    """

    def __init__(
        self,
        runner: _Runner,
        operators: _AsyncOnlineOperators,
        context: AbstractContextManager[_AsyncOnlineOperators],
        timeout: float | None,
    ) -> None:
        self._runner = runner
        self._operators = operators
        self._context = context
        self._timeout = timeout
        self._closed = False
        self._stepper = _Stepper(runner, operators.__anext__)
        runner.track(self)

    @property
    def room_id(self) -> str:
        """The room."""
        return self._operators.room_id

    @property
    def current(self) -> list[OnlineUser]:
        """The operators online now (as of the last change seen)."""
        if self._closed or self._runner.is_closed:
            return self._operators.current
        # Read on the loop thread: the loop mutates the underlying dict.
        return self._runner.run_sync(lambda: self._operators.current)

    @property
    def is_online(self) -> bool:
        """Whether any operator is online."""
        return bool(self.current)

    def __iter__(self) -> Self:
        return self

    def __next__(self) -> list[OnlineUser]:
        """Wait for the next change; return the operators online after it.

        Raises:
            TimeoutError: No change within the timeout (nothing is lost; iterate again).
            StopIteration: The subscription ended, or was closed while this call waited.
            RuntimeError: Closed before the call.
        """
        if self._closed or self._runner.is_closed:
            raise RuntimeError("the online-operators view is closed")
        return self._stepper.next(
            self._timeout, closed=lambda: self._closed or self._runner.is_closed
        )

    def close(self) -> None:
        """Stop following the room. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self._runner.untrack(self)
        if not self._runner.is_closed:
            self._context.__exit__(None, None, None)

    def _close_for_shutdown(self) -> None:
        if not self._closed:
            self._closed = True
            self._context.__exit__(None, None, None)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        online = len(self._operators.current)
        return f"<sync.OnlineOperators room={self.room_id} online={online}>"


@final
class Chat:
    """One chat of the visitor (blocking twin of :class:`giosg_visitor.Chat`).

    Get one from :meth:`Visitor.start_chat`, :meth:`Visitor.chat` or :meth:`Visitor.chats`.
    Its :attr:`info` (and so :attr:`is_ended` and :attr:`is_waiting`) follows the server
    live while the visitor is open.
    """

    def __init__(self, runner: _Runner, chat: _AsyncChat) -> None:
        self._runner = runner
        self._chat = chat

    # Live state ---------------------------------------------------------------------------

    @property
    def id(self) -> str:
        """The chat id."""
        return self._chat.id

    @property
    def room_id(self) -> str | None:
        """The room of the chat."""
        return self._chat.room_id

    @property
    def info(self) -> ChatInfo:
        """The latest chat resource."""
        return self._chat.info

    @property
    def is_ended(self) -> bool:
        """Whether the chat has ended (it then accepts no messages)."""
        return self._chat.is_ended

    @property
    def is_waiting(self) -> bool:
        """Whether the visitor is waiting for an operator's reply."""
        return self._chat.is_waiting

    def refresh(self) -> ChatInfo:
        """Fetch the chat from the server and return it."""
        return self._runner.call(self._chat.refresh)

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

    # Messages -----------------------------------------------------------------------------

    def send(self, text: str) -> Message:
        """Send a text message (never sent twice; see :meth:`giosg_visitor.Chat.send`).

        Raises:
            TypeError: ``text`` is not a string.
            ValueError: ``text`` is empty.
            MessageTooLongError: Longer than the server's limit (not sent).
            ChatEndedError: The chat has ended.
            GiosgError: Another failure (typed).
        """
        return self._runner.call(self._chat.send, text)

    def choose(self, action: Action) -> Message:
        """Send the visitor's choice of a button (see :meth:`giosg_visitor.Chat.choose`).

        Raises:
            NotChoosableError: A link button or an action without ids (nothing was sent).
            ChatEndedError: The chat has ended.
            GiosgError: Another failure (typed).
        """
        return self._runner.call(self._chat.choose, action)

    def history(self) -> list[Message]:
        """Every message so far, oldest first."""
        return self._runner.call(self._chat.history)

    def transcript(self, *, title: str | None = None) -> Transcript:
        """The history as a :class:`~giosg_visitor.notebook.Transcript` (HTML in Jupyter).

        Args:
            title: The heading (default: the chat id).
        """
        return Transcript(self.history(), title=title if title is not None else f"Chat {self.id}")

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
        return MessageStream(self._runner, stream, timeout)

    # Members and typing -------------------------------------------------------------------

    def members(self) -> list[Membership]:
        """The chat's participants (visitor and operators)."""
        return self._runner.call(self._chat.members)

    def member_changes(self, *, timeout: float | None = None) -> MemberStream:
        """Live membership updates (operators joining, typing, leaving), current first.

        Args:
            timeout: Seconds each step may wait before :class:`TimeoutError`.
        """
        stream = self._runner.run_sync(self._chat.member_changes)
        return MemberStream(self._runner, stream, timeout)

    def typing(self, is_typing: bool = True) -> None:
        """Tell the operators whether the visitor is typing."""
        self._runner.call(self._chat.typing, is_typing)

    def set_participating(self, is_participating: bool) -> None:
        """Tell the server whether the visitor's chat window is open."""
        self._runner.call(self._chat.set_participating, is_participating)

    def end(self) -> ChatInfo:
        """End the chat (permanently: it accepts no more messages)."""
        return self._runner.call(self._chat.end)

    def __repr__(self) -> str:
        state = "ended" if self.is_ended else ("waiting" if self.is_waiting else "open")
        return f"<sync.Chat {self.id} {state}>"


@final
class Visitor:
    """A visitor in Giosg live chat, with blocking calls (runs its own event loop thread).

    Takes the same arguments as :class:`giosg_visitor.Visitor`. Start it with ``with``
    (or :meth:`start`, then :meth:`close`): starting authenticates or resumes the visitor
    and opens the real-time socket, on a loop in a background thread, so it also works
    while another event loop (Jupyter's, say) runs in the calling thread.

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
        self._visitor = _visitor.Visitor(organization_id, **kwargs)
        self._backend = backend
        self._backend_options = backend_options
        self._portal_context: AbstractContextManager[BlockingPortal] | None = None
        self._visitor_context: AbstractContextManager[_visitor.Visitor] | None = None
        self._runner: _Runner | None = None
        self._start_lock = threading.Lock()
        self._started = False
        self._closed = False

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
        in other threads raise :class:`RuntimeError`.
        """
        with self._start_lock:
            self._closed = True
        runner = self._runner
        if runner is None:
            return
        resources = runner.begin_close()
        if resources is None:
            return
        try:
            for resource in reversed(resources):
                resource._close_for_shutdown()
        finally:
            try:
                assert self._visitor_context is not None
                self._visitor_context.__exit__(None, None, None)
            finally:
                # Cancel calls still waiting in other threads, then join the loop thread.
                try:
                    runner.portal.call(runner.portal.stop, True)
                finally:
                    assert self._portal_context is not None
                    self._portal_context.__exit__(None, None, None)

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

    @property
    def organization_id(self) -> str:
        """The organization this visitor belongs to."""
        return self._visitor.organization_id

    @property
    def key(self) -> str:
        """The store key (the caller's own id for this visitor)."""
        return self._visitor.key

    @property
    def visitor_id(self) -> str:
        """The public visitor id in this organization.

        Raises:
            RuntimeError: The visitor has not been started.
        """
        return self._visitor.visitor_id

    @property
    def state(self) -> SessionState:
        """The session state (``ANONYMOUS`` before start, ``CLOSED`` after)."""
        return SessionState.CLOSED if self._closed else self._visitor.state

    @property
    def identity_change(self) -> IdentityChange | None:
        """Set when the stored secret was rejected and a new visitor took its place."""
        return self._visitor.identity_change

    @property
    def socket_url(self) -> str:
        """The real-time socket URL from the latest auth response."""
        return self._visitor.socket_url

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

    def renew(self) -> None:
        """Renew the access token now."""
        self._require_runner().call(self._visitor.renew)

    def start_chat(self, room_id: str, *, join_room: bool = True) -> Chat:
        """Start a chat in a room.

        Args:
            room_id: The room.
            join_room: Register the visitor in the room first (and keep its presence fresh).
        """
        runner = self._require_runner()
        start = partial(self._visitor.start_chat, room_id, join_room=join_room)
        return Chat(runner, runner.call(start))

    def chats(self) -> list[Chat]:
        """The visitor's chats, oldest first."""
        runner = self._require_runner()

        async def collect() -> list[_AsyncChat]:
            return [chat async for chat in self._visitor.chats()]

        return [Chat(runner, chat) for chat in runner.call(collect)]

    def chat(self, chat_id: str) -> Chat:
        """One of the visitor's chats by id (``NotFoundError`` if it is not theirs)."""
        runner = self._require_runner()
        return Chat(runner, runner.call(self._visitor.chat, chat_id))

    def room(self, room_id: str) -> Room:
        """A room's public details (``is_online`` among them)."""
        return self._require_runner().call(self._visitor.room, room_id)

    def join_room(self, room_id: str) -> None:
        """Register the visitor in a room and keep its presence fresh until close."""
        self._require_runner().call(self._visitor.join_room, room_id)

    def online_operators(self, room_id: str, *, timeout: float | None = None) -> OnlineOperators:
        """Follow the operators online in a room (current value, then each change).

        Args:
            room_id: The room.
            timeout: Seconds each iteration step may wait for a change before
                :class:`TimeoutError` (``None``: no limit).
        """
        runner = self._require_runner()
        operators = runner.run_sync(self._visitor.online_operators, room_id)
        context = runner.portal.wrap_async_context_manager(operators)
        context.__enter__()
        return OnlineOperators(runner, operators, context, timeout)

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
        return Subscription(runner, subscription, timeout)

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
