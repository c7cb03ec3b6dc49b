"""Who gets the next slot under ``MAX_CONCURRENT_AGENTS``, decided purely.

An agent holds a slot from the moment it is admitted until it is finished; the
others wait in Spawning (reason Queued), without a Pod, and start oldest first.
The counts come from the store, kept up to date by the watches, so a choice is
a computation over memory: no LIST, no lock (one event loop, no await between
choosing and promising the slot).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from typing import Protocol


class InLine(Protocol):
    @property
    def key(self) -> str: ...

    @property
    def created(self) -> str: ...


def _order(waiting: InLine) -> tuple[str, str]:
    # RFC 3339 times of one server sort as text; the key breaks ties the same way each time.
    return (waiting.created, waiting.key)


def next_up(line: Iterable[InLine], held: int, limit: int) -> list[str]:
    """The keys whose turn it is: the oldest of the line, as many as there are free slots
    (all of them when ``limit`` is 0, no limit)."""
    if not limit:
        return [w.key for w in line]
    free = limit - held
    if free <= 0:
        return []
    return [w.key for w in heapq.nsmallest(free, line, key=_order)]


def admits(key: str, line: Iterable[InLine], held: int, limit: int) -> bool:
    """Whether ``key`` may have its Pod now: a free slot, and no older agent before it."""
    return not limit or key in next_up(line, held, limit)


def why_waiting(limit: int) -> str:
    """The status message of a queued agent."""
    return f"waiting for a slot: {limit} agents may run at once"
