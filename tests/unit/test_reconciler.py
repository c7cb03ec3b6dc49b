"""The reconciler's race and fault paths, against fakes of our own Kube and Mirror interfaces.

The e2e tier runs the same code against the real cluster and Valkey; these
tests reach what a real cluster rarely does on cue: a write that loses a race,
a Valkey that fails in the middle of a pass, a record from another life.
"""

from __future__ import annotations

import asyncio
import copy
import datetime
from typing import Any, cast

import pytest
import redis.exceptions

from controller import killswitch, kube, lifecycle, mirror, models, reconciler

NOW = datetime.datetime(2026, 1, 1, 10, 0, tzinfo=datetime.UTC)
KEY = "team-a/worker"


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
            "finalizers": [reconciler.FINALIZER],
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
        status["podName"] = "worker-uid1"
    return status


def running_pod() -> dict[str, Any]:
    """The agent's own Pod (labelled with its uid), running."""
    return {
        "metadata": {
            "name": "worker-uid1",
            "namespace": "team-a",
            "uid": "p",
            "labels": {"orchestrator.mosaicstack.dev/agent-uid": "uid-1"},
            "ownerReferences": [
                {"apiVersion": models.API_VERSION, "kind": "Agent", "name": "worker"}
            ],
        },
        "status": {"phase": "Running"},
    }


class FakeKube:
    """The API server as the reconciler sees it: one Agent, its Pod, and the Events."""

    def __init__(self, body: dict[str, Any] | None) -> None:
        self.body = body
        self.pod: dict[str, Any] | None = None
        self.events: list[tuple[str, str, str]] = []
        self.conflicts = 0  # status writes to refuse as stale
        self.create_error: kube.ApiError | None = None
        self.deleted: list[tuple[str, int]] = []
        self.switches: list[dict[str, Any]] = []

    def _bump(self) -> dict[str, Any]:
        assert self.body is not None
        meta = self.body["metadata"]
        meta["resourceVersion"] = str(int(meta["resourceVersion"]) + 1)
        return copy.deepcopy(self.body)

    async def get_agent(self, namespace: str, name: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.body)

    async def write_status(
        self, namespace: str, name: str, rv: str, status: dict[str, Any]
    ) -> dict[str, Any]:
        assert self.body is not None
        if self.conflicts or rv != self.body["metadata"]["resourceVersion"]:
            self.conflicts = max(0, self.conflicts - 1)
            raise kube.Conflict(409, "the object has been modified")
        self.body["status"] = {**self.body.get("status", {}), **status}
        return self._bump()

    async def write_finalizers(
        self, namespace: str, name: str, rv: str, finalizers: list[str]
    ) -> dict[str, Any]:
        assert self.body is not None
        self.body["metadata"]["finalizers"] = finalizers
        return self._bump()

    async def get_pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.pod)

    async def create_pod(self, pod: dict[str, Any]) -> dict[str, Any]:
        if self.create_error is not None:
            raise self.create_error
        self.pod = {**pod, "status": {"phase": "Pending"}}
        self.pod["metadata"]["uid"] = "pod-uid"
        return pod

    async def delete_pod(self, namespace: str, name: str, grace: int, uid: str) -> None:
        self.deleted.append((name, grace))

    async def post_event(self, body: dict[str, Any], kind: str, reason: str, message: str) -> None:
        self.events.append((kind, reason, message))

    async def list_killswitches(self) -> list[dict[str, Any]]:
        return copy.deepcopy(self.switches)

    async def namespace_labels(self, name: str) -> dict[str, str]:
        return {"team": "a"}


