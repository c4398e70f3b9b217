"""REST call policy on virtual time: retries, Retry-After, no blind resends, pagination."""

from __future__ import annotations

import httpx
import pytest

from giosg_visitor import (
    APIError,
    ProtocolError,
    RateLimitError,
    RetryPolicy,
    ServerError,
    UntrustedEndpointError,
    Visitor,
)
from giosg_visitor._api import VisitorAPI
from giosg_visitor.testing import FakeClock

from .._helpers import ORG_ID, virtual_world


ROOM_ID = "9926bdfa-56e0-11e5-b98c-6c4008c08dfe"


class TestRetries:
    """Idempotent calls retry transient failures; a message send never does."""

    async def test_get_retries_5xx_with_backoff(self) -> None:
        """Two 503s, then success: the GET is retried with jittered delays."""
        async with virtual_world() as world, world.visitor(realtime=False) as visitor:
            world.giosg.inject(endpoint="api", status=503, times=2, path_contains="/rooms/")
            async with world.clock.autojump():
                room = await visitor.room(ROOM_ID)
            assert room.id == ROOM_ID
            calls = [r for r in world.giosg.requests if "/rooms/" in r.path]
            assert [r.status for r in calls] == [503, 503, 200]
            policy = RetryPolicy()
            assert calls[1].at - calls[0].at <= policy.delay(1, 1.0)
            assert calls[2].at - calls[1].at <= policy.delay(2, 1.0)

    async def test_retry_after_is_honoured(self) -> None:
        """A 429 with Retry-After: 12 delays the retry by at least 12 s."""
        async with virtual_world() as world, world.visitor(realtime=False) as visitor:
            world.giosg.inject(
                endpoint="api", status=429, retry_after="12", path_contains="/rooms/"
            )
            async with world.clock.autojump():
                await visitor.room(ROOM_ID)
            first, second = [r for r in world.giosg.requests if "/rooms/" in r.path]
            assert second.at - first.at >= 12

    async def test_retry_after_beyond_patience_raises(self) -> None:
        """A Retry-After longer than the policy allows is raised as RateLimitError at once."""
        async with virtual_world() as world, world.visitor(realtime=False) as visitor:
            world.giosg.inject(
                endpoint="api", status=429, retry_after="7200", path_contains="/rooms/"
            )
            with pytest.raises(RateLimitError) as info:
                await visitor.room(ROOM_ID)
            assert info.value.retry_after == 7200
            assert info.value.status_code == 429

    async def test_retries_are_bounded(self) -> None:
        """A server that always fails gets max_attempts tries, then a typed ServerError."""
        async with virtual_world() as world:
            retry = RetryPolicy(max_attempts=3)
            async with world.visitor(realtime=False, retry=retry) as visitor:
                world.giosg.inject(endpoint="api", status=500, times=100, path_contains="/rooms/")
                async with world.clock.autojump():
                    with pytest.raises(ServerError) as info:
                        await visitor.room(ROOM_ID)
            assert info.value.body == {"detail": "Injected fault (500)."}
            assert len([r for r in world.giosg.requests if "/rooms/" in r.path]) == 3

    async def test_message_send_is_never_retried_on_5xx(self) -> None:
        """A 503 on send raises at once: resending could duplicate the message."""
        async with virtual_world() as world, world.visitor(realtime=False) as visitor:
            chat = await visitor.start_chat(ROOM_ID, join_room=False)
            world.giosg.inject(endpoint="api", status=503, path_contains="/messages")
            with pytest.raises(ServerError):
                await chat.send("hello")
            posts = [
                r for r in world.giosg.requests if r.method == "POST" and "/messages" in r.path
            ]
            assert len(posts) == 1

    async def test_client_errors_are_typed_with_the_drf_body(self) -> None:
        """A 400 carries status, method, URL and the DRF field errors."""
        async with virtual_world() as world, world.visitor(realtime=False) as visitor:
            world.giosg.inject(
                endpoint="api",
                status=400,
                body={"message": ["This field is required."]},
                path_contains="/rooms/",
            )
            with pytest.raises(APIError) as info:
                await visitor.room(ROOM_ID)
            error = info.value
            assert (error.status_code, error.method) == (400, "GET")
            assert error.body == {"message": ["This field is required."]}
            assert ROOM_ID in error.url


