"""Who gets the next slot, under ``MAX_CONCURRENT_AGENTS`` and each namespace's cap, decided
purely.

An agent holds a slot from the moment it is admitted until it is finished; the
others wait in Spawning (reason Queued), without a Pod. Two limits apply at once:
the operator's (``MAX_CONCURRENT_AGENTS``, 0: none) and a namespace's own (the
annotation ``orchestrator.mosaicstack.dev/max-concurrent-agents`` on the Namespace).

- Within a namespace the oldest agent goes first (creation time, then key).
- Between namespaces the free slots go to the namespace holding the fewest, one slot at
  a time (ties: the one whose next agent is oldest). A namespace that holds many never
  takes the last free slot from one that holds few, so none starves another, and the
  choice is a function of what the store holds now: no turn pointer to lose in a
  restart or a leader change, unlike round robin, which it equals when loads are even.

The counts come from the store, kept up to date by the watches, so a choice is
a computation over memory: no LIST, no lock (one event loop, no await between
choosing and promising the slot).
"""

from __future__ import annotations

import collections
import dataclasses
import heapq
import re
from collections.abc import Collection, Iterable, Mapping
from typing import Final, Protocol

ANNOTATION: Final = "orchestrator.mosaicstack.dev/max-concurrent-agents"
# ASCII digits only (str.isdigit also takes "²" and "١٢"), and few enough for int().
_WHOLE: Final = re.compile(r"[0-9]{1,9}")


class InLine(Protocol):
    @property
    def key(self) -> str: ...

    @property
    def created(self) -> str: ...


@dataclasses.dataclass(frozen=True)
class Limits:
    total: int = 0  # MAX_CONCURRENT_AGENTS; 0: no limit
    namespaces: Mapping[str, int] = dataclasses.field(default_factory=dict)  # the caps

    @property
    def any(self) -> bool:
        return bool(self.total or self.namespaces)


def namespace_cap(value: str | None) -> tuple[int | None, str]:
    """A Namespace's cap from its annotation's value, and what is wrong with it ("" if
    nothing): a whole number of at least 1, in ASCII digits. A value that is not one caps
    nothing (the operator's own limit still holds): see README, "The concurrency limit"."""
    if value is None:
        return None, ""
    text = value.strip()
    if _WHOLE.fullmatch(text) and int(text) >= 1:
        return int(text), ""
    shown = value if len(value) <= 64 else value[:61] + "..."
    return None, (
        f"{ANNOTATION}={shown!r} is not a whole number of at least 1: this namespace is "
        "not capped (the operator's MAX_CONCURRENT_AGENTS still applies); to stop its "
        "agents, use a Killswitch"
    )


def namespace_of(key: str) -> str:
    return key.split("/", 1)[0]


def _order(waiting: InLine) -> tuple[str, str]:
    # RFC 3339 times of one server sort as text; the key breaks ties the same way each time.
    return (waiting.created, waiting.key)


def next_up(line: Iterable[InLine], held: Collection[str], limits: Limits) -> list[str]:
    """The keys whose turn it is, in the order they get their slots: as many as are free
    (everyone, when nothing limits), each namespace within its cap, oldest first within a
    namespace, and the fewest-held namespace first between them."""
    if not limits.any:
        return [w.key for w in line]
    load = collections.Counter(namespace_of(key) for key in held)
    free = limits.total - len(held) if limits.total else None  # None: no overall limit
    if free is not None and free <= 0:
        return []
    by_namespace: dict[str, list[InLine]] = collections.defaultdict(list)
    for waiting in line:
        if waiting.key not in held:  # promised a slot already (its Pod being made): not again
            by_namespace[namespace_of(waiting.key)].append(waiting)
    queues: dict[str, list[InLine]] = {}
    for namespace, candidates in by_namespace.items():
        room = len(candidates)
        if namespace in limits.namespaces:
            room = min(room, limits.namespaces[namespace] - load[namespace])
        if free is not None:
            room = min(room, free)
        if room > 0:
            queues[namespace] = heapq.nsmallest(room, candidates, key=_order)
    turns = [(load[ns], _order(queue[0]), ns, 0) for ns, queue in queues.items()]
    heapq.heapify(turns)
    chosen: list[str] = []
    while turns and (free is None or len(chosen) < free):
        held_now, _, namespace, index = heapq.heappop(turns)
        queue = queues[namespace]
        chosen.append(queue[index].key)
        if index + 1 < len(queue):
            heapq.heappush(turns, (held_now + 1, _order(queue[index + 1]), namespace, index + 1))
    return chosen


def admits(key: str, line: Iterable[InLine], held: Collection[str], limits: Limits) -> bool:
    """Whether ``key`` may have its Pod now: a free slot under both limits, and no agent
    before it."""
    return not limits.any or key in next_up(line, held, limits)


def why_waiting(key: str, line: Iterable[InLine], held: Collection[str], limits: Limits) -> str:
    """The status message of a queued agent: the limit that holds it. Its namespace's cap
    when that is full; else the operator's limit when that is full; else (room in both,
    older agents first) the cap when the agents whose turn comes first (``next_up``, every
    namespace's) fill it, the operator's limit otherwise. Whether one of them holds its slot
    yet or is about to changes nothing, so the message does not depend on which of their
    passes ran first."""
    namespace = namespace_of(key)
    cap = limits.namespaces.get(namespace)
    by_cap = f"waiting for a slot: namespace {namespace} allows {cap} agents at once ({ANNOTATION})"
    by_operator = (
        f"waiting for a slot: {limits.total} agents may run at once (MAX_CONCURRENT_AGENTS)"
    )
    in_namespace = sum(1 for k in held if namespace_of(k) == namespace)
    if cap is not None and in_namespace >= cap:
        return by_cap
    if limits.total and len(held) >= limits.total:
        return by_operator
    if cap is None:
        return by_operator
    first = sum(1 for k in next_up(line, held, limits) if namespace_of(k) == namespace)
    if not limits.total or in_namespace + first >= cap:
        return by_cap
    return by_operator
