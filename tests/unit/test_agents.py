"""The controllers' race and fault paths, against fakes of our own Kube and Mirror interfaces.

The e2e tier runs the same code against the real cluster and Valkey; these
tests reach what a real cluster rarely does on cue: a write that loses a race,
a Valkey that fails in the middle of a pass, a record from another life, a
watch event that arrives late.
"""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import pytest

from controller import app, kube, lifecycle, mirror, models
from tests.unit.fakes import (
    KEY,
    POD,
    FakeKube,
    FakeMirror,
    agent_body,
    deleted_killed_body,
    operator,
    recorded,
    recorded_agent,
)
from tests.unit.fakes import running_pod as running


def agents_pass(op: app.Operator, key: str = KEY) -> None:
    asyncio.run(op.agents.reconcile(key))


def mirror_pass(op: app.Operator, key: str = KEY) -> None:
    asyncio.run(op.mirroring.reconcile(key))


def run_until(op: app.Operator, done: Any, keys: tuple[str, ...] = (KEY,)) -> None:
    """Run the operator's workers until ``done()`` holds (bounded: many turns of the loop)."""

    async def scenario() -> None:
        workers = asyncio.create_task(op.run())
        for key in keys:
            op.agents_queue.add(key)
        for _ in range(500):
            if done():
                break
            await asyncio.sleep(0.01)
        workers.cancel()
        await asyncio.gather(workers, return_exceptions=True)

    asyncio.run(scenario())
    assert done(), "the workers did not get there"


def status(api: FakeKube) -> dict[str, Any]:
    assert api.body is not None
    found: dict[str, Any] = api.body.get("status", {})
    return found


def test_a_new_agent_is_recorded_spawning_and_gets_its_pod() -> None:
    api = FakeKube(agent_body())
    op, valkey = operator(api)
    agents_pass(op)
    assert (status(api)["phase"], status(api)["podName"]) == ("Spawning", POD)
    assert api.pod is not None
    assert api.events == [("Normal", "Spawning", "Created")]
    assert valkey.steps == [], "the agents' pass makes no Valkey call"
    mirror_pass(op)
    assert valkey.phases() == [lifecycle.Phase.SPAWNING]


def test_a_status_write_puts_the_agent_on_the_mirrors_queue() -> None:
    api = FakeKube(agent_body())
    op, valkey = operator(api)
    agents_pass(op)
    assert len(op.mirror_queue) == 1
    run_until(op, lambda: valkey.phases() == [lifecycle.Phase.SPAWNING], keys=())


def test_a_write_that_loses_a_race_is_decided_again() -> None:
    api = FakeKube(agent_body())
    api.conflicts = 1
    op, valkey = operator(api)
    run_until(op, lambda: bool(status(api).get("podName")) and valkey.steps)
    assert status(api)["seq"] == 1
    assert [s.seq for s in valkey.steps] == [1], "the lost write never reaches the mirror"


def test_a_finalizer_is_added_to_an_agent_that_lacks_it() -> None:
    body = agent_body()
    body["metadata"]["finalizers"] = ["someone.else/keep"]
    api = FakeKube(body)
    op, _ = operator(api)
    agents_pass(op)
    assert api.body is not None
    assert api.body["metadata"]["finalizers"] == ["someone.else/keep", models.FINALIZER]


def test_an_agent_that_cannot_be_read_is_reported_once() -> None:
    body = agent_body()
    del body["spec"]["taskId"]
    api = FakeKube(body)
    op, valkey = operator(api)
    agents_pass(op)
    agents_pass(op)
    mirror_pass(op)
    assert [(k, r) for k, r, _ in api.events] == [("Warning", "InvalidSpec")]
    assert "taskId" in api.events[0][2]
    assert valkey.steps == []


def test_a_deleted_agent_that_was_never_ours_is_left_alone() -> None:
    body = agent_body()
    body["metadata"]["finalizers"] = []
    body["metadata"]["deletionTimestamp"] = "2026-01-01T10:00:00Z"
    body["status"] = recorded("Spawning", "Running")
    api = FakeKube(body)
    op, _ = operator(api)
    agents_pass(op)
    assert api.events == []
    assert api.deleted == []


