"""The visitor's public REST endpoints (all but auth, which is ``_auth.py``'s), typed.

Request policy, in one place:

* every call carries the visitor's Bearer token through :class:`~giosg_visitor._auth.VisitorAuth`;
* idempotent calls (GET, PUT, PATCH to a fixed state) retry transient failures (network,
  408, 429, 5xx) with full-jitter backoff inside the retry deadline; 429 waits at least
  ``Retry-After``;
* a message send is never blindly retried: when its outcome is unknown, the chat layer
  reconciles by reading the messages back;
* pagination follows ``next`` as an opaque URL, resolved against the page it came from
  (a relative ``?cursor=3`` stays on that page's path), and only while it stays on the
  API origin (the token never goes elsewhere). A ``next`` on the API's own host with
  ``http`` while the API is https (what a server behind a TLS-terminating proxy emits)
  is followed over https; the token is never sent over plain http;
* every non-2xx becomes a typed error carrying status and DRF body.
"""

from __future__ import annotations

import logging
import random
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractContextManager
from typing import Any, Final, final

import httpx

from ._clock import Clock
from ._facts import API_PREFIX
from ._http import (
    USER_AGENT,
    ResponseLimits,
    Retries,
    api_error,
    map_http_errors,
    same_origin,
    send_bounded,
)
from ._limiter import background
from ._renewal import RetryPolicy
from .errors import ClosedError, GiosgError, ProtocolError, UntrustedEndpointError
from .models import ChatInfo, Membership, Message, OnlineUser, Room, decode_json_object


__all__ = ["MAX_MESSAGE_LENGTH", "VisitorAPI"]

logger = logging.getLogger("giosg_visitor.api")

#: The server's documented limit for a message's text.
MAX_MESSAGE_LENGTH: Final = 2000

#: Guards against a server whose ``next`` links loop forever.
_MAX_PAGES: Final = 10_000

#: Resolved URLs remembered per visitor (its chats, rooms and pages).
_RESOLVED_CACHE: Final = 256
#: Message ids of this visitor's sends remembered for read-back (see ``claim_sent``).
_CLAIMED_CACHE: Final = 10_000