class FakeMirror:
    """The mirror's interface, with faults on demand."""

    def __init__(self) -> None:
        self.steps: list[mirror.Step] = []
        self.resyncs = 0
        self.fail_record = False
        self.refuse_record = False
        self.deleted: list[str] = []
        self.refuse_delete = False

    async def resync(
        self, agent: mirror.AgentRef, status: models.AgentStatus
    ) -> list[mirror.Result]:
        self.resyncs += 1
        return []

    async def record(self, agent: mirror.AgentRef, step: mirror.Step) -> mirror.Result:
        if self.fail_record:
            raise redis.exceptions.ConnectionError("Connection refused")
        if self.refuse_record:
            return mirror.Result(mirror.Outcome.REFUSED, None, 0, "transition 2 arrived before 1")
        self.steps.append(step)
        return mirror.Result(mirror.Outcome.APPLIED, step.to, step.seq)

    async def record_deleted(
        self, agent: mirror.AgentRef, last: mirror.Step, at: datetime.datetime
    ) -> mirror.Result:
        if self.refuse_delete:
            return mirror.Result(
                mirror.Outcome.REFUSED, None, 0, "there is no record of this agent"
            )
        self.deleted.append(agent.ref)
        return mirror.Result(mirror.Outcome.APPLIED, last.to, last.seq)


def make(
    api: FakeKube, valkey: FakeMirror | None = None
) -> tuple[reconciler.Reconciler, FakeMirror]:
    valkey = valkey or FakeMirror()
    work = reconciler.Reconciler(
        cast(kube.Kube, api), cast(mirror.Mirror, valkey), workers=2, clock=lambda: NOW
    )
    return work, valkey


def reconcile(work: reconciler.Reconciler, key: str = KEY) -> None:
    asyncio.run(work.reconcile(key))


def test_a_new_agent_is_recorded_spawning_and_gets_its_pod() -> None:
    api = FakeKube(agent_body())
    work, valkey = make(api)
    reconcile(work)
    assert api.body is not None
    assert api.body["status"]["phase"] == "Spawning"
    assert api.body["status"]["podName"] == "worker-uid1"
    assert api.pod is not None
    assert [s.to for s in valkey.steps] == [lifecycle.Phase.SPAWNING]
    assert api.events == [("Normal", "Spawning", "Created")]


def test_a_write_that_loses_a_race_is_decided_again() -> None:
    api = FakeKube(agent_body())
    api.conflicts = 1
    work, valkey = make(api)

    async def scenario() -> None:
        workers = asyncio.create_task(work.run())
        work.enqueue(KEY)
        for _ in range(200):  # bounded: the worker gets many turns to finish
            if api.body and api.body.get("status", {}).get("podName"):
                break
            await asyncio.sleep(0.01)
        workers.cancel()
        await asyncio.gather(workers, return_exceptions=True)

    asyncio.run(scenario())
    assert api.body is not None
    assert api.body["status"]["seq"] == 1
    assert [s.seq for s in valkey.steps] == [1], "the lost write must not reach the mirror"


def test_a_finalizer_is_added_to_an_agent_that_lacks_it() -> None:
    body = agent_body()
    body["metadata"]["finalizers"] = ["someone.else/keep"]
    api = FakeKube(body)
    work, _ = make(api)
    reconcile(work)
    assert api.body is not None
    assert api.body["metadata"]["finalizers"] == ["someone.else/keep", reconciler.FINALIZER]


def test_an_agent_that_cannot_be_read_is_reported_once() -> None:
    body = agent_body()
    del body["spec"]["taskId"]
    api = FakeKube(body)
    work, valkey = make(api)
    reconcile(work)
    reconcile(work)
    assert [(k, r) for k, r, _ in api.events] == [("Warning", "InvalidSpec")]
    assert "taskId" in api.events[0][2]
    assert valkey.steps == []


def test_a_deleted_agent_that_was_never_ours_is_left_alone() -> None:
    body = agent_body()
    body["metadata"]["finalizers"] = []
    body["metadata"]["deletionTimestamp"] = "2026-01-01T10:00:00Z"
    api = FakeKube(body)
    work, valkey = make(api)
    reconcile(work)
    assert api.events == []
    assert valkey.resyncs == 0


def test_a_gone_agent_is_forgotten() -> None:
    work, valkey = make(FakeKube(None))
    reconcile(work)
    assert valkey.resyncs == 0