def test_a_gone_agent_is_forgotten() -> None:
    body = agent_body()
    body["status"] = recorded("Spawning", "Running")
    api = FakeKube(body)
    op, _ = operator(api)
    op.agent_event(copy.deepcopy(body), gone=False)
    op.pod_event(running(), gone=False)
    op.agent_event(copy.deepcopy(body), gone=True)
    api.body = None
    agents_pass(op)
    assert op.store.agent(KEY) is None
    assert op.store.pod(KEY) is None, "the gone agent's Pod is no longer indexed"


def test_valkey_failing_holds_nothing_back() -> None:
    api = FakeKube(agent_body())
    valkey = FakeMirror()
    valkey.fail = mirror.ValkeyUnavailable("Valkey is unreachable: no answer within 5 s")
    op, _ = operator(api, valkey)
    agents_pass(op)
    assert status(api)["phase"] == "Spawning"
    assert api.pod is not None, "the Pod is made even though Valkey is down"
    with pytest.raises(mirror.ValkeyUnavailable):
        mirror_pass(op)
    assert ("Warning", "ValkeyUnreachable") in [(k, r) for k, r, _ in api.events]
    assert op.fleet().mirror_behind == 1
    valkey.fail = None
    mirror_pass(op)
    assert valkey.phases() == [lifecycle.Phase.SPAWNING]
    assert valkey.reads == 1, "after a failure the record is read, not assumed"
    assert op.fleet().mirror_behind == 0


def test_a_record_that_is_not_what_was_assumed_is_read_and_brought_up() -> None:
    body = agent_body()
    body["status"] = recorded("Spawning", "Running")
    api = FakeKube(body)
    op, valkey = operator(api)
    op.agent_event(copy.deepcopy(body), gone=False)
    mirror_pass(op)  # forced at first sight: the record is read
    assert valkey.phases() == [lifecycle.Phase.SPAWNING, lifecycle.Phase.RUNNING]
    valkey.records.clear()  # wiped behind this process's back
    api.body["status"] = recorded("Spawning", "Running", "Completed")  # type: ignore[index]
    op.agent_event(copy.deepcopy(api.body), gone=False)  # type: ignore[arg-type]
    mirror_pass(op)  # assumes seq 2: the mirror refuses 3, so the record is read
    assert valkey.phases()[2:] == [
        lifecycle.Phase.SPAWNING,
        lifecycle.Phase.RUNNING,
        lifecycle.Phase.COMPLETED,
    ]
    assert valkey.records[KEY] == ("uid-1", 3)


def test_anti_entropy_repairs_a_wiped_record_of_an_agent_that_did_not_change() -> None:
    body = agent_body()
    body["status"] = recorded("Spawning", "Running")
    api = FakeKube(body)
    op, valkey = operator(api)
    op.agent_event(copy.deepcopy(body), gone=False)
    mirror_pass(op)
    valkey.records.clear()
    mirror_pass(op)
    assert valkey.records == {}, "without anti-entropy nothing looks at an unchanged agent"
    op.mirroring.resync_all()
    assert len(op.mirror_queue) == 1
    mirror_pass(op)
    assert valkey.records[KEY] == ("uid-1", 2)


def test_a_refusal_is_a_warning_posted_once() -> None:
    body = agent_body(desiredPhase="Killed", killReason="stop")
    body["status"] = recorded("Spawning", "Running", "Completed")
    api = FakeKube(body)
    op, _ = operator(api)
    agents_pass(op)
    agents_pass(op)
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
    op, _ = operator(api)
    agents_pass(op)
    assert status(api)["podName"] == POD


def test_a_pod_of_another_agent_is_never_judged() -> None:
    api = FakeKube(agent_body())
    api.pod = running(uid="someone-else")
    api.pod["status"]["phase"] = "Failed"
    api.create_error = kube.Conflict(409, "already exists")
    op, _ = operator(api)
    agents_pass(op)
    assert status(api)["phase"] == "Spawning"


def test_a_stopped_agent_deletes_its_pod_with_the_grace_period() -> None:
    api = recorded_agent("Spawning", "Running", desiredPhase="Killed", killGracePeriodSeconds=7)
    api.pod = running()
    op, _ = operator(api)
    agents_pass(op)
    assert api.deleted == [(POD, 7)]