@final
class VisitorAPI:
    """Typed access to the public visitor endpoints for one visitor.

    Args:
        client: The HTTP client.
        auth: The visitor's ``httpx.Auth``.
        base_url: The API origin; paths and ``next`` links are resolved against it.
        organization_id: The visitor's organization.
        visitor_id: Returns the current visitor id (it can change on an identity change).
        clock: Time source for backoff.
        retry: Retry policy for idempotent calls.
        rng: Random draws for jitter.
        limits: Response body limits (``api`` applies here).
        request_timeout: Seconds one attempt may take, response body included.
    """

    def __init__(
        self,
        *,
        client: httpx.AsyncClient,
        auth: httpx.Auth,
        base_url: httpx.URL,
        organization_id: str,
        visitor_id: Callable[[], str],
        clock: Clock,
        retry: RetryPolicy,
        rng: Callable[[], float] = random.random,
        limits: ResponseLimits | None = None,
        request_timeout: float = 60.0,
    ) -> None:
        self._client = client
        self._limits = limits or ResponseLimits()
        self._request_timeout = request_timeout
        self._auth = auth
        self._base_url = base_url
        self._org = organization_id
        self._visitor_id = visitor_id
        self._clock = clock
        self._retry = retry
        self._rng = rng
        self._resolved: dict[str, httpx.URL] = {}
        #: Set when the visitor closes: later calls raise ClosedError, not httpx's error.
        self.closed = False
        # Insertion-ordered: the oldest claim is forgotten first.
        self._claimed: dict[str, None] = {}

    # Paths ------------------------------------------------------------------------------

    def _room_path(self, room_id: str) -> str:
        return f"{API_PREFIX}/orgs/{self._org}/rooms/{_segment(room_id)}"

    def _visitor_path(self) -> str:
        return f"{API_PREFIX}/visitors/{self._visitor_id()}"

    def chats_channel(self) -> str:
        """The real-time channel of this visitor's chats."""
        return f"{self._visitor_path()}/chats"

    def messages_channel(self, chat_id: str) -> str:
        """The real-time channel of a chat's messages."""
        return f"{self._visitor_path()}/chats/{_segment(chat_id)}/messages"

    def memberships_channel(self, chat_id: str) -> str:
        """The real-time channel of a chat's memberships (typing, presence)."""
        return f"{self._visitor_path()}/chats/{_segment(chat_id)}/memberships"

    def online_users_channel(self, room_id: str) -> str:
        """The real-time channel of a room's online operators."""
        return f"{self._room_path(room_id)}/online_users"

    # Endpoints ----------------------------------------------------------------------------

    async def join_room(self, room_id: str, presence_expires_in: int) -> Mapping[str, Any]:
        """Register the visitor in a room with a presence lifetime."""
        body = {"id": self._visitor_id(), "presence_expires_in": presence_expires_in}
        # Creating the same room visitor twice answers 200: safe to retry.
        return await self._json("POST", f"{self._room_path(room_id)}/visitors", body, retry=True)

    async def refresh_presence(self, room_id: str, presence_expires_in: int) -> Mapping[str, Any]:
        """Refresh the visitor's presence in a room.

        Background work: in a pool it waits for a slot of the pool-wide limit like a
        renewal, ranked by when the presence would lapse (it is refreshed at half its
        lifetime, so half a lifetime from now at the earliest).
        """
        path = f"{self._room_path(room_id)}/visitors/{self._visitor_id()}"
        with background(self._clock.monotonic() + presence_expires_in / 2):
            return await self._json("PATCH", path, {"presence_expires_in": presence_expires_in})

    def catching_up(self) -> AbstractContextManager[None]:
        """Mark reads that catch up after a ``Resubscribed`` or ``Gap`` marker as background work.

        A router restart reconnects every visitor at once, and each visitor's streams then
        read back what they missed: in a pool these reads wait for a slot of the pool-wide
        limit (ranked by the end of one request timeout from now), so the wave cannot flood
        the shared HTTP pool and starve renewals.
        """
        return background(self._clock.monotonic() + self._request_timeout)

    async def create_chat(self, room_id: str) -> ChatInfo:
        """Start a chat in a room (not retried: a retry could start a second chat)."""
        path = f"{self._room_path(room_id)}/visitors/{self._visitor_id()}/chats"
        data = await self._json("POST", path, {"chat_type": "visitor"}, retry=False)
        return ChatInfo.from_api(data)

    def list_chats(self) -> AsyncIterator[ChatInfo]:
        """The visitor's chats, following every page."""
        return self._paginate(f"{self._visitor_path()}/chats", ChatInfo.from_api)

    async def get_chat(self, chat_id: str) -> ChatInfo:
        """One chat."""
        data = await self._json("GET", f"{self._visitor_path()}/chats/{_segment(chat_id)}")
        return ChatInfo.from_api(data)

    async def end_chat(self, chat_id: str) -> ChatInfo:
        """End a chat (``is_ended`` is a fixed target state, so retrying is safe)."""
        path = f"{self._visitor_path()}/chats/{_segment(chat_id)}"
        return ChatInfo.from_api(await self._json("PATCH", path, {"is_ended": True}))

    def list_messages(self, chat_id: str) -> AsyncIterator[Message]:
        """A chat's messages, following every page."""
        path = f"{self._visitor_path()}/chats/{_segment(chat_id)}/messages"
        return self._paginate(path, lambda data: Message.from_api(data, chat_id=chat_id))

    async def send_message(self, chat_id: str, body: Mapping[str, Any]) -> Message:
        """Send a message. Never retried here (see the module docstring)."""
        path = f"{self._visitor_path()}/chats/{_segment(chat_id)}/messages"
        data = await self._json("POST", path, body, retry=False)
        message = Message.from_api(data, chat_id=chat_id)
        self.claim_sent(message.id)
        return message

    def now(self) -> float:
        """The current UNIX time of this API's clock."""
        return self._clock.time()

    def claim_sent(self, message_id: str) -> bool:
        """Remember ``message_id`` as the outcome of one of this visitor's sends.

        A send whose response was lost reads the chat back and takes an unclaimed
        message of its text: claiming keeps a repeated text ("ok", "ok") from taking
        the earlier send's message. Returns ``False`` if it was claimed already.
        """
        if message_id in self._claimed:
            return False
        self._claimed[message_id] = None
        if len(self._claimed) > _CLAIMED_CACHE:
            del self._claimed[next(iter(self._claimed))]
        return True

    def is_claimed(self, message_id: str) -> bool:
        """Whether ``message_id`` is the outcome of an earlier send (see :meth:`claim_sent`)."""
        return message_id in self._claimed

    def list_memberships(self, chat_id: str) -> AsyncIterator[Membership]:
        """A chat's participants."""
        path = f"{self._visitor_path()}/chats/{_segment(chat_id)}/memberships"
        return self._paginate(path, Membership.from_api)

    async def update_chat_membership(self, chat_id: str, changes: Mapping[str, Any]) -> Membership:
        """Typing / window-open status (a full PUT of fixed values: safe to retry)."""
        path = f"{self._visitor_path()}/chat_memberships/{_segment(chat_id)}"
        return Membership.from_api(await self._json("PUT", path, changes))

    async def get_room(self, room_id: str) -> Room:
        """A room."""
        return Room.from_api(await self._json("GET", self._room_path(room_id)))

    async def get_brand(self, room_id: str) -> Mapping[str, Any]:
        """A room's brand (``NotFoundError`` when it has none)."""
        return await self._json("GET", f"{self._room_path(room_id)}/brand")

    def list_online_users(self, room_id: str) -> AsyncIterator[OnlineUser]:
        """The operators online in a room."""
        return self._paginate(f"{self._room_path(room_id)}/online_users", OnlineUser.from_api)

    # Machinery --------------------------------------------------------------------------------

    async def _json(
        self,
        method: str,
        path_or_url: str | httpx.URL,
        body: Mapping[str, Any] | None = None,
        *,
        retry: bool | None = None,
    ) -> dict[str, Any]:
        """One call: the decoded JSON object of a 2xx, or a typed error."""
        response = await self._send(method, path_or_url, body, retry=retry)
        return decode_json_object(response.content, where=f"{method} {response.request.url.path}")

    async def _send(
        self,
        method: str,
        path_or_url: str | httpx.URL,
        body: Mapping[str, Any] | None,
        *,
        retry: bool | None,
    ) -> httpx.Response:
        if self.closed or self._client.is_closed:
            raise ClosedError(
                "the visitor is closed: use its chats inside `async with Visitor(...)` "
                "(or between start() and aclose())"
            )
        url = self._resolve(path_or_url)
        idempotent = method in ("GET", "PUT", "PATCH", "DELETE") if retry is None else retry
        retries = Retries(self._retry, self._clock, self._rng)
        while True:
            attempt = retries.next_attempt()
            timeout = retries.attempt_timeout(self._request_timeout)
            try:
                response = await self._send_once(method, url, body, deadline=timeout)
            except GiosgError as exc:
                delay = retries.failed(exc) if idempotent else None
                if delay is None:
                    raise
                logger.info(
                    "%s %s failed (%s); retry %d in %.2fs",
                    method,
                    url.path,
                    type(exc).__name__,
                    attempt,
                    delay,
                )
                await self._clock.sleep(delay)
            else:
                retries.succeeded()
                return response

    async def backoff(self, attempt: int) -> None:
        """Wait before retry ``attempt`` of a loop over whole calls (a chat's backfill).

        The visitor's :class:`RetryPolicy` backoff (full jitter), on the visitor's clock,
        so that virtual-time tests see it and there is one backoff rule to tune.
        """
        await self._clock.sleep(self._retry.delay(attempt, self._rng()))

    async def _send_once(
        self, method: str, url: httpx.URL, body: Mapping[str, Any] | None, *, deadline: float
    ) -> httpx.Response:
        headers = {"Accept": "application/json", "User-Agent": USER_AGENT}
        what = f"{method} {url.path}"
        with map_http_errors(what):
            request = self._client.build_request(
                method, url, json=body if body is not None else None, headers=headers
            )
        response = await send_bounded(
            self._client,
            request,
            auth=self._auth,
            limit=self._limits.api,
            deadline=deadline,
            what=what,
        )
        if response.is_success:
            return response
        if response.is_redirect:
            raise ProtocolError(f"{method} {url.path}: unexpected redirect; not followed")
        raise api_error(response, now=self._clock.time())

    def _resolve(self, path_or_url: str | httpx.URL) -> httpx.URL:
        # httpx's URL.join parses twice: ~10 % of a message send. Remember the answers.
        key = str(path_or_url)
        url = self._resolved.get(key)
        if url is not None:
            return url
        try:
            url = self._base_url.join(path_or_url)
        except httpx.InvalidURL:
            # Only a server-sent ``next`` link can be malformed here (ids are validated).
            raise ProtocolError("the server sent an invalid URL") from None
        if not same_origin(url, self._base_url):
            raise UntrustedEndpointError(
                "refusing to send the visitor's token to another origin", url=f"{url.host}"
            )
        if len(self._resolved) >= _RESOLVED_CACHE:
            self._resolved.clear()
        self._resolved[key] = url
        return url

    def _next_url(self, page_url: httpx.URL, nxt: str) -> httpx.URL:
        """``next`` resolved against the page's own URL, upgraded to https on our host."""
        try:
            url = page_url.join(nxt)
        except httpx.InvalidURL:
            raise ProtocolError("the server sent an invalid URL") from None
        base = self._base_url
        if (
            url.scheme == "http"
            and base.scheme == "https"
            and url.host == base.host
            and url.port in (None, 80, base.port)
            and not url.userinfo
        ):
            # A TLS-terminating proxy in front of the API makes it write http links to
            # itself. Same host: the https origin is meant; never send the token as is.
            url = url.copy_with(scheme="https", port=base.port)
        return url

    async def _paginate(self, path: str, parse: Callable[[Any], Any]) -> AsyncIterator[Any]:
        url: str | httpx.URL | None = path
        seen: set[str] = set()
        pages = 0
        while url is not None:
            pages += 1
            if pages > _MAX_PAGES:
                raise ProtocolError(f"{path}: more than {_MAX_PAGES} pages; giving up")
            response = await self._send("GET", url, None, retry=None)
            page_url = response.request.url
            page = decode_json_object(response.content, where=f"GET {page_url.path}")
            results = page.get("results")
            if not isinstance(results, list):
                raise ProtocolError(f"{path}: page has no 'results' list")
            for item in results:
                yield parse(item)
            nxt = page.get("next")
            if nxt is not None and not isinstance(nxt, str):
                raise ProtocolError(f"{path}: 'next' must be a URL string or null")
            if nxt is None:
                url = None
                continue
            url = self._next_url(page_url, nxt)
            if str(url) in seen:
                raise ProtocolError(f"{path}: pagination loops back to an earlier page")
            seen.add(str(url))


def _segment(value: str) -> str:
    """Validate an id used as one URL path segment (no traversal, no query)."""
    if not isinstance(value, str) or not value:
        raise ValueError("ids must be non-empty strings")
    if any(ch in value for ch in "/?#%\\") or value in (".", ".."):
        raise ValueError(f"not a valid id: {value!r}")
    return value
