"""Fakes of our own interfaces (``kube.Kube``, ``mirror.Mirror``) for the controllers' unit tests.

They behave as the real ones do where the controllers rely on it: writes carry a
resourceVersion precondition, a Pod deletion a uid precondition, and the mirror
refuses a transition out of order, as the real script does.
"""

from __future__ import annotations

import copy
import datetime
from typing import Any, cast

from controller import app, kube, lifecycle, mirror, models

NOW = datetime.datetime(2026, 1, 1, 10, 0, tzinfo=datetime.UTC)
KEY = "team-a/worker"
POD = "worker-uid1"


def agent_body(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": models.API_VERSION,
        "kind": "Agent",
        "metadata": {
            "name": "worker",
            "namespace": "team-a",
            "uid": "uid-1",
            "generation": 1,
            "resourceVersion": "1",
            "creationTimestamp": "2026-01-01T08:00:00Z",
            "finalizers": [models.FINALIZER],
        },
        "spec": {
            "taskId": "T-1",
            "template": {"spec": {"containers": [{"name": "a", "image": "i"}]}},
            **spec,
        },
    }


def recorded(*phases: str, pod: bool = True) -> dict[str, Any]:
    """A status that has recorded ``phases``, an hour apart from 08:00."""
    history = [
        {"phase": p, "at": f"2026-01-01T{8 + i:02d}:00:00.000Z", "reason": r}
        for i, (p, r) in enumerate(
            (p, {"Spawning": "Created", "Running": "Started"}.get(p, p)) for p in phases
        )
    ]
    last = history[-1]
    status: dict[str, Any] = {
        "phase": last["phase"],
        "seq": len(history),
        "reason": last["reason"],
        "history": history,
    }
    if "Running" in phases:
        status["startedAt"] = history[1]["at"]
    if last["phase"] in ("Completed", "Failed", "Killed"):
        status["completedAt"] = last["at"]
    if pod:
        status["podName"] = POD
    return status


def running_pod(name: str = POD, uid: str = "uid-1", pod_uid: str = "p") -> dict[str, Any]:
    """An agent's Pod (labelled with the agent's uid), running."""
    return {
        "metadata": {
            "name": name,
            "namespace": "team-a",
            "uid": pod_uid,
            "labels": {"orchestrator.mosaicstack.dev/agent-uid": uid},
            "ownerReferences": [
                {"apiVersion": models.API_VERSION, "kind": "Agent", "name": "worker"}
            ],
        },
        "status": {"phase": "Running"},
    }


