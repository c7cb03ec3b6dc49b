"""What the watches delivered, kept small, so that a reconcile pass reads memory, not the API.

The store holds the last-seen body of every Agent, Pod of ours and Killswitch
(from the watches, and from the responses to our own writes), trimmed to what
the operator reads: no ``managedFields``, no Pod spec, no annotations. It also
keeps what a cache needs to be trusted:

- an Agent -> Pod index (``namespace/name`` of the owner -> its Pod as last seen,
  and whether that was its deletion: the Pod's tombstone);
- tombstones of deleted Agents (their uid), so a late write response of a deleted
  life never brings it back;
- expectations: the resourceVersion of our own last status write (its watch echo
  is not worked on again) and the slots promised to agents whose Pod is being made;
- for the concurrency limit, kept up to date on every change rather than counted
  by a LIST: the agents that hold a slot, and the line of those that want one.

A stale body is harmless: every write carries the resourceVersion it was decided
on, so the API server refuses it (Conflict) and the agent is read afresh.
"""

from __future__ import annotations

import collections
import dataclasses
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Final

from controller import killswitch, lifecycle, models, workload

_AGENT_META: Final = (
    "name",
    "namespace",
    "uid",
    "generation",
    "resourceVersion",
    "creationTimestamp",
    "deletionTimestamp",
    "labels",
    "finalizers",
)
_POD_META: Final = (
    "name",
    "namespace",
    "uid",
    "labels",
    "ownerReferences",
    "deletionTimestamp",
)
_POD_STATUS: Final = ("phase", "reason", "startTime")
_CONTAINER_STATE: Final = ("startedAt", "finishedAt", "exitCode", "message", "reason")
# Deleted Agents remembered, oldest forgotten first: enough for any late response in flight.
TOMBSTONES: Final = 4096

Body = dict[str, Any]


def _audit(meta: Mapping[str, Any]) -> dict[str, str]:
    """Of an object's annotations, only who asked (``models.AUDIT_ANNOTATIONS``)."""
    annotations = meta.get("annotations") or {}
    return {k: annotations[k] for k in models.AUDIT_ANNOTATIONS if k in annotations}


def trim_agent(body: Mapping[str, Any], audit: bool = True) -> Body:
    """An Agent with only what the operator reads (``audit``: with who asked, when the audit
    policies stamp it; else the annotations are anyone's, and none is kept)."""
    meta = body.get("metadata") or {}
    kept = {k: meta[k] for k in _AGENT_META if k in meta}
    who = _audit(meta) if audit else {}
    if who:
        kept["annotations"] = who
    return {
        "apiVersion": body.get("apiVersion", models.API_VERSION),
        "kind": body.get("kind", "Agent"),
        "metadata": kept,
        "spec": body.get("spec"),
        "status": body.get("status") or {},
    }


def trim_pod(body: Mapping[str, Any]) -> Body:
    """A Pod with only what ``workload.observe`` and the index read."""
    meta = body.get("metadata") or {}
    status = body.get("status") or {}
    containers = []
    for container in status.get("containerStatuses") or []:
        state = container.get("state") or {}
        containers.append(
            {
                "state": {
                    kind: {k: v for k, v in (state[kind] or {}).items() if k in _CONTAINER_STATE}
                    for kind in ("running", "terminated", "waiting")
                    if state.get(kind)
                }
            }
        )
    trimmed_status: Body = {k: status[k] for k in _POD_STATUS if k in status}
    if containers:
        trimmed_status["containerStatuses"] = containers
    return {"metadata": {k: meta[k] for k in _POD_META if k in meta}, "status": trimmed_status}


def key_of(body: Mapping[str, Any]) -> str:
    meta = body["metadata"]
    return f"{meta.get('namespace', '')}/{meta['name']}"


def owner_key(pod: Mapping[str, Any]) -> str | None:
    """``namespace/name`` of the Agent that owns the Pod, if one does."""
    meta = pod["metadata"]
    for owner in meta.get("ownerReferences") or []:
        if owner.get("kind") == "Agent" and owner.get("apiVersion") == models.API_VERSION:
            return f"{meta['namespace']}/{owner['name']}"
    return None


