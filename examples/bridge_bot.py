"""A channel bridge: one Giosg visitor per end user of another channel (WhatsApp, Slack...).

Every end user is a visitor keyed by the bridge's own user id in one SQLite store, so a
restarted bridge resumes the same visitors (and never creates a second visitor for a user).
All visitors share one HTTP connection pool. Operators' answers are relayed back.

Run it twice: the second run reports the same visitor ids.
"""

from __future__ import annotations

import sys
from contextlib import AsyncExitStack

import anyio
import httpx

from giosg_visitor import Chat, SQLiteStore, Visitor
from giosg_visitor.testing import FakeGiosg


ORG_ID = "e6a08f51-c250-4074-847b-58d444dbbeb1"
ROOM_ID = "9926bdfa-56e0-11e5-b98c-6c4008c08dfe"


class Bridge:
    """Maps the channel's user ids to visitors and relays messages both ways."""

    def __init__(self, base_url: str, store: SQLiteStore, stack: AsyncExitStack) -> None:
        self._base_url = base_url
        self._store = store
        self._stack = stack
        self._http = httpx.AsyncClient()  # one pool for every visitor
        self._chats: dict[str, Chat] = {}
        self.visitor_ids: dict[str, str] = {}

    async def on_channel_message(self, user_id: str, text: str) -> Chat:
        """An end user wrote to the bridge: forward it to that user's Giosg chat."""
        chat = self._chats.get(user_id)
        if chat is None:
            visitor = await self._stack.enter_async_context(
                Visitor(
                    ORG_ID,
                    base_url=self._base_url,
                    store=self._store,
                    key=user_id,
                    http_client=self._http,
                )
            )
            self.visitor_ids[user_id] = visitor.visitor_id
            chat = await visitor.start_chat(ROOM_ID)
            self._chats[user_id] = chat
        await chat.send(text)
        return chat

    async def aclose(self) -> None:
        await self._http.aclose()


async def relay_answers(user_id: str, chat: Chat, answered: anyio.Event) -> None:
    """Operators' messages go back to the end user on the other channel."""
    async for message in chat.messages():
        if message.sender_type == "user" and message.type == "msg":
            print(f"to {user_id}: {message.message}")
            answered.set()
            return


async def main(users: int = 5) -> None:
    async with FakeGiosg(data_file="fake-giosg.json") as giosg:
        await giosg.start_bot(ROOM_ID, organization_id=ORG_ID, typing_seconds=0.05)
        async with SQLiteStore("bridge.db") as store, AsyncExitStack() as stack:
            bridge = Bridge(giosg.base_url, store, stack)
            stack.push_async_callback(bridge.aclose)
            # Visitors are entered here, outside the relay task group: async contexts nest.
            # (VisitorPool does this bookkeeping for you in long-running bridges.)
            chats = {}
            for n in range(users):
                user_id = f"whatsapp:+35840000{n:04d}"
                chats[user_id] = await bridge.on_channel_message(user_id, f"hello from user {n}")
            with anyio.fail_after(30):
                async with anyio.create_task_group() as tg:
                    for user_id, chat in chats.items():
                        tg.start_soon(relay_answers, user_id, chat, anyio.Event())
            for user_id, visitor_id in sorted(bridge.visitor_ids.items()):
                print(f"{user_id} -> visitor {visitor_id}")


if __name__ == "__main__":
    anyio.run(main, int(sys.argv[1]) if len(sys.argv) > 1 else 5)
