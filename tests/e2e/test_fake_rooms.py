"""The fake knows its rooms: an unknown room id gets 404, as from Giosg."""

from __future__ import annotations

import httpx
import pytest

from giosg_visitor import Visitor
from giosg_visitor.errors import NotFoundError
from giosg_visitor.testing import FakeGiosg

from .._helpers import FAST_RETRY, ORG_ID, OTHER_ORG_ID, ROOM_ID


async def test_unknown_room_is_404_on_every_room_endpoint() -> None:
    """A typo in a room id fails the user's test instead of passing silently."""
    async with (
        FakeGiosg(rooms=[ROOM_ID]) as giosg,
        Visitor(ORG_ID, base_url=giosg.base_url, retry=FAST_RETRY, realtime=False) as visitor,
    ):
        with pytest.raises(NotFoundError) as caught:
            await visitor.start_chat("not-a-room")
        assert caught.value.status_code == 404
        with pytest.raises(NotFoundError):
            await visitor.start_chat("not-a-room", join_room=False)
        with pytest.raises(NotFoundError):
            await visitor.room("not-a-room")
        with pytest.raises(NotFoundError):
            await visitor.join_room("not-a-room")
        assert await giosg.chat_ids(visitor.visitor_id) == []
        # The registered room works.
        chat = await visitor.start_chat(ROOM_ID)
        assert await giosg.chat_ids(visitor.visitor_id) == [chat.id]
        assert (await visitor.room(ROOM_ID)).id == ROOM_ID


async def test_rooms_are_registered_by_add_room_and_operator_controls() -> None:
    async with (
        FakeGiosg() as giosg,
        Visitor(ORG_ID, base_url=giosg.base_url, realtime=False) as visitor,
    ):
        with pytest.raises(NotFoundError):
            await visitor.start_chat(ROOM_ID)
        await giosg.add_room(ROOM_ID)
        await visitor.start_chat(ROOM_ID)
        await giosg.operator_online("operator-room", "Olivia")
        await visitor.start_chat("operator-room")
        await giosg.start_bot("bot-room")
        await visitor.start_chat("bot-room")


async def test_a_room_of_another_organization_is_404() -> None:
    async with (
        FakeGiosg() as giosg,
        Visitor(ORG_ID, base_url=giosg.base_url, realtime=False) as ours,
        Visitor(OTHER_ORG_ID, base_url=giosg.base_url, realtime=False) as theirs,
    ):
        await giosg.add_room(ROOM_ID, organization_id=OTHER_ORG_ID)
        with pytest.raises(NotFoundError):
            await ours.start_chat(ROOM_ID)
        await theirs.start_chat(ROOM_ID)


async def test_accept_any_room_restores_the_permissive_fake() -> None:
    async with (
        FakeGiosg(accept_any_room=True) as giosg,
        Visitor(ORG_ID, base_url=giosg.base_url, realtime=False) as visitor,
    ):
        chat = await visitor.start_chat("not-a-room")
        assert chat.info.room_id == "not-a-room"


def test_rooms_must_be_a_collection_not_one_id() -> None:
    with pytest.raises(TypeError, match="collection of room ids"):
        FakeGiosg(rooms=ROOM_ID)


async def test_every_endpoint_checks_that_the_token_owns_the_path() -> None:
    """Another visitor's or organization's path is 403; another visitor's chat is 404."""
    async with (
        FakeGiosg(rooms=[ROOM_ID]) as giosg,
        Visitor(ORG_ID, base_url=giosg.base_url, realtime=False) as theirs,
        httpx.AsyncClient(base_url=giosg.base_url) as client,
    ):
        their_chat = await theirs.start_chat(ROOM_ID)
        auth = await client.post(f"/api/v5/public/orgs/{ORG_ID}/auth")
        auth.raise_for_status()
        ours = auth.json()
        client.headers["Authorization"] = f"Bearer {ours['access_token']}"
        me, them = ours["visitor_id"], theirs.visitor_id
        org_room, other_org_room = (
            f"/api/v5/public/orgs/{org}/rooms/{ROOM_ID}" for org in (ORG_ID, OTHER_ORG_ID)
        )
        chat_path = f"/api/v5/public/visitors/{{}}/chats/{their_chat.id}"
        forbidden = [
            ("GET", other_org_room),
            ("GET", f"{other_org_room}/brand"),
            ("GET", f"{other_org_room}/online_users"),
            ("POST", f"{other_org_room}/visitors"),
            ("PATCH", f"{org_room}/visitors/{them}"),
            ("POST", f"{org_room}/visitors/{them}/chats"),
            ("GET", f"/api/v5/public/visitors/{them}/chats"),
            ("GET", f"/api/v5/public/visitors/{them}/chat_memberships"),
            ("GET", chat_path.format(them)),
            ("GET", f"{chat_path.format(them)}/messages"),
        ]
        for method, path in forbidden:
            response = await client.request(method, path, json={"id": me})
            assert (method, path, response.status_code) == (method, path, 403)
        not_mine = [
            ("GET", chat_path.format(me)),
            ("GET", f"{chat_path.format(me)}/messages"),
            ("GET", f"{chat_path.format(me)}/memberships"),
            ("PUT", f"/api/v5/public/visitors/{me}/chat_memberships/{their_chat.id}"),
        ]
        for method, path in not_mine:
            response = await client.request(method, path, json={})
            assert (method, path, response.status_code) == (method, path, 404)
        # The same calls on our own paths succeed.
        assert (await client.get(org_room)).status_code == 200
        assert (await client.get(f"/api/v5/public/visitors/{me}/chats")).status_code == 200


def test_a_fake_that_cannot_listen_fails_start_and_can_start_again() -> None:
    """A port in use is reported by ``start()``, and the fake is left stopped, not half-run."""
    import socket
    import threading

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        giosg = FakeGiosg(port=taken.getsockname()[1])
        with pytest.raises(RuntimeError, match="failed to start") as caught:
            giosg.start()
        assert isinstance(caught.value.__cause__, OSError)
        assert "stopped" in repr(giosg)
        assert not [t for t in threading.enumerate() if t.name == "FakeGiosg"]
    giosg.start()
    try:
        assert httpx.get(f"{giosg.base_url}/api/v5/public/orgs/x/rooms/y").status_code < 500
    finally:
        giosg.stop()
    assert not [t for t in threading.enumerate() if t.name == "FakeGiosg"]
