"""What a process holds right now: tasks of the running event loop, open fds, RSS."""

from __future__ import annotations

import asyncio
import os

import sniffio


__all__ = ["fd_count", "rss_bytes", "task_count"]


def task_count() -> int:
    """Tasks alive in the current event loop (asyncio or trio)."""
    if sniffio.current_async_library() == "asyncio":
        return len(asyncio.all_tasks())
    import trio

    count = 0
    root = trio.lowlevel.current_root_task()
    pending = [] if root is None else [root]
    while pending:
        task = pending.pop()
        count += 1
        for nursery in task.child_nurseries:
            pending.extend(nursery.child_tasks)
    return count


def fd_count() -> int:
    """File descriptors this process has open."""
    return len(os.listdir("/proc/self/fd")) - 1  # minus the one listdir itself opened


def rss_bytes() -> int:
    """The resident set size of this process."""
    with open("/proc/self/statm") as statm:
        resident_pages = int(statm.read().split()[1])
    return resident_pages * os.sysconf("SC_PAGE_SIZE")