@dataclasses.dataclass(frozen=True)
class SeenPod:
    body: Body
    gone: bool  # the watch reported its deletion: a tombstone of this very Pod


@dataclasses.dataclass(frozen=True)
class Waiting:
    """An agent in line for a slot: its key and when it was created (the line's order)."""

    key: str
    created: str


def _holds_a_slot(body: Mapping[str, Any], pod_alive: bool) -> bool:
    """An unfinished agent whose Pod exists: its status says so, or the index shows it (made,
    and the status write that says so lost or not seen yet)."""
    status = body.get("status") or {}
    return (bool(status.get("podName")) or pod_alive) and status.get(
        "phase"
    ) not in lifecycle.TERMINAL


def _wants_a_slot(body: Mapping[str, Any], pod_alive: bool) -> bool:
    """An agent that would have its Pod made if there were room."""
    status = body.get("status") or {}
    spec = body.get("spec") or {}
    return (
        not status.get("podName")
        and not pod_alive
        and status.get("phase") in (None, lifecycle.Phase.SPAWNING)
        and not body["metadata"].get("deletionTimestamp")
        and spec.get("desiredPhase", models.DesiredPhase.RUNNING) == models.DesiredPhase.RUNNING
    )


def _older(version: str, than: str) -> bool:
    """Whether resourceVersion ``version`` is older than ``than``. They are opaque in
    principle; etcd's are revisions, so two numbers compare. Anything else: not known older."""
    return version.isdigit() and than.isdigit() and int(version) < int(than)