def test_a_refused_deletion_is_tried_again_and_only_then_released() -> None:
    body = deleted_killed_body()
    api = FakeKube(body)
    op, valkey = operator(api)
    op.agent_event(copy.deepcopy(body), gone=False)
    valkey.refuse_delete = True
    with pytest.raises(mirror.ValkeyRefused, match="the mirror refused the deletion"):
        mirror_pass(op)
    assert api.body is not None
    assert models.FINALIZER in api.body["metadata"]["finalizers"]
    valkey.refuse_delete = False
    mirror_pass(op)
    assert valkey.deleted == [KEY]
    assert api.body is None, "the finalizer went, so the Agent did"


def test_a_deletion_waits_for_the_record_of_the_kill_first() -> None:
    body = agent_body()
    body["status"] = recorded("Spawning", "Running")
    api = FakeKube(body)
    api.pod = running()
    op, valkey = operator(api)
    api.body["metadata"]["deletionTimestamp"] = "2026-01-01T10:00:00Z"  # type: ignore[index]
    api._bump()
    run_until(op, lambda: bool(api.deleted))
    api.pod = None
    op.pod_event(running(), gone=True)
    run_until(op, lambda: api.body is None)
    assert valkey.phases() == [
        lifecycle.Phase.SPAWNING,
        lifecycle.Phase.RUNNING,
        lifecycle.Phase.KILLED,
    ]
    assert valkey.steps[-1].reason == "AgentDeleted"
    assert valkey.deleted == [KEY]


def test_an_agent_created_while_a_switch_is_engaged_never_gets_a_pod() -> None:
    api = FakeKube(agent_body())
    # The switch's watch event has not arrived yet: only the API server knows it.
    api.switches = [
        {"metadata": {"name": "all-stop"}, "spec": {"engaged": True, "reason": "spend"}}
    ]
    op, valkey = operator(api)
    agents_pass(op)
    mirror_pass(op)
    assert api.pod is None
    assert (status(api)["phase"], status(api)["reason"]) == ("Killed", "KillswitchEngaged")
    assert status(api)["message"] == "killswitch all-stop: spend"
    assert valkey.phases() == [lifecycle.Phase.SPAWNING, lifecycle.Phase.KILLED]


def test_a_stale_cached_agent_is_read_afresh_when_its_write_conflicts() -> None:
    api = recorded_agent("Spawning")
    api.pod = running()
    op, valkey = operator(api)
    op.pod_event(running(), gone=False)
    # The watch has shown an older state; the user has killed the agent since, so the
    # Running written on the older state is refused, and the kill is seen on a fresh read.
    op.agent_event(copy.deepcopy(api.body), gone=False)  # type: ignore[arg-type]
    api.change(desiredPhase="Killed")
    run_until(op, lambda: bool(api.deleted) and len(valkey.steps) == 2)
    assert api.deleted == [(POD, 10)]  # the default grace period
    assert status(api)["stopping"]["reason"] == "Killed"
    assert valkey.phases() == [lifecycle.Phase.SPAWNING, lifecycle.Phase.RUNNING]


def test_a_pod_the_watch_has_not_shown_yet_is_asked_of_the_api_server() -> None:
    api = recorded_agent("Spawning")
    api.pod = running()  # made a moment ago; its watch event is still on its way
    op, _ = operator(api)
    agents_pass(op)
    assert status(api)["phase"] == "Running"


def test_the_deleted_pod_of_an_earlier_life_never_fails_the_new_one() -> None:
    api = recorded_agent("Spawning", "Running")
    api.pod = running()
    op, _ = operator(api)
    # The Pod of an Agent of the same name, deleted and re-applied, reported late.
    op.pod_event(running(name="worker-uid0", uid="uid-0"), gone=True)
    assert len(op.agents_queue) == 1
    agents_pass(op)
    assert status(api)["phase"] == "Running"


def test_a_pod_the_watch_saw_deleted_fails_its_agent_once_the_api_server_agrees() -> None:
    api = recorded_agent("Spawning", "Running")
    op, _ = operator(api)
    op.pod_event(running(), gone=True)
    agents_pass(op)
    assert status(api)["reason"] == "WorkloadLost"


def test_an_agent_is_never_failed_on_the_watchs_word_alone() -> None:
    api = recorded_agent("Spawning", "Running")
    api.pod = running()  # the API server still has it
    op, _ = operator(api)
    op.pod_event(running(), gone=True)
    agents_pass(op)
    assert status(api)["phase"] == "Running"