def test_valkey_failing_mid_pass_holds_nothing_back() -> None:
    api = FakeKube(agent_body())
    valkey = FakeMirror()
    valkey.fail_record = True
    work, _ = make(api, valkey)
    with pytest.raises(reconciler.Retry, match="the mirror is behind"):
        reconcile(work)
    assert api.body is not None
    assert api.body["status"]["phase"] == "Spawning"
    assert api.pod is not None, "the Pod is made even though Valkey is down"
    assert ("Warning", "ValkeyUnreachable") in [(k, r) for k, r, _ in api.events]
    valkey.fail_record = False
    reconcile(work)
    assert valkey.resyncs == 2, "the next pass resyncs what the mirror missed"


def test_a_refused_mirror_write_resyncs_on_the_next_pass() -> None:
    api = FakeKube(agent_body())
    valkey = FakeMirror()
    valkey.refuse_record = True
    work, _ = make(api, valkey)
    reconcile(work)
    reconcile(work)
    assert valkey.resyncs == 2


def test_a_refusal_is_a_warning_posted_once() -> None:
    body = agent_body(desiredPhase="Killed", killReason="stop")
    body["status"] = recorded("Spawning", "Running", "Completed")
    api = FakeKube(body)
    work, _ = make(api)
    reconcile(work)
    reconcile(work)
    warnings = [(r, m) for k, r, m in api.events if k == "Warning"]
    assert warnings == [
        (
            "TransitionRefused",
            "the agent was already Completed when the kill (Killed) came; it is dropped",
        )
    ]


def test_a_pod_left_by_an_earlier_try_is_adopted() -> None:
    api = FakeKube(agent_body())
    api.create_error = kube.Conflict(409, 'pods "worker-uid1" already exists')
    work, _ = make(api)
    reconcile(work)
    assert api.body is not None
    assert api.body["status"]["podName"] == "worker-uid1"


def test_a_pod_of_another_agent_is_never_judged() -> None:
    api = FakeKube(agent_body())
    api.pod = {
        "metadata": {"name": "worker-uid1", "uid": "p", "labels": {}},
        "status": {"phase": "Failed"},
    }
    api.create_error = kube.Conflict(409, "already exists")
    work, _ = make(api)
    reconcile(work)
    assert api.body is not None
    assert api.body["status"]["phase"] == "Spawning"


def test_a_stopped_agent_deletes_its_pod_with_the_grace_period() -> None:
    api = FakeKube(agent_body(desiredPhase="Killed", killGracePeriodSeconds=7))
    api.body["status"] = recorded("Spawning", "Running")  # type: ignore[index]
    api.pod = running_pod()
    work, _ = make(api)
    reconcile(work)
    assert api.deleted == [("worker-uid1", 7)]


def test_a_refused_deletion_is_tried_again() -> None:
    body = agent_body()
    body["metadata"]["deletionTimestamp"] = "2026-01-01T10:00:00Z"
    body["status"] = recorded("Spawning", "Killed", pod=False)
    api = FakeKube(body)
    valkey = FakeMirror()
    valkey.refuse_delete = True
    work, _ = make(api, valkey)
    with pytest.raises(reconciler.Retry, match="the mirror refused the deletion"):
        reconcile(work)
    assert api.body is not None
    assert reconciler.FINALIZER in api.body["metadata"]["finalizers"]
    valkey.refuse_delete = False
    reconcile(work)
    assert reconciler.FINALIZER not in api.body["metadata"]["finalizers"]
    assert valkey.deleted == [KEY]


def test_an_agent_created_while_a_switch_is_engaged_never_gets_a_pod() -> None:
    api = FakeKube(agent_body())
    # The switch's watch event has not arrived yet: only the API server knows it.
    api.switches = [
        {"metadata": {"name": "all-stop"}, "spec": {"engaged": True, "reason": "spend"}}
    ]
    work, valkey = make(api)
    reconcile(work)
    assert api.pod is None
    assert api.body is not None
    assert (api.body["status"]["phase"], api.body["status"]["reason"]) == (
        "Killed",
        "KillswitchEngaged",
    )
    assert api.body["status"]["message"] == "killswitch all-stop: spend"
    assert [s.to for s in valkey.steps] == [lifecycle.Phase.SPAWNING, lifecycle.Phase.KILLED]