class FakeKube:
    """The API server as the controllers see it: one Agent, its Pod, switches and Events."""

    def __init__(self, body: dict[str, Any] | None) -> None:
        self.body = body
        self.pod: dict[str, Any] | None = None
        self.events: list[tuple[str, str, str]] = []
        self.conflicts = 0  # status writes to refuse as stale, whatever their version
        self.create_error: kube.ApiError | None = None
        self.deleted: list[tuple[str, int]] = []
        self.agents_deleted: list[str] = []  # uids of the Agents the operator deleted
        self.switches: list[dict[str, Any]] = []
        self.switch_status: dict[str, dict[str, Any]] = {}
        self.namespace_bodies: list[dict[str, Any]] = []
        self.requests = 0
        self.listed_as_of = "1000"  # the resourceVersion a listing of the Agents is as of
        self.listed_as_of_in: dict[str, str] = {}  # ... of one namespace's, where it differs

    def _check(self, rv: str) -> None:
        assert self.body is not None
        if rv != self.body["metadata"]["resourceVersion"]:
            raise kube.Conflict(409, "the object has been modified")

    def _bump(self) -> dict[str, Any]:
        assert self.body is not None
        meta = self.body["metadata"]
        meta["resourceVersion"] = str(int(meta["resourceVersion"]) + 1)
        return copy.deepcopy(self.body)

    def change(self, **spec: Any) -> None:
        """A user's change of the spec (a new resourceVersion)."""
        assert self.body is not None
        self.body["spec"].update(spec)
        self._bump()

    async def get_agent(self, namespace: str, name: str) -> dict[str, Any] | None:
        self.requests += 1
        return copy.deepcopy(self.body)

    async def write_status(
        self, namespace: str, name: str, rv: str, status: dict[str, Any]
    ) -> dict[str, Any]:
        self.requests += 1
        if self.body is None:
            raise kube.NotFound(404, "not found")
        if self.conflicts:
            self.conflicts -= 1
            raise kube.Conflict(409, "the object has been modified")
        self._check(rv)
        self.body["status"] = {**self.body.get("status", {}), **status}
        return self._bump()

    async def write_finalizers(
        self, namespace: str, name: str, rv: str, finalizers: list[str]
    ) -> dict[str, Any]:
        self.requests += 1
        if self.body is None:
            raise kube.NotFound(404, "not found")
        self._check(rv)
        self.body["metadata"]["finalizers"] = finalizers
        if not finalizers and self.body["metadata"].get("deletionTimestamp"):
            self.body = None  # the last finalizer of a deleted object: it goes
            return {}
        return self._bump()

    async def get_pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        self.requests += 1
        found = self.pod is not None and self.pod["metadata"]["name"] == name
        return copy.deepcopy(self.pod) if found else None

    async def create_pod(self, pod: dict[str, Any]) -> dict[str, Any]:
        self.requests += 1
        if self.create_error is not None:
            raise self.create_error
        self.pod = copy.deepcopy({**pod, "status": {"phase": "Pending"}})
        self.pod["metadata"]["uid"] = "pod-uid"
        return copy.deepcopy(self.pod)

    async def delete_pod(self, namespace: str, name: str, grace: int, uid: str) -> None:
        self.requests += 1
        # The uid precondition: only that very Pod (kube.delete_pod ignores NotFound/Conflict).
        if self.pod is not None and self.pod["metadata"]["uid"] == uid:
            self.deleted.append((name, grace))

    async def delete_agent(self, namespace: str, name: str, uid: str) -> None:
        self.requests += 1
        # The uid precondition: only that very Agent (kube.delete_agent ignores NotFound and
        # Conflict). Our finalizer holds it, so it stays, being deleted.
        if self.body is not None and self.body["metadata"]["uid"] == uid:
            self.agents_deleted.append(uid)
            self.body["metadata"].setdefault("deletionTimestamp", models.format_time(NOW))
            self._bump()

    async def post_event(self, body: dict[str, Any], kind: str, reason: str, message: str) -> None:
        self.events.append((kind, reason, message))

    async def list_killswitches(self) -> list[dict[str, Any]]:
        self.requests += 1
        return copy.deepcopy(self.switches)

    async def get_killswitch(self, name: str) -> dict[str, Any] | None:
        named = (s for s in self.switches if s["metadata"]["name"] == name)
        return copy.deepcopy(next(named, None))

    async def write_killswitch_status(
        self, name: str, rv: str, status: dict[str, Any]
    ) -> dict[str, Any]:
        switch = next(s for s in self.switches if s["metadata"]["name"] == name)
        if rv != switch["metadata"].get("resourceVersion", ""):
            raise kube.Conflict(409, "the object has been modified")
        switch["status"] = status
        switch["metadata"]["resourceVersion"] = str(int(rv or 0) + 1)
        self.switch_status[name] = status
        return copy.deepcopy(switch)

    async def namespace_labels(self, name: str) -> dict[str, str]:
        return {"team": "a"}

    async def namespaces(self, label_selector: str) -> set[str]:
        return {"team-a"}

    async def list_namespaces(self) -> list[dict[str, Any]]:
        return copy.deepcopy(self.namespace_bodies)

    async def list_agents(
        self, namespace: str | None = None, label_selector: str = ""
    ) -> list[dict[str, Any]]:
        return [copy.deepcopy(self.body)] if self.body is not None else []

    async def agent_keys(self, namespace: str | None = None) -> tuple[set[str], str]:
        bodies = [
            b for b in await self.list_agents() if namespace in (None, b["metadata"]["namespace"])
        ]
        as_of = self.listed_as_of_in.get(namespace or "", self.listed_as_of)
        return {f"{b['metadata']['namespace']}/{b['metadata']['name']}" for b in bodies}, as_of


def deleted_killed_body() -> dict[str, Any]:
    """An Agent being deleted whose kill is on record: its deletion is the mirror's to finish."""
    body = agent_body()
    body["metadata"]["deletionTimestamp"] = "2026-01-01T10:00:00Z"
    body["status"] = recorded("Spawning", "Killed", pod=False)
    return body


def recorded_agent(*phases: str, **spec: Any) -> FakeKube:
    """An API server holding one Agent (``spec`` on top of the defaults) that has recorded
    ``phases``."""
    api = FakeKube(agent_body(**spec))
    assert api.body is not None
    api.body["status"] = recorded(*phases)
    return api