def test_a_kill_is_not_recorded_for_the_deletion_of_an_earlier_lifes_pod() -> None:
    api = recorded_agent("Spawning", "Running", desiredPhase="Killed")
    stopping = running()
    stopping["metadata"]["deletionTimestamp"] = "2026-01-01T10:00:05Z"  # due in 5 s
    api.pod = stopping
    op, _ = operator(api)
    op.pod_event(stopping, gone=False)
    op.pod_event(running(name="worker-uid0", uid="uid-0"), gone=True)  # after ours began
    agents_pass(op)
    assert status(api)["phase"] == "Running"


def test_a_pod_stopping_past_its_time_is_read_afresh() -> None:
    # A deletion the watch never reported (it re-listed after the Pod had gone).
    api = recorded_agent("Spawning", "Running", desiredPhase="Killed")
    stopping = running()
    stopping["metadata"]["deletionTimestamp"] = "2026-01-01T09:58:00Z"  # due two minutes ago
    op, _ = operator(api)
    op.pod_event(stopping, gone=False)
    agents_pass(op)
    assert status(api)["phase"] == "Killed"


def test_no_pod_is_made_for_an_agent_changed_since_it_was_read() -> None:
    api = FakeKube(agent_body())
    op, _ = operator(api)
    op.agent_event(copy.deepcopy(api.body), gone=False)  # type: ignore[arg-type]
    api.change(desiredPhase="Killed")
    result = asyncio.run(op.agents.reconcile(KEY))
    assert result.requeue, "decided on a stale read: looked at again at once"
    assert api.pod is None
    assert op.store.agent(KEY) is None, "the stale copy is dropped, so the next pass reads"


def test_a_kill_under_way_ends_killed_even_if_its_switch_is_disengaged() -> None:
    api = recorded_agent("Spawning", "Running")
    api.pod = running()
    op, _ = operator(api)
    switch = {"metadata": {"name": "all-stop"}, "spec": {"engaged": True, "reason": "spend"}}
    op.switch_event(switch, gone=False)
    agents_pass(op)
    assert api.deleted == [(POD, 10)]
    assert status(api)["stopping"] == {
        "reason": "KillswitchEngaged",
        "message": "killswitch all-stop: spend",
    }
    op.switch_event(switch, gone=True)  # disengaged (here: deleted) while the Pod was stopping
    api.pod = None  # and then the Pod is gone, as the watch reports
    op.pod_event(running(), gone=True)
    agents_pass(op)
    assert (status(api)["phase"], status(api)["reason"], status(api)["message"]) == (
        "Killed",
        "KillswitchEngaged",
        "killswitch all-stop: spend",
    )


def test_a_timeout_is_looked_at_again_when_it_comes_due() -> None:
    api = recorded_agent("Spawning", "Running", activeDeadlineSeconds=30)
    api.body["status"]["startedAt"] = "2026-01-01T09:59:50.000Z"  # type: ignore[index]
    api.pod = running()
    op, _ = operator(api)
    result = asyncio.run(op.agents.reconcile(KEY))
    assert result.requeue_after == pytest.approx(20.0)


def test_an_api_error_is_retried_by_the_queue_with_backoff() -> None:
    api = FakeKube(agent_body())
    api.create_error = kube.ApiError(500, "etcd is having a bad day")
    op, _ = operator(api)
    run_until(op, lambda: op.agents_queue.num_requeues(KEY) >= 1)
    # The Pod may exist all the same (a 5xx after the write): the slot stays promised while
    # the agent is tried again.
    assert op.store.slots_held() == 1


def test_a_pod_made_whose_status_write_was_lost_is_noted_and_holds_its_slot() -> None:
    api = FakeKube(agent_body(spawnTimeoutSeconds=86400))
    assert api.body is not None
    api.body["status"] = recorded("Spawning", pod=False)
    api.pod = running()
    api.pod["status"]["phase"] = "Pending"
    op, _ = operator(api, max_concurrent=1)
    op.agent_event(copy.deepcopy(api.body), gone=False)
    op.pod_event(copy.deepcopy(api.pod), gone=False)
    assert op.store.slots_held() == 1

    async def one_pass() -> int:
        while len(op.agents_queue):  # what the watch events queued
            op.agents_queue.done(await op.agents_queue.get())
        assert not (await op.agents.reconcile(KEY)).requeue
        return len(op.agents_queue)

    assert asyncio.run(one_pass()) == 0, "a pass never wakes its own agent"
    assert status(api)["podName"] == POD