class Store:
    def __init__(self, monotonic: Callable[[], float] = time.monotonic, audit: bool = True) -> None:
        self.monotonic = monotonic
        self.audit = audit  # AUDIT_ANNOTATIONS: read who asked from the audit annotations
        self._agents: dict[str, Body] = {}
        self._pods: dict[str, SeenPod] = {}
        self._switches: dict[str, killswitch.Switch] = {}
        self._switch_bodies: dict[str, Body] = {}
        self._written: dict[str, str] = {}  # key -> resourceVersion of our last status write
        self._written_at: dict[str, float] = {}  # key -> when (monotonic) it was written
        self._tombstones: collections.OrderedDict[str, str] = collections.OrderedDict()
        self._holding: set[str] = set()  # agents with a live Pod (podName, not terminal)
        self._promised: set[str] = set()  # admitted, Pod being made, status not yet showing it
        self._line: dict[str, Waiting] = {}
        self._caps: dict[str, int] = {}  # namespace -> its cap (admission.ANNOTATION)
        self._stale: set[str] = set()  # bodies a write proved stale: read afresh before use

    # --- agents ---

    def observe_agent(self, body: Mapping[str, Any], gone: bool = False) -> bool:
        """A watch event of an Agent; True when it is news worth a pass.

        The echo of our own last status write is stored but not news (the pass that
        made it acted on exactly that state), unless an older event replaced our
        write's body in between: a pass may have acted on that older state.
        """
        key = key_of(body)
        if gone:
            self._tombstone(key, str(body["metadata"].get("uid", "")))
            self._drop_agent(key)
            return True
        trimmed = trim_agent(body, self.audit)
        before = self._agents.get(key)
        version = str(trimmed["metadata"].get("resourceVersion", ""))
        written = self._written.get(key)
        holds_ours = before is not None and before["metadata"].get("resourceVersion") == written
        if written is not None and holds_ours and _older(version, written):
            # The watch is behind our own write (whose response the store holds): keeping
            # the older body would undo what that write recorded, slots included.
            return False
        self._tombstones.pop(key, None)  # a body the API server sends is alive
        self._set_agent(key, trimmed)
        stale_between = before is not None and before["metadata"].get("resourceVersion") != version
        return written is None or version != written or stale_between

    def put_agent(self, body: Mapping[str, Any], written: bool = False) -> Body | None:
        """Our own read or write's response; ``written``: a status write of ours, whose watch
        echo is then no news. None (not stored) if that Agent was deleted meanwhile."""
        key = key_of(body)
        uid = str(body["metadata"].get("uid", ""))
        if self._tombstones.get(key) == uid:
            return None
        trimmed = trim_agent(body, self.audit)
        self._set_agent(key, trimmed)
        if written:
            self._written[key] = str(trimmed["metadata"].get("resourceVersion", ""))
            self._written_at[key] = self.monotonic()
        return trimmed

    def written_at(self, key: str) -> float | None:
        """When (``monotonic``) our last write of the Agent landed: where mirror lag starts."""
        return self._written_at.get(key)

    def agent(self, key: str) -> Body | None:
        """The last-seen body, unless it proved stale (then the caller reads afresh)."""
        return None if key in self._stale else self._agents.get(key)

    def missing_from(self, listed: Iterable[str], as_of: str) -> list[Body]:
        """The bodies of agents held here that a listing as of resourceVersion ``as_of`` no
        longer has, though they are older than it: gone, their deletion unseen (a watch that
        restarts after 410 Gone lists afresh and sends nothing for what vanished)."""
        present = set(listed)
        return [
            body
            for key, body in self._agents.items()
            if key not in present
            and _older(str(body["metadata"].get("resourceVersion", "")), as_of)
        ]

    def knows(self, key: str) -> bool:
        """The agent is known here, stale or not: it is not gone."""
        return key in self._agents

    def agent_keys(self) -> list[str]:
        return list(self._agents)

    def agents(self) -> Iterator[Body]:
        return iter(self._agents.values())

    def invalidate(self, key: str) -> None:
        """The cached body proved stale (a write conflicted): the next pass reads afresh. It
        still counts for the line and the slots until then: dropping it would let a younger
        agent take an older one's turn."""
        if key in self._agents:
            self._stale.add(key)

    def forget(self, key: str) -> None:
        """The agent is gone for good: drop everything kept of it."""
        self._drop_agent(key)
        self._pods.pop(key, None)

    def _set_agent(self, key: str, body: Body) -> None:
        self._agents[key] = body
        self._stale.discard(key)
        self._account(key)

    def _account(self, key: str) -> None:
        """Whether the agent holds a slot or waits for one, from its body and its Pod."""
        body = self._agents.get(key)
        if body is None:
            return
        status = body.get("status") or {}
        alive = self._pod_alive(key, body)
        if _holds_a_slot(body, alive):
            self._holding.add(key)
        else:
            self._holding.discard(key)
        if status.get("podName") or alive or status.get("phase") in lifecycle.TERMINAL:
            self._promised.discard(key)
        if _wants_a_slot(body, alive):
            created = str(body["metadata"].get("creationTimestamp") or "")
            self._line[key] = Waiting(key, created)
        else:
            self._line.pop(key, None)

    def _pod_alive(self, key: str, body: Body) -> bool:
        """The index holds this very agent's Pod (its uid's), and not its deletion."""
        seen = self._pods.get(key)
        if seen is None or seen.gone:
            return False
        labels = seen.body["metadata"].get("labels") or {}
        return bool(labels.get(workload.LABEL_AGENT_UID) == body["metadata"].get("uid"))

    def _drop_agent(self, key: str) -> None:
        self._agents.pop(key, None)
        self._stale.discard(key)
        self._written.pop(key, None)
        self._written_at.pop(key, None)
        self._holding.discard(key)
        self._promised.discard(key)
        self._line.pop(key, None)

    def _tombstone(self, key: str, uid: str) -> None:
        self._tombstones[key] = uid
        self._tombstones.move_to_end(key)
        while len(self._tombstones) > TOMBSTONES:
            self._tombstones.popitem(last=False)

    # --- the concurrency limit ---

    def slots_held(self) -> int:
        """Agents with a live Pod, and those promised one whose status does not show it yet."""
        return len(self._holding | self._promised)

    def held(self) -> set[str]:
        """The keys of the agents that hold a slot (``slots_held`` of them)."""
        return self._holding | self._promised

    def set_cap(self, namespace: str, cap: int | None) -> bool:
        """A namespace's cap as its annotation now says (None: uncapped); True if it changed."""
        if self._caps.get(namespace) == cap:
            return False
        if cap is None:
            del self._caps[namespace]
        else:
            self._caps[namespace] = cap
        return True

    def caps(self) -> dict[str, int]:
        return dict(self._caps)

    def holds(self, key: str) -> bool:
        return key in self._holding or key in self._promised

    def promise(self, key: str) -> None:
        """A slot is this agent's from now: its Pod is about to be made."""
        self._promised.add(key)

    def unpromise(self, key: str) -> None:
        """The Pod was not made after all (the attempt failed): the slot is free again."""
        self._promised.discard(key)

    def line(self) -> list[Waiting]:
        """The agents waiting for a slot, in no particular order."""
        return list(self._line.values())

    # --- pods ---

    def observe_pod(self, body: Mapping[str, Any], gone: bool = False) -> str | None:
        """A watch event of a Pod; the key of the Agent that owns it, if one does and the
        event is news to it. A Pod the same in all the operator reads (its trimmed body) as
        the one stored is none: the echo of our own create, the scheduler's binding, a
        condition flipping. No pass could decide anything else on it."""
        key = owner_key(body)
        if key is None:
            return None
        seen = SeenPod(trim_pod(body), gone)
        if self._pods.get(key) == seen:
            return None
        self._pods[key] = seen
        self._account(key)
        return key

    def put_pod(self, key: str, body: Mapping[str, Any]) -> None:
        """A Pod we made or read: expected, even before its watch event comes."""
        self._pods[key] = SeenPod(trim_pod(body), False)
        self._account(key)

    def pod(self, key: str) -> SeenPod | None:
        return self._pods.get(key)

    # --- killswitches ---

    def observe_switch(self, body: Mapping[str, Any], gone: bool = False) -> str:
        name = str(body["metadata"]["name"])
        if gone:
            held = (self._switch_bodies.get(name) or {}).get("metadata", {}).get("uid")
            if held and held != body["metadata"].get("uid", held):
                return name  # a newer switch of that name, from a LIST, already replaced it
            self._switches.pop(name, None)
            self._switch_bodies.pop(name, None)
        else:
            self.put_switch(body)
        return name

    def put_switch(self, body: Mapping[str, Any]) -> None:
        name = str(body["metadata"]["name"])
        meta = body["metadata"]
        trimmed = {
            "metadata": {
                **{k: meta[k] for k in ("name", "uid", "resourceVersion") if k in meta},
                "annotations": _audit(meta) if self.audit else {},
            },
            "spec": body.get("spec") or {},
            "status": body.get("status") or {},
        }
        self._switch_bodies[name] = trimmed
        self._switches[name] = killswitch.Switch.of(trimmed)

    def replace_switches(self, bodies: list[Body]) -> None:
        """A fresh listing of every switch: the ones not in it are gone."""
        for name in set(self._switches) - {str(b["metadata"]["name"]) for b in bodies}:
            self._switches.pop(name, None)
            self._switch_bodies.pop(name, None)
        for body in bodies:
            self.put_switch(body)

    def switches(self) -> list[killswitch.Switch]:
        return list(self._switches.values())

    def switch(self, name: str) -> Body | None:
        return self._switch_bodies.get(name)

    def switch_names(self) -> list[str]:
        return list(self._switch_bodies)


def pod_of(seen: SeenPod | None, pod_name: str, uid: str) -> SeenPod | None:
    """The index's Pod if it is this very agent's Pod (its name and the agent's uid)."""
    if seen is None:
        return None
    labels = seen.body["metadata"].get("labels") or {}
    if (
        seen.body["metadata"].get("name") == pod_name
        and labels.get(workload.LABEL_AGENT_UID) == uid
    ):
        return seen
    return None