def test_the_echo_of_our_own_write_is_cached_but_not_worked_on_again() -> None:
    api = FakeKube(agent_body())
    work, _ = make(api)
    reconcile(work)
    assert api.body is not None
    ours = copy.deepcopy(api.body)
    theirs = copy.deepcopy(api.body)
    theirs["metadata"]["resourceVersion"] = str(int(ours["metadata"]["resourceVersion"]) + 1)

    async def watch_events() -> tuple[set[str], set[str]]:
        work.observed(KEY, ours)  # our own last write coming back through the watch
        echoed = set(work._dirty)
        work.observed(KEY, theirs)  # someone else's change
        return echoed, set(work._dirty)

    assert asyncio.run(watch_events()) == (set(), {KEY})
    assert work._agents[KEY] is theirs


def test_the_echo_is_worked_on_when_an_older_event_came_in_between() -> None:
    api = FakeKube(agent_body())
    work, _ = make(api)
    reconcile(work)
    assert api.body is not None
    ours = copy.deepcopy(api.body)
    older = copy.deepcopy(api.body)
    older["metadata"]["resourceVersion"] = str(int(ours["metadata"]["resourceVersion"]) - 1)

    async def watch_events() -> set[str]:
        work.observed(KEY, older)  # a slow event of the state before our write
        work._dirty.clear()  # ... which a worker has taken (and may have acted on)
        work.observed(KEY, ours)  # then our write's echo: the state to act on again
        return set(work._dirty)

    assert asyncio.run(watch_events()) == {KEY}
    assert work._agents[KEY] is ours


def test_a_stale_cached_agent_is_read_afresh_when_its_write_conflicts() -> None:
    api = FakeKube(agent_body())
    api.body["status"] = recorded("Spawning")  # type: ignore[index]
    api.pod = running_pod()
    work, valkey = make(api)
    work.observed_pod(running_pod())
    # The watch has shown an older state; the user has killed the agent since, so the
    # Running written on the older state is refused, and the kill is seen on a fresh read.
    work.observed(KEY, copy.deepcopy(api.body))  # type: ignore[arg-type]
    api.body["spec"]["desiredPhase"] = "Killed"  # type: ignore[index]
    api._bump()

    async def scenario() -> None:
        workers = asyncio.create_task(work.run())
        work.enqueue(KEY)
        for _ in range(200):  # bounded: the worker gets many turns to finish
            if api.deleted:
                break
            await asyncio.sleep(0.01)
        workers.cancel()
        await asyncio.gather(workers, return_exceptions=True)

    asyncio.run(scenario())
    assert api.deleted == [("worker-uid1", 10)]  # the default grace period
    assert api.body["status"]["stopping"]["reason"] == "Killed"  # type: ignore[index]
    assert [s.to for s in valkey.steps] == [lifecycle.Phase.RUNNING]


def test_a_pod_the_watch_has_not_shown_yet_is_asked_of_the_api_server() -> None:
    api = FakeKube(agent_body())
    api.body["status"] = recorded("Spawning")  # type: ignore[index]
    api.pod = running_pod()  # made a moment ago; its watch event is still on its way
    work, valkey = make(api)
    reconcile(work)
    assert api.body["status"]["phase"] == "Running"  # type: ignore[index]
    assert [s.to for s in valkey.steps] == [lifecycle.Phase.RUNNING]


def test_the_deleted_pod_of_an_earlier_life_never_fails_the_new_one() -> None:
    api = FakeKube(agent_body())
    api.body["status"] = recorded("Spawning", "Running")  # type: ignore[index]
    api.pod = running_pod()
    work, valkey = make(api)
    earlier = running_pod()  # the Pod of an Agent of the same name, deleted and re-applied
    earlier["metadata"]["name"] = "worker-uid0"
    earlier["metadata"]["labels"]["orchestrator.mosaicstack.dev/agent-uid"] = "uid-0"

    async def watch_event() -> set[str]:
        work.observed_pod(earlier, gone=True)  # its deletion reported late
        return set(work._dirty)

    assert asyncio.run(watch_event()) == {KEY}
    reconcile(work)
    assert api.body["status"]["phase"] == "Running"  # type: ignore[index]
    assert valkey.steps == []