def test_a_free_slot_wakes_the_oldest_waiting_agent() -> None:
    api = FakeKube(agent_body())
    op, _ = operator(api, max_concurrent=1)
    older = agent_body()
    older["metadata"].update(name="older", uid="uid-0", creationTimestamp="2026-01-01T07:00:00Z")
    op.agent_event(older, gone=False)
    op.agent_event(copy.deepcopy(api.body), gone=False)  # type: ignore[arg-type]

    async def pass_and_see() -> list[str]:
        while len(op.agents_queue):  # what the watch events queued
            op.agents_queue.done(await op.agents_queue.get())
        await op.agents.reconcile(KEY)
        return [await op.agents_queue.get()] if len(op.agents_queue) else []

    assert asyncio.run(pass_and_see()) == ["team-a/older"]
    assert status(api)["reason"] == "Queued"
    assert api.pod is None, "the younger agent waits behind the older one"


def test_each_recorded_transition_is_one_info_line(caplog: pytest.LogCaptureFixture) -> None:
    api = recorded_agent("Spawning")
    api.pod = running()
    api.pod["status"]["phase"] = "Succeeded"  # it ran and finished between two looks
    op, _ = operator(api)
    with caplog.at_level("INFO", logger="controller.agents"):
        agents_pass(op)
    lines = [r for r in caplog.records if r.name == "controller.agents"]
    assert [r.getMessage() for r in lines] == [
        "team-a/worker: Spawning -> Running (Started)",
        "team-a/worker: Running -> Completed (Completed)",
    ]
    assert lines[1].transition == {  # type: ignore[attr-defined]
        "namespace": "team-a",
        "name": "worker",
        "uid": "uid-1",
        "from": "Running",
        "to": "Completed",
        "reason": "Completed",
    }


def test_a_pods_change_is_worked_on_before_new_agents() -> None:
    api = recorded_agent("Spawning")
    op, _ = operator(api)
    for i in range(3):
        new = agent_body()
        new["metadata"].update(name=f"new-{i}", uid=f"uid-new-{i}")
        op.agent_event(new, gone=False)
    api.pod = running()
    op.pod_event(copy.deepcopy(api.pod), gone=False)

    async def first() -> str:
        return await op.agents_queue.get()

    assert asyncio.run(first()) == KEY


def test_a_listing_at_start_up_goes_behind_new_agents() -> None:
    api = recorded_agent("Spawning", "Running")
    op, _ = operator(api)
    new = agent_body()
    new["metadata"].update(name="new-0", uid="uid-new-0")
    op.agent_event(new, gone=False)
    asyncio.run(op.prime())  # lists the running agent: no news of a change

    async def first() -> str:
        return await op.agents_queue.get()

    assert asyncio.run(first()) == "team-a/new-0"


# --- who asked for a kill (deploy/base/audit.yaml stamps it; the operator carries it) ---


def test_a_kill_carries_who_asked_into_the_status_the_event_and_the_mirror() -> None:
    api = recorded_agent("Spawning", "Running", desiredPhase="Killed", killReason="budget")
    assert api.body is not None
    api.body["metadata"]["annotations"] = {models.KILLED_BY: "alice", "other": "dropped"}
    api.pod = running()
    op, valkey = operator(api)
    agents_pass(op)
    assert status(api)["stopping"] == {"reason": "Killed", "message": "budget", "by": "alice"}
    assert "killedBy" not in status(api), "not killed yet"
    api.pod = None
    op.pod_event(running(), gone=True)
    agents_pass(op)
    assert (status(api)["phase"], status(api)["killedBy"]) == ("Killed", "alice")
    assert api.events[-1] == ("Normal", "Killed", "budget (killed by alice)")
    mirror_pass(op)
    assert [(s.to, s.killed_by) for s in valkey.steps] == [
        (lifecycle.Phase.SPAWNING, ""),
        (lifecycle.Phase.RUNNING, ""),
        (lifecycle.Phase.KILLED, "alice"),
    ]


