"""One worker of a clustered channel bridge (run N of them, on any number of machines).

Inbound from the channel: each line ``<user id> <text>`` on stdin stands in for a webhook
that the load balancer sent to this worker; the worker forwards it to that user's Giosg
chat over REST (any worker can). Outbound to the channel: every operator message of every
active user in the cluster arrives through ``pool.inbound()`` on exactly one worker, which
"sends" it to the channel (prints ``<user id> <- <text>``) and acknowledges it.

SIGTERM (or Ctrl-C) leaves cleanly: the worker hands its visitors over at once.

    python examples/cluster/bridge.py --redis redis://localhost:6379/0 --base-url URL
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading

import anyio
import anyio.from_thread
import anyio.lowlevel

from giosg_visitor import (
    Chat,
    Delivery,
    DeliveryLostError,
    RedisCoordinator,
    RedisStore,
    VisitorPool,
)


ORG_ID = "e6a08f51-c250-4074-847b-58d444dbbeb1"
ROOM_ID = "9926bdfa-56e0-11e5-b98c-6c4008c08dfe"


async def send_to_channel(delivery: Delivery) -> None:
    """The channel's API call (WhatsApp, Slack, ...): here, a line on stdout."""
    print(f"{delivery.key} <- {delivery.message.message}", flush=True)


async def relay_outbound(pool: VisitorPool) -> None:
    """Forward each operator message to its end user once, then acknowledge it."""
    async with pool.inbound() as deliveries:
        async for delivery in deliveries:
            if delivery.message.message is not None:  # join/leave entries carry no text
                await send_to_channel(delivery)
            try:
                await delivery.ack()
            except DeliveryLostError:
                # This worker stalled past redeliver_after and another took the delivery
                # over; it is acknowledged there.
                pass


async def relay_inbound(pool: VisitorPool, chats: dict[str, Chat]) -> None:
    """Forward each end user's message to their Giosg chat (one chat per user)."""
    send, receive = anyio.create_memory_object_stream[str]()
    token = anyio.lowlevel.current_token()

    def read_stdin() -> None:
        # A daemon thread: a read blocked on stdin must not keep the process alive.
        with send:
            for line in sys.stdin:
                anyio.from_thread.run(send.send, line, token=token)

    threading.Thread(target=read_stdin, daemon=True).start()
    async for line in receive:
        user_id, _, text = line.strip().partition(" ")
        if not user_id or not text:
            continue
        async with pool.visitor(user_id) as visitor:
            chat = chats.get(user_id)
            if chat is None or chat.is_ended:
                chat = await visitor.start_chat(ROOM_ID)  # this makes the user active
                chats[user_id] = chat
            await chat.send(text)


async def stop_on_signal(scope: anyio.CancelScope) -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for _ in signals:
            scope.cancel()
            return


async def main(args: argparse.Namespace) -> None:
    coordinator = RedisCoordinator(args.redis, worker_id=args.worker, lease_seconds=args.lease)
    async with (
        RedisStore(args.redis) as store,
        VisitorPool(ORG_ID, store=store, base_url=args.base_url, coordinator=coordinator) as pool,
        anyio.create_task_group() as tg,
    ):
        tg.start_soon(stop_on_signal, tg.cancel_scope)
        tg.start_soon(relay_outbound, pool)
        tg.start_soon(relay_inbound, pool, {})
        print(f"worker {coordinator.worker_id} ready", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="one worker of a clustered bridge")
    parser.add_argument("--redis", required=True, help="Redis URL (shared by every worker)")
    parser.add_argument("--base-url", default="https://service.giosg.com")
    parser.add_argument("--worker", help="this worker's id (default: host-pid-random)")
    parser.add_argument("--lease", type=float, default=10.0, help="lease_seconds")
    parser.add_argument("--backend", choices=["asyncio", "trio"], default="asyncio")
    arguments = parser.parse_args()
    anyio.run(main, arguments, backend=arguments.backend)