class FakeMirror:
    """The mirror's interface over a record per agent, with faults on demand."""

    def __init__(self) -> None:
        self.records: dict[str, tuple[str, int]] = {}  # ref -> (uid, seq)
        self.steps: list[mirror.Step] = []  # every step applied, in order
        self.reads = 0  # resyncs that read the record
        self.fail: Exception | None = None  # a MirrorError, or a bug to survive
        self.refuse = ""  # every transition is refused, saying this
        self.deleted: list[str] = []
        self.refuse_delete = False
        self.switches: list[tuple[str, bool]] = []
        self.switch_by: dict[str, tuple[str, str]] = {}  # name: (engaged by, disengaged by)
        self.forgotten: list[str] = []  # switches whose record was removed
        self.switch_uid: dict[str, str] = {}  # name: the uid its record was last written for
        self.index: dict[str, lifecycle.Phase] = {}  # ref -> its entry in the phase index

    def _guard(self) -> None:
        if self.fail is not None:
            raise self.fail

    async def resync(
        self, agent: mirror.AgentRef, status: models.AgentStatus, have: int | None = None
    ) -> list[mirror.Result]:
        self._guard()
        uid, seq = self.records.get(agent.ref, (agent.uid, 0))
        if uid != agent.uid:
            uid, seq = agent.uid, 0
        if have is None:
            self.reads += 1
            have = seq
        results = []
        for step in mirror.steps(status):
            if step.seq <= have:
                continue
            if self.refuse:
                results.append(mirror.Result(mirror.Outcome.REFUSED, None, seq, self.refuse))
                continue
            if step.seq != seq + 1:
                results.append(
                    mirror.Result(mirror.Outcome.REFUSED, None, seq, f"{step.seq} before {seq + 1}")
                )
                continue
            seq = step.seq
            self.steps.append(step)
            self.index[agent.ref] = step.to
            results.append(mirror.Result(mirror.Outcome.APPLIED, step.to, step.seq))
        self.records[agent.ref] = (uid, seq)
        return results

    async def record_deleted(
        self, agent: mirror.AgentRef, last: mirror.Step, at: datetime.datetime
    ) -> mirror.Result:
        self._guard()
        if self.refuse_delete or agent.ref not in self.records:
            return mirror.Result(mirror.Outcome.REFUSED, None, 0, "there is no record")
        if agent.ref in self.deleted:
            return mirror.Result(mirror.Outcome.DUPLICATE, last.to, last.seq)
        self.deleted.append(agent.ref)
        self.index.pop(agent.ref, None)
        return mirror.Result(mirror.Outcome.APPLIED, last.to, last.seq)

    async def get(self, namespace: str, name: str) -> dict[str, str] | None:
        self._guard()
        ref = f"{namespace}/{name}"
        if ref not in self.records:
            return None
        uid, seq = self.records[ref]
        return {
            "namespace": namespace,
            "name": name,
            "uid": uid,
            "seq": str(seq),
            "phase": str(self.index.get(ref, "")),
            "deleted": "1" if ref in self.deleted else "0",
        }

    async def unindex(self, ref: str) -> None:
        self._guard()
        self.index.pop(ref, None)

    async def agents_in(self, phase: lifecycle.Phase) -> set[str]:
        self._guard()
        return {ref for ref, indexed in self.index.items() if indexed is phase}

    async def record_killswitch(
        self,
        name: str,
        spec: models.KillswitchSpec,
        status: models.KillswitchStatus,
        at: datetime.datetime,
        *,
        engaged_by: str,
        disengaged_by: str,
        uid: str = "",
    ) -> bool:
        self._guard()
        announce = (name, spec.engaged) not in self.switches[-1:]  # the engaged state changed
        self.switches.append((name, spec.engaged))
        self.switch_by[name] = (engaged_by, disengaged_by)
        self.switch_uid[name] = uid
        return announce

    async def forget_killswitch(self, name: str, at: datetime.datetime) -> bool:
        self._guard()
        last = next((engaged for n, engaged in reversed(self.switches) if n == name), False)
        self.switches = [s for s in self.switches if s[0] != name]
        self.switch_by.pop(name, None)
        self.forgotten.append(name)
        return last

    async def ping(self) -> None:
        self._guard()

    def phases(self) -> list[lifecycle.Phase]:
        return [s.to for s in self.steps]


def operator(
    api: FakeKube, valkey: FakeMirror | None = None, **kwargs: Any
) -> tuple[app.Operator, FakeMirror]:
    """The operator's parts over the fakes, with the clock stopped at NOW."""
    valkey = valkey or FakeMirror()
    op = app.Operator(
        cast(kube.Kube, api), cast(mirror.Mirror, valkey), clock=lambda: NOW, **kwargs
    )
    return op, valkey
