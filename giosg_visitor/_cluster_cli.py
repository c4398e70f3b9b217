"""``giosg-visitor cluster-status``: print a cluster's state from Redis.

Prints worker ids, counts and counters only: never a secret, a token or a visitor key.
"""

from __future__ import annotations

import json
import sys

import attrs

from .cluster import RedisCoordinator
from .errors import GiosgError


async def print_cluster_status(url: str, prefix: str, *, as_json: bool = False) -> int:
    """Print the state; returns the exit status (1 when Redis cannot be read)."""
    coordinator = RedisCoordinator(url, prefix=prefix, worker_id="cluster-status")
    try:
        state = await coordinator.state()
    except GiosgError as exc:
        print(f"cluster-status: {exc}", file=sys.stderr)
        return 1
    finally:
        await coordinator.aclose()
    if as_json:
        print(json.dumps(attrs.asdict(state), indent=2, sort_keys=True))
        return 0
    print(f"workers: {len(state.members)}")
    for worker, age in sorted(state.members.items()):
        owned = state.leases.get(worker, 0)
        pending = state.consumers.get(worker, 0)
        print(f"  {worker}  heartbeat {age:.1f} s ago  owns {owned}  pending {pending}")
    orphans = {w: n for w, n in state.leases.items() if w not in state.members}
    for worker, owned in sorted(orphans.items()):
        print(f"  {worker}  (gone; its leases expire)  owns {owned}")
    unowned = state.active - sum(state.leases.values())
    print(f"active visitors: {state.active} ({unowned} without an owner right now)")
    print(f"delivery stream: {state.stream_length} entries, {state.pending} pending")
    if state.counters:
        print("counters: " + ", ".join(f"{k}={v}" for k, v in sorted(state.counters.items())))
    return 0