class TestPagination:
    """next links are followed only on the API origin; hostile pages are typed errors."""

    @staticmethod
    def _api(handler: httpx.MockTransport) -> tuple[VisitorAPI, httpx.AsyncClient]:
        client = httpx.AsyncClient(transport=handler)
        api = VisitorAPI(
            client=client,
            auth=httpx.Auth(),
            base_url=httpx.URL("https://service.giosg.com"),
            organization_id=ORG_ID,
            visitor_id=lambda: "8a60b202474547dbb8ce19737e4c166f",
            clock=FakeClock(),
            retry=RetryPolicy(),
        )
        return api, client

    async def test_relative_and_absolute_next_are_followed(self) -> None:
        """Both absolute (documented) and relative next values work."""
        pages = {
            None: {"next": "/api/v5/public/visitors/v/chats?cursor=2", "results": [{"id": "a"}]},
            "2": {"next": "https://service.giosg.com/x?cursor=3", "results": [{"id": "b"}]},
            "3": {"next": None, "results": [{"id": "c"}]},
        }

        def handler(request: httpx.Request) -> httpx.Response:
            return httpx.Response(200, json=pages[request.url.params.get("cursor")])

        api, client = self._api(httpx.MockTransport(handler))
        async with client:
            assert [c.id async for c in api.list_chats()] == ["a", "b", "c"]

    async def test_relative_next_is_resolved_against_the_page(self) -> None:
        """``?cursor=2`` continues the page's own path, not the API origin's root."""
        requested: list[str] = []

        def handler(request: httpx.Request) -> httpx.Response:
            requested.append(f"{request.url.path}?{request.url.query.decode()}")
            if request.url.path != "/api/v5/public/visitors/8a60b202474547dbb8ce19737e4c166f/chats":
                return httpx.Response(404, json={"detail": "Not found."})
            cursor = request.url.params.get("cursor")
            nxt = {None: "?cursor=2", "2": "chats?cursor=3", "3": None}[cursor]
            return httpx.Response(200, json={"next": nxt, "results": [{"id": cursor or "1"}]})

        api, client = self._api(httpx.MockTransport(handler))
        async with client:
            assert [c.id async for c in api.list_chats()] == ["1", "2", "3"]
        path = "/api/v5/public/visitors/8a60b202474547dbb8ce19737e4c166f/chats"
        assert requested == [f"{path}?", f"{path}?cursor=2", f"{path}?cursor=3"]

    async def test_http_next_on_the_api_host_is_followed_over_https(self) -> None:
        """A proxy's ``http://`` link to the API's own host: followed, but over https only."""
        schemes: list[str] = []

        def handler(request: httpx.Request) -> httpx.Response:
            schemes.append(request.url.scheme)
            cursor = request.url.params.get("cursor")
            nxt = {
                None: "http://service.giosg.com/api/v5/public/x?cursor=2",
                "2": "http://service.giosg.com:80/api/v5/public/x?cursor=3",
                "3": None,
            }[cursor]
            return httpx.Response(200, json={"next": nxt, "results": [{"id": cursor or "1"}]})

        api, client = self._api(httpx.MockTransport(handler))
        async with client:
            assert [c.id async for c in api.list_chats()] == ["1", "2", "3"]
        assert schemes == ["https", "https", "https"]

    @pytest.mark.parametrize(
        "nxt",
        [
            "http://evil.example/steal?cursor=1",
            "https://evil.example/steal?cursor=1",
            "http://service.giosg.com:8080/x?cursor=1",
            "//evil.example/steal?cursor=1",
        ],
        ids=["http-foreign", "https-foreign", "http-other-port", "scheme-relative-foreign"],
    )
    async def test_foreign_next_stays_refused(self, nxt: str) -> None:
        """Upgrading http is for the API's own host and port only; the rest is refused."""
        seen: list[str] = []

        def handler(request: httpx.Request) -> httpx.Response:
            seen.append(str(request.url))
            return httpx.Response(200, json={"next": nxt, "results": []})

        api, client = self._api(httpx.MockTransport(handler))
        async with client:
            with pytest.raises(UntrustedEndpointError):
                _ = [c async for c in api.list_chats()]
        assert len(seen) == 1

    async def test_next_to_another_origin_is_refused(self) -> None:
        """A next link to another host would carry the token: refused, never requested."""
        seen: list[str] = []

        def handler(request: httpx.Request) -> httpx.Response:
            seen.append(str(request.url.host))
            return httpx.Response(
                200, json={"next": "https://evil.example/steal?cursor=1", "results": []}
            )

        api, client = self._api(httpx.MockTransport(handler))
        async with client:
            with pytest.raises(UntrustedEndpointError):
                _ = [c async for c in api.list_chats()]
        assert seen == ["service.giosg.com"]

    @pytest.mark.parametrize(
        "page",
        [
            {"next": None},
            {"next": None, "results": {"id": "a"}},
            {"next": 5, "results": []},
            {"next": None, "results": [{"no_id": True}]},
            {"next": "https://service.giosg.com/p?cursor=\u001f", "results": []},
        ],
        ids=[
            "no-results",
            "results-not-a-list",
            "next-not-a-string",
            "item-without-id",
            "next-with-a-control-character",
        ],
    )
    async def test_malformed_pages_are_protocol_errors(self, page: dict[str, object]) -> None:
        """Malformed pages raise ProtocolError, never KeyError or TypeError."""
        api, client = self._api(httpx.MockTransport(lambda r: httpx.Response(200, json=page)))
        async with client:
            with pytest.raises(ProtocolError):
                _ = [c async for c in api.list_chats()]

    async def test_looping_next_is_detected(self) -> None:
        """A next link that points back to an earlier page ends with ProtocolError."""

        def handler(request: httpx.Request) -> httpx.Response:
            return httpx.Response(
                200, json={"next": "https://service.giosg.com/p?cursor=1", "results": []}
            )

        api, client = self._api(httpx.MockTransport(handler))
        async with client:
            with pytest.raises(ProtocolError, match="loops"):
                _ = [c async for c in api.list_chats()]


@pytest.mark.parametrize("bad", ["", "../x", "a/b", "a?b", "a#b", "%2e%2e"])
async def test_ids_cannot_escape_their_path_segment(bad: str) -> None:
    """Ids with slashes, queries or traversal are refused before any request."""
    async with virtual_world() as world, world.visitor(realtime=False) as visitor:
        before = len(world.giosg.requests)
        with pytest.raises(ValueError):
            await visitor.room(bad)
        assert len(world.giosg.requests) == before


def test_visitor_constructor_validation() -> None:
    """Misuse raises builtin errors: empty org, bad policies."""
    with pytest.raises(ValueError):
        Visitor("")
    with pytest.raises(ValueError):
        Visitor(ORG_ID, on_invalid_secret="ignore")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Visitor(ORG_ID, presence_expires_in=0)
