"""Quickstart: start a chat, say hello, print the conversation as it happens."""

from __future__ import annotations

import anyio

from giosg_visitor import FileStore, Visitor
from giosg_visitor.testing import FakeGiosg


ORG_ID = "e6a08f51-c250-4074-847b-58d444dbbeb1"
ROOM_ID = "9926bdfa-56e0-11e5-b98c-6c4008c08dfe"


async def main() -> None:
    # A local, faithful Giosg with a bot that answers. Against the real service, leave
    # FakeGiosg out and drop the base_url argument.
    async with FakeGiosg(data_file="fake-giosg.json") as giosg:
        await giosg.start_bot(ROOM_ID, organization_id=ORG_ID)
        store = FileStore("visitor.json")  # the visitor's secret lives here (mode 0600)
        async with Visitor(ORG_ID, base_url=giosg.base_url, store=store) as visitor:
            print("visitor", visitor.visitor_id)
            chat = await visitor.start_chat(ROOM_ID)
            await chat.send("Hello!")
            async for message in chat.messages():  # history, then live; each exactly once
                if message.type == "msg":
                    print(f"{message.sender_public_name or 'me'}: {message.message}")
                if message.sender_type == "user" and message.type == "msg":
                    break  # the first answer is enough for a quickstart


if __name__ == "__main__":
    anyio.run(main)