def test_a_pod_the_watch_saw_deleted_fails_its_agent_once_the_api_server_agrees() -> None:
    api = FakeKube(agent_body())
    api.body["status"] = recorded("Spawning", "Running")  # type: ignore[index]
    work, valkey = make(api)
    work.observed_pod(running_pod(), gone=True)
    reconcile(work)
    assert api.body["status"]["reason"] == "WorkloadLost"  # type: ignore[index]
    assert [s.to for s in valkey.steps] == [lifecycle.Phase.FAILED]


def test_an_agent_is_never_failed_on_the_watchs_word_alone() -> None:
    api = FakeKube(agent_body())
    api.body["status"] = recorded("Spawning", "Running")  # type: ignore[index]
    api.pod = running_pod()  # the API server still has it
    work, valkey = make(api)
    work.observed_pod(running_pod(), gone=True)
    reconcile(work)
    assert api.body["status"]["phase"] == "Running"  # type: ignore[index]
    assert valkey.steps == []


def test_a_kill_is_not_recorded_for_the_deletion_of_an_earlier_lifes_pod() -> None:
    api = FakeKube(agent_body(desiredPhase="Killed"))
    api.body["status"] = recorded("Spawning", "Running")  # type: ignore[index]
    stopping = running_pod()
    stopping["metadata"]["deletionTimestamp"] = "2026-01-01T10:00:05Z"  # due in 5 s
    api.pod = stopping
    work, valkey = make(api)
    earlier = running_pod()
    earlier["metadata"]["name"] = "worker-uid0"
    earlier["metadata"]["labels"]["orchestrator.mosaicstack.dev/agent-uid"] = "uid-0"
    work.observed_pod(stopping)
    work.observed_pod(earlier, gone=True)  # reported after this life's Pod began to stop
    reconcile(work)
    assert api.body["status"]["phase"] == "Running"  # type: ignore[index]
    assert valkey.steps == []


def test_a_pod_stopping_past_its_time_is_read_afresh() -> None:
    # A deletion the watch never reported (it re-listed after the Pod had gone).
    api = FakeKube(agent_body(desiredPhase="Killed"))
    api.body["status"] = recorded("Spawning", "Running")  # type: ignore[index]
    stopping = running_pod()
    stopping["metadata"]["deletionTimestamp"] = "2026-01-01T09:58:00Z"  # due two minutes ago
    work, valkey = make(api)
    work.observed_pod(stopping)
    reconcile(work)
    assert api.body["status"]["phase"] == "Killed"  # type: ignore[index]
    assert [s.to for s in valkey.steps] == [lifecycle.Phase.KILLED]


def test_no_pod_is_made_for_an_agent_changed_since_it_was_read() -> None:
    api = FakeKube(agent_body())
    work, _ = make(api)
    work.observed(KEY, copy.deepcopy(api.body))  # type: ignore[arg-type]
    api.body["spec"]["desiredPhase"] = "Killed"  # type: ignore[index]
    api._bump()
    with pytest.raises(kube.Conflict, match="changed since it was read"):
        reconcile(work)
    assert api.pod is None


def test_a_kill_under_way_ends_killed_even_if_its_switch_is_disengaged() -> None:
    api = FakeKube(agent_body())
    assert api.body is not None
    api.body["status"] = recorded("Spawning", "Running")
    api.pod = running_pod()
    work, _ = make(api)
    switch = {"metadata": {"name": "all-stop"}, "spec": {"engaged": True, "reason": "spend"}}
    work.switches = {"all-stop": killswitch.Switch.of(switch)}
    reconcile(work)
    assert api.deleted == [("worker-uid1", 10)]
    assert api.body["status"]["stopping"] == {
        "reason": "KillswitchEngaged",
        "message": "killswitch all-stop: spend",
    }

    work.switches = {}  # disengaged while the Pod was stopping
    api.pod = None  # and then the Pod is gone, as the watch reports
    work.observed_pod(running_pod(), gone=True)
    reconcile(work)
    status = api.body["status"]
    assert (status["phase"], status["reason"], status["message"]) == (
        "Killed",
        "KillswitchEngaged",
        "killswitch all-stop: spend",
    )
