"""Notebook-style exploration, cell by cell (see examples/notebook.ipynb for the notebook).

Each block below is what you would type into a Jupyter cell with top-level ``await``;
here they run inside one ``main()`` so the file also works as a script.
"""

from __future__ import annotations

import anyio

from giosg_visitor import Visitor
from giosg_visitor.testing import FakeGiosg


ORG_ID = "e6a08f51-c250-4074-847b-58d444dbbeb1"
ROOM_ID = "9926bdfa-56e0-11e5-b98c-6c4008c08dfe"


async def main() -> None:
    async with FakeGiosg() as giosg, Visitor(ORG_ID, base_url=giosg.base_url) as visitor:
        # In [1]: who am I? (reprs never show the secret or the token)
        print(visitor)

        # In [2]: is anyone there?
        operator = await giosg.operator_online(ROOM_ID, "Olivia")
        print(await visitor.room(ROOM_ID))

        # In [3]: start a chat and say something
        chat = await visitor.start_chat(ROOM_ID)
        print(chat, await chat.send("Hi Olivia!"))

        # In [4]: the operator answers (a control of the fake)
        await giosg.operator_says(chat.id, operator, "Hi! What can I do for you?")

        # In [5]: the conversation so far, then live, until the operator has answered
        with anyio.fail_after(5):
            async with chat.messages() as stream:
                async for message in stream:
                    print(message.type, message.sender_public_name, message.message)
                    if message.sender_type == "user" and message.type == "msg":
                        break

        # In [6]: who is in the chat?
        for member in await chat.members():
            print(member.member_type, member.member_public_name, member.composing_status)

        # In [7]: done
        print(await chat.end())


if __name__ == "__main__":
    anyio.run(main)