def test_a_switchs_kill_is_on_record_as_whoever_engaged_it() -> None:
    api = recorded_agent("Spawning", "Running")
    api.pod = running()
    op, _ = operator(api)
    switch = {
        "metadata": {"name": "all-stop", "annotations": {models.ENGAGED_BY: "bob"}},
        "spec": {"engaged": True, "reason": "spend"},
    }
    op.switch_event(switch, gone=False)
    agents_pass(op)
    api.pod = None
    op.pod_event(running(), gone=True)
    agents_pass(op)
    assert (status(api)["reason"], status(api)["killedBy"]) == ("KillswitchEngaged", "bob")
    assert api.events[-1] == ("Normal", "Killed", "killswitch all-stop: spend (killed by bob)")


def test_a_kill_nobody_is_known_to_have_asked_for_has_no_killed_by() -> None:
    # A cluster without the audit policy: the kill works, and says nothing of who.
    api = recorded_agent("Spawning", "Running", desiredPhase="Killed")
    op, _ = operator(api)
    agents_pass(op)
    assert status(api)["phase"] == "Killed"
    assert "killedBy" not in status(api)
    assert api.events[-1] == ("Normal", "Killed", "Killed")


def test_a_later_kill_changes_nothing_of_the_kill_on_record() -> None:
    # alice's kill is under way when bob's switch engages and the reason is edited: the record
    # keeps alice's kill whole, never bob's name with alice's reason or the other way round.
    api = recorded_agent("Spawning", "Running", desiredPhase="Killed", killReason="budget")
    assert api.body is not None
    api.body["metadata"]["annotations"] = {models.KILLED_BY: "alice"}
    api.pod = running()
    op, _ = operator(api)
    agents_pass(op)
    api.change(killReason="something else")
    switch = {
        "metadata": {"name": "all-stop", "annotations": {models.ENGAGED_BY: "bob"}},
        "spec": {"engaged": True, "reason": "spend"},
    }
    op.switch_event(switch, gone=False)
    op.agent_event(copy.deepcopy(api.body), gone=False)
    agents_pass(op)
    assert status(api)["stopping"] == {"reason": "Killed", "message": "budget", "by": "alice"}
    api.pod = None
    op.pod_event(running(), gone=True)
    agents_pass(op)
    done = status(api)
    assert (done["reason"], done["message"], done["killedBy"]) == ("Killed", "budget", "alice")


@pytest.mark.parametrize(
    ("user", "recorded", "event_ends"),
    [
        ("alice", "alice", " (killed by alice)"),  # a long reason is cut, not who asked
        ("u" * 5000, "u" * models.WHO_MAX, "uuu"),  # a huge name is cut, and is no failure
    ],
)
def test_long_reasons_and_user_names_are_cut_never_a_failure(
    user: str, recorded: str, event_ends: str
) -> None:
    api = recorded_agent("Spawning", "Running", desiredPhase="Killed", killReason="r" * 1024)
    assert api.body is not None
    api.body["metadata"]["annotations"] = {models.KILLED_BY: user}
    op, _ = operator(api)
    agents_pass(op)
    assert (status(api)["phase"], status(api)["killedBy"]) == ("Killed", recorded)
    message = api.events[-1][2]
    assert len(message) == kube.EVENT_MESSAGE_MAX
    assert message.endswith(event_ends)


def test_without_the_audit_policies_a_written_killed_by_is_not_believed() -> None:
    api = recorded_agent("Spawning", "Running", desiredPhase="Killed")
    assert api.body is not None
    api.body["metadata"]["annotations"] = {models.KILLED_BY: "mallory"}
    op, _ = operator(api, audit_annotations=False)
    agents_pass(op)
    assert status(api)["phase"] == "Killed"
    assert "killedBy" not in status(api)


def test_a_switch_with_the_longest_reason_still_kills() -> None:
    api = recorded_agent("Spawning", "Running")
    api.pod = running()
    op, _ = operator(api)
    name = "s" * 253
    switch = {"metadata": {"name": name}, "spec": {"engaged": True, "reason": "r" * 1024}}
    op.switch_event(switch, gone=False)
    agents_pass(op)
    assert api.deleted == [(POD, 10)], "the Pod is stopped"
    assert len(status(api)["stopping"]["message"]) == models.KILL_MESSAGE_MAX
