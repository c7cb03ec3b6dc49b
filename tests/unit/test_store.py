"""The store: the trimming transform, the echo rule, tombstones and the slot counts."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from controller import models, store
from tests.unit.fakes import KEY, agent_body, recorded, running_pod


def with_noise(body: dict[str, Any]) -> dict[str, Any]:
    """A body as the API server sends it: managedFields and annotations the operator never reads."""
    noisy = copy.deepcopy(body)
    noisy["metadata"]["managedFields"] = [{"manager": "kubectl", "fieldsV1": {"f:spec": {}}}]
    noisy["metadata"]["annotations"] = {"kubectl.kubernetes.io/last-applied-configuration": "{}"}
    return noisy


def test_an_agent_is_kept_without_what_the_operator_never_reads() -> None:
    cache = store.Store()
    body = agent_body()
    cache.observe_agent(with_noise(body))
    kept = cache.agent(KEY)
    assert kept is not None
    assert "managedFields" not in kept["metadata"]
    assert "annotations" not in kept["metadata"]
    assert kept["spec"] == body["spec"]
    assert kept["metadata"]["resourceVersion"] == "1"


def test_of_the_annotations_only_who_asked_is_kept() -> None:
    cache = store.Store()
    body = with_noise(agent_body())
    body["metadata"]["annotations"] = {models.KILLED_BY: "alice", "big": "x" * 10_000}
    cache.observe_agent(body)
    kept = cache.agent(KEY)
    assert kept is not None
    assert kept["metadata"]["annotations"] == {models.KILLED_BY: "alice"}
    switch = {
        "metadata": {"name": "s", "annotations": {models.ENGAGED_BY: "bob", "big": "x"}},
        "spec": {"engaged": True},
    }
    cache.put_switch(switch)
    assert cache.switch("s")["metadata"]["annotations"] == {models.ENGAGED_BY: "bob"}  # type: ignore[index]


def test_without_the_audit_policies_no_annotation_is_believed() -> None:
    # AUDIT_ANNOTATIONS=false: anyone could have written them, so none is kept.
    cache = store.Store(audit=False)
    body = agent_body(desiredPhase="Killed")
    body["metadata"]["annotations"] = {models.KILLED_BY: "mallory"}
    cache.observe_agent(body)
    assert "annotations" not in cache.agent(KEY)["metadata"]  # type: ignore[index]
    cache.put_switch(
        {"metadata": {"name": "s", "annotations": {models.ENGAGED_BY: "mallory"}}, "spec": {}}
    )
    assert cache.switches()[0].engaged_by == ""


def test_a_pod_is_kept_as_far_as_observing_it_needs() -> None:
    pod = running_pod()
    pod["metadata"]["managedFields"] = [{"manager": "kubelet"}]
    pod["spec"] = {"containers": [{"name": "a", "image": "i", "env": [{"name": "X"}]}]}
    pod["status"]["containerStatuses"] = [
        {
            "name": "a",
            "image": "i",
            "imageID": "sha256:...",
            "state": {"terminated": {"exitCode": 3, "message": "boom", "containerID": "c"}},
        }
    ]
    cache = store.Store()
    assert cache.observe_pod(pod) == KEY
    seen = cache.pod(KEY)
    assert seen is not None
    assert "spec" not in seen.body
    assert "managedFields" not in seen.body["metadata"]
    assert seen.body["status"]["containerStatuses"] == [
        {"state": {"terminated": {"exitCode": 3, "message": "boom"}}}
    ]


def test_a_pod_owned_by_no_agent_is_not_indexed() -> None:
    pod = running_pod()
    pod["metadata"]["ownerReferences"] = [{"apiVersion": "batch/v1", "kind": "Job", "name": "j"}]
    cache = store.Store()
    assert cache.observe_pod(pod) is None
    assert cache.pod(KEY) is None


def test_a_pod_the_same_in_all_the_operator_reads_is_no_news() -> None:
    cache = store.Store()
    made = running_pod()
    made["status"] = {"phase": "Pending"}
    cache.put_pod(KEY, made)  # the response to our own create
    echo = copy.deepcopy(made)
    echo["metadata"]["resourceVersion"] = "7"
    assert cache.observe_pod(echo) is None, "the watch's echo of our create"
    bound = copy.deepcopy(echo)
    bound["spec"] = {"nodeName": "kwok-node-0"}
    bound["status"]["conditions"] = [{"type": "PodScheduled", "status": "True"}]
    assert cache.observe_pod(bound) is None, "the scheduler's binding"
    assert cache.observe_pod(running_pod()) == KEY, "it started"
    assert cache.pod(KEY).body["status"]["phase"] == "Running"  # type: ignore[union-attr]
    assert cache.observe_pod(running_pod()) is None, "the same again"
    assert cache.observe_pod(running_pod(), gone=True) == KEY, "it went"
    assert cache.pod(KEY).gone  # type: ignore[union-attr]


def test_the_echo_of_our_own_write_is_kept_but_is_no_news() -> None:
    cache = store.Store()
    ours = agent_body()
    ours["metadata"]["resourceVersion"] = "5"
    cache.put_agent(ours, written=True)
    theirs = copy.deepcopy(ours)
    theirs["metadata"]["resourceVersion"] = "6"
    assert not cache.observe_agent(ours), "our own write coming back through the watch"
    assert cache.observe_agent(theirs), "someone else's change"
    kept = cache.agent(KEY)
    assert kept is not None
    assert kept["metadata"]["resourceVersion"] == "6"


def test_the_echo_is_news_when_an_unordered_older_body_came_in_between() -> None:
    # Versions that are not etcd revisions cannot be ordered: a body that came between our
    # write and its echo is stored, and a pass may have acted on it, so the echo is news.
    cache = store.Store()
    ours = agent_body()
    ours["metadata"]["resourceVersion"] = "v-5"
    cache.put_agent(ours, written=True)
    other = copy.deepcopy(ours)
    other["metadata"]["resourceVersion"] = "v-4"
    assert cache.observe_agent(other)
    assert cache.observe_agent(ours)


def test_a_deleted_agent_is_not_brought_back_by_a_late_response() -> None:
    cache = store.Store()
    body = agent_body()
    cache.observe_agent(body)
    cache.observe_agent(body, gone=True)
    assert cache.agent(KEY) is None
    late = copy.deepcopy(body)
    late["metadata"]["resourceVersion"] = "9"
    assert cache.put_agent(late, written=True) is None
    assert cache.agent(KEY) is None


def test_a_new_life_under_the_same_name_is_kept() -> None:
    cache = store.Store()
    body = agent_body()
    cache.observe_agent(body, gone=True)
    again = copy.deepcopy(body)
    again["metadata"]["uid"] = "uid-2"
    assert cache.put_agent(again) is not None
    assert cache.observe_agent(again)
    kept = cache.agent(KEY)
    assert kept is not None
    assert kept["metadata"]["uid"] == "uid-2"


def test_tombstones_are_bounded() -> None:
    cache = store.Store()
    for i in range(store.TOMBSTONES + 10):
        body = agent_body()
        body["metadata"]["name"] = f"a{i}"
        cache.observe_agent(body, gone=True)
    first = agent_body()
    first["metadata"]["name"] = "a0"
    assert cache.put_agent(first) is not None, "the oldest tombstone was forgotten"
    last = agent_body()
    last["metadata"]["name"] = f"a{store.TOMBSTONES + 9}"
    assert cache.put_agent(last) is None


def named(name: str, created: str, **status: Any) -> dict[str, Any]:
    body = agent_body()
    body["metadata"]["name"] = name
    body["metadata"]["creationTimestamp"] = created
    body["status"] = status
    return body


@pytest.mark.parametrize(
    ("status", "holds", "waits"),
    [
        ({}, False, True),
        (recorded("Spawning", pod=False), False, True),
        (recorded("Spawning"), True, False),
        (recorded("Spawning", "Running"), True, False),
        (recorded("Spawning", "Running", "Completed"), False, False),
        (recorded("Spawning", "Killed", pod=False), False, False),
    ],
    ids=[
        "a new agent waits",
        "a queued agent waits",
        "an agent with its Pod holds a slot",
        "a running agent holds a slot",
        "a finished agent holds nothing",
        "a killed queued agent neither holds nor waits",
    ],
)
def test_slots_are_counted_from_the_status(
    status: dict[str, Any], holds: bool, waits: bool
) -> None:
    cache = store.Store()
    cache.observe_agent(named("a", "2026-01-01T08:00:00Z", **status))
    assert cache.holds("team-a/a") is holds
    assert (cache.slots_held(), [w.key for w in cache.line()]) == (
        int(holds),
        ["team-a/a"] if waits else [],
    )


def test_a_promised_slot_is_held_until_the_status_shows_the_pod() -> None:
    cache = store.Store()
    body = named("a", "2026-01-01T08:00:00Z")
    cache.observe_agent(body)
    cache.promise("team-a/a")
    assert cache.slots_held() == 1
    body["status"] = recorded("Spawning")
    body["metadata"]["resourceVersion"] = "2"
    cache.observe_agent(body)
    assert cache.slots_held() == 1
    body["status"] = recorded("Spawning", "Running", "Completed")
    body["metadata"]["resourceVersion"] = "3"
    cache.observe_agent(body)
    assert cache.slots_held() == 0


def test_a_killed_or_deleted_agent_leaves_the_line() -> None:
    cache = store.Store()
    killed = named("a", "2026-01-01T08:00:00Z")
    killed["spec"]["desiredPhase"] = "Killed"
    deleted = named("b", "2026-01-01T08:00:00Z")
    deleted["metadata"]["deletionTimestamp"] = "2026-01-01T09:00:00Z"
    gone = named("c", "2026-01-01T08:00:00Z")
    for body in (killed, deleted, gone):
        cache.observe_agent(body)
    cache.observe_agent(gone, gone=True)
    assert cache.line() == []


def test_switches_are_replaced_by_a_fresh_listing() -> None:
    cache = store.Store()
    cache.observe_switch({"metadata": {"name": "old"}, "spec": {"engaged": True}})
    cache.replace_switches([{"metadata": {"name": "new"}, "spec": {"engaged": False}}])
    assert [s.name for s in cache.switches()] == ["new"]
    assert cache.switch("old") is None
    cache.observe_switch({"metadata": {"name": "new"}}, gone=True)
    assert cache.switches() == []


def test_an_event_older_than_our_own_write_never_replaces_it() -> None:
    cache = store.Store()
    ours = named("a", "2026-01-01T08:00:00Z", **recorded("Spawning"))
    ours["metadata"]["resourceVersion"] = "12"
    cache.put_agent(ours, written=True)  # our write: the Pod is made, podName recorded
    assert cache.slots_held() == 1
    older = named("a", "2026-01-01T08:00:00Z", **recorded("Spawning", pod=False))
    older["metadata"]["resourceVersion"] = "11"  # the watch's echo of our previous write
    assert not cache.observe_agent(older), "nothing newer than what the store holds"
    kept = cache.agent("team-a/a")
    assert kept is not None
    assert kept["metadata"]["resourceVersion"] == "12"
    assert (cache.slots_held(), cache.line()) == (1, []), "the slot count never goes back"


def test_an_agent_whose_pod_exists_holds_a_slot_and_waits_for_none() -> None:
    cache = store.Store()
    cache.observe_agent(named("worker", "2026-01-01T08:00:00Z", **recorded("Spawning", pod=False)))
    assert [w.key for w in cache.line()] == [KEY]
    cache.observe_pod(running_pod())  # made, but the status does not say so (yet)
    assert (cache.slots_held(), cache.holds(KEY), cache.line()) == (1, True, [])
    cache.observe_pod(running_pod(), gone=True)
    assert (cache.slots_held(), [w.key for w in cache.line()]) == (0, [KEY])


def test_a_stale_body_is_read_afresh_but_keeps_its_place_in_line() -> None:
    cache = store.Store()
    older = named("older", "2026-01-01T08:00:00Z")
    younger = named("younger", "2026-01-01T08:00:01Z")
    cache.observe_agent(older)
    cache.observe_agent(younger)
    cache.invalidate("team-a/older")  # a write of its conflicted
    assert cache.agent("team-a/older") is None, "the next pass reads it afresh"
    assert sorted(w.key for w in cache.line()) == ["team-a/older", "team-a/younger"]
    fresh = copy.deepcopy(older)
    fresh["metadata"]["resourceVersion"] = "2"
    cache.put_agent(fresh)
    assert cache.agent("team-a/older") is not None
