"""The operator as a real process on the real cluster: every scenario checks all three views."""

from __future__ import annotations

import json
from typing import Any

import pytest
import redis
import yaml

from tests.conftest import Cluster, Operator, Operators, RestartableValkey
from tests.e2e import views
from tests.e2e.views import Feed
from tests.helpers import get, metric, wait_for

SIM = "sim.orchestrator.mosaicstack.dev"
pytestmark = pytest.mark.usefixtures("crds")


def manifest(name: str, annotations: dict[str, str] | None = None, **spec: Any) -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "orchestrator.mosaicstack.dev/v1alpha1",
            "kind": "Agent",
            "metadata": {"name": name},
            "spec": {
                "taskId": f"TASK-{name}",
                "template": {
                    "metadata": {"annotations": annotations or {}},
                    "spec": {
                        "containers": [{"name": "agent", "image": "registry.example/agent:1"}]
                    },
                },
                **spec,
            },
        }
    )


def apply(cluster: Cluster, namespace: str, text: str) -> str:
    return cluster.kubectl("apply", "-n", namespace, "-f", "-", stdin=text)


def phase_of(cluster: Cluster, namespace: str, name: str, phase: str) -> dict[str, Any] | None:
    body = views.agent(cluster, namespace, name)
    return body if body.get("status", {}).get("phase") == phase else None


def agree(
    cluster: Cluster,
    url: str,
    feed: Feed,
    namespace: str,
    name: str,
    phase: str,
    timeout: float = 30,
    describe: bool = True,
) -> dict[str, Any]:
    """Wait until the agent is in ``phase`` and all three views say so."""
    return wait_for(
        lambda: views.check(cluster, url, feed, namespace, name, phase, describe),
        timeout,
        f"{name} to be {phase} in status, Valkey and events",
    )


def pod(cluster: Cluster, namespace: str, name: str) -> dict[str, Any] | None:
    result = cluster.kubectl_result("get", "pod", name, "-n", namespace, "-o", "json")
    return json.loads(result.stdout) if result.returncode == 0 else None


def patch_spec(cluster: Cluster, namespace: str, name: str, **spec: Any) -> Any:
    """`kubectl patch` of the Agent's spec, as a user would; returns the completed process."""
    return cluster.kubectl_result(
        "patch", "agent", name, "-n", namespace, "--type=merge", "-p", json.dumps({"spec": spec})
    )


def events_of(cluster: Cluster, namespace: str, uid: str) -> list[tuple[str, str, str]]:
    """(type, reason, message) of the Kubernetes Events on the Agent, oldest first."""
    listed = json.loads(
        cluster.kubectl(
            "get",
            "events",
            "-n",
            namespace,
            "-o",
            "json",
            f"--field-selector=involvedObject.uid={uid}",
        )
    )["items"]
    listed.sort(key=lambda e: (e.get("firstTimestamp") or "", e["metadata"]["name"]))
    return [(e["type"], e["reason"], e["message"]) for e in listed]


def test_an_agent_runs_to_completion(
    crds: Cluster, namespace: str, valkey_url: str, feed: Feed, operator: Operator
) -> None:
    apply(crds, namespace, manifest("worker", {f"{SIM}/start-after": "1s", f"{SIM}/run-for": "2s"}))
    spawning = agree(crds, valkey_url, feed, namespace, "worker", "Spawning")
    uid = spawning["metadata"]["uid"]
    pod_name = wait_for(
        lambda: views.agent(crds, namespace, "worker")["status"].get("podName"), 30, "the Pod"
    )
    made = pod(crds, namespace, pod_name)
    assert made is not None
    owner = made["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["uid"], owner["controller"]) == ("Agent", uid, True)
    assert made["spec"]["restartPolicy"] == "Never"
    env = {e["name"]: e["value"] for e in made["spec"]["containers"][0]["env"]}
    assert env == {"AGENT_NAME": "worker", "TASK_ID": "TASK-worker"}

    running = agree(crds, valkey_url, feed, namespace, "worker", "Running")
    started = pod(crds, namespace, pod_name)
    assert started is not None
    container_start = started["status"]["containerStatuses"][0]["state"]["running"]["startedAt"]
    assert running["status"]["startedAt"].removesuffix(".000Z") == container_start.removesuffix("Z")

    done = agree(crds, valkey_url, feed, namespace, "worker", "Completed")
    assert done["status"]["completedAt"]
    assert [h["phase"] for h in done["status"]["history"]] == ["Spawning", "Running", "Completed"]
    conditions = {c["type"]: c["status"] for c in done["status"]["conditions"]}
    assert conditions == {
        "Ready": "True",
        "Reconciling": "False",
        "Stalled": "False",
        "Finished": "True",
    }
    assert [r for _, r, _ in events_of(crds, namespace, uid)] == [
        "Spawning",
        "Running",
        "Completed",
    ]
    for condition in (
        "--for=condition=Ready",
        "--for=condition=Finished",
        "--for=jsonpath={.status.phase}=Completed",
    ):
        crds.kubectl("wait", condition, "agent/worker", "-n", namespace, "--timeout=10s")


def test_a_failing_agent_keeps_its_termination_message(
    crds: Cluster, namespace: str, valkey_url: str, feed: Feed, operator: Operator
) -> None:
    annotations = {
        f"{SIM}/run-for": "1s",
        f"{SIM}/exit-code": "3",
        f"{SIM}/termination-message": "tests failed: 4 of 120",
    }
    apply(crds, namespace, manifest("tester", annotations, agentType="tester"))
    failed = agree(crds, valkey_url, feed, namespace, "tester", "Failed")
    assert failed["status"]["reason"] == "WorkloadFailed"
    assert failed["status"]["error"] == "tests failed: 4 of 120"
    assert ("Warning", "Failed", "tests failed: 4 of 120") in events_of(
        crds, namespace, failed["metadata"]["uid"]
    )
    assert {c["type"]: c["status"] for c in failed["status"]["conditions"]}["Stalled"] == "True"
    finished = crds.kubectl(
        "wait", "--for=condition=Finished", "agent/tester", "-n", namespace, "--timeout=10s"
    )
    assert "condition met" in finished


def test_a_pod_that_jumped_to_succeeded_records_running_then_completed(
    crds: Cluster, namespace: str, valkey_url: str, feed: Feed, operators: Operators
) -> None:
    first = operators.start(valkey_url, namespace)
    apply(crds, namespace, manifest("jumper", {f"{SIM}/start-after": "2s", f"{SIM}/run-for": "1s"}))
    pod_name = wait_for(
        lambda: views.agent(crds, namespace, "jumper").get("status", {}).get("podName"),
        30,
        "the Pod to be made",
    )
    assert first.stop() == 0  # nobody watches while the Pod starts and finishes
    wait_for(
        lambda: (
            (pod(crds, namespace, pod_name) or {}).get("status", {}).get("phase") == "Succeeded"
        ),
        30,
        "the Pod to finish unobserved",
    )
    assert phase_of(crds, namespace, "jumper", "Spawning")
    operators.start(valkey_url, namespace)
    done = agree(crds, valkey_url, feed, namespace, "jumper", "Completed")
    history = done["status"]["history"]
    assert [h["phase"] for h in history] == ["Spawning", "Running", "Completed"]
    finished = pod(crds, namespace, pod_name)
    assert finished is not None
    terminated = finished["status"]["containerStatuses"][0]["state"]["terminated"]
    assert history[1]["at"] == terminated["startedAt"].replace("Z", ".000Z")
    assert history[2]["at"] == terminated["finishedAt"].replace("Z", ".000Z")


def test_a_kill_stops_the_pod_and_keeps_the_reason(
    crds: Cluster, namespace: str, valkey_url: str, feed: Feed, operator: Operator
) -> None:
    apply(crds, namespace, manifest("runaway", killGracePeriodSeconds=5))
    running = agree(crds, valkey_url, feed, namespace, "runaway", "Running")
    pod_name = running["status"]["podName"]
    patched = patch_spec(
        crds, namespace, "runaway", desiredPhase="Killed", killReason="runaway spend"
    )
    assert patched.returncode == 0, patched.stderr
    # kubectl waits on the ending itself, whatever it is (here it is a kill).
    crds.kubectl(
        "wait", "--for=condition=Finished", "agent/runaway", "-n", namespace, "--timeout=30s"
    )
    killed = agree(crds, valkey_url, feed, namespace, "runaway", "Killed", timeout=15)
    finished = next(c for c in killed["status"]["conditions"] if c["type"] == "Finished")
    assert (finished["status"], finished["reason"]) == ("True", "Killed")
    assert (killed["status"]["reason"], killed["status"]["message"]) == ("Killed", "runaway spend")
    assert pod(crds, namespace, pod_name) is None
    record = views.record(valkey_url, namespace, "runaway")
    assert record["message"] == "runaway spend"
    error = patch_spec(crds, namespace, "runaway", desiredPhase="Running")
    assert error.returncode != 0
    assert "spec.desiredPhase cannot leave Killed" in error.stderr


def test_deleting_a_running_agent_kills_it_then_lets_it_go(
    crds: Cluster, namespace: str, valkey_url: str, feed: Feed, operator: Operator
) -> None:
    apply(crds, namespace, manifest("doomed"))
    running = agree(crds, valkey_url, feed, namespace, "doomed", "Running")
    uid = running["metadata"]["uid"]
    crds.kubectl("delete", "agent", "doomed", "-n", namespace, "--timeout=30s")
    assert crds.kubectl("get", "agents", "-n", namespace, "-o", "name").strip() == ""

    def deleted_event_seen() -> list[str] | None:
        events = views.stream(valkey_url, uid)
        return events if events and json.loads(events[-1])["type"] == "agent.deleted" else None

    events = [json.loads(e) for e in wait_for(deleted_event_seen, 15, "the agent.deleted event")]
    assert [e["type"] for e in events] == [
        "agent.spawning",
        "agent.running",
        "agent.killed",
        "agent.deleted",
    ]
    assert events[2]["data"]["reason"] == "AgentDeleted"
    wait_for(lambda: views.received(feed, uid) == views.stream(valkey_url, uid), 10, "the channel")
    record = views.record(valkey_url, namespace, "doomed")
    assert (record["deleted"], record["phase"]) == ("1", "Killed")
    assert views.phase_sets(valkey_url, f"{namespace}/doomed") == []


def test_a_pod_deleted_behind_our_back_is_workload_lost(
    crds: Cluster, namespace: str, valkey_url: str, feed: Feed, operator: Operator
) -> None:
    apply(crds, namespace, manifest("orphan"))
    running = agree(crds, valkey_url, feed, namespace, "orphan", "Running")
    crds.kubectl("delete", "pod", running["status"]["podName"], "-n", namespace, "--wait=true")
    lost = agree(crds, valkey_url, feed, namespace, "orphan", "Failed")
    assert lost["status"]["reason"] == "WorkloadLost"
    assert lost["status"]["error"] == "the Pod disappeared while the agent was Running"
    assert pod(crds, namespace, running["status"]["podName"]) is None


def test_the_spawn_timeout_fails_the_agent_and_removes_its_pod(
    crds: Cluster, namespace: str, valkey_url: str, feed: Feed, operator: Operator
) -> None:
    apply(crds, namespace, manifest("stuck", {f"{SIM}/start-after": "10m"}, spawnTimeoutSeconds=2))
    failed = agree(crds, valkey_url, feed, namespace, "stuck", "Failed", timeout=20)
    assert failed["status"]["reason"] == "SpawnTimeout"
    assert failed["status"]["error"] == "not running after the spawn timeout of 2s"
    wait_for(lambda: pod(crds, namespace, failed["status"]["podName"]) is None, 15, "the Pod to go")


def test_the_active_deadline_fails_the_agent_and_removes_its_pod(
    crds: Cluster, namespace: str, valkey_url: str, feed: Feed, operator: Operator
) -> None:
    apply(crds, namespace, manifest("slowpoke", activeDeadlineSeconds=2))
    failed = agree(crds, valkey_url, feed, namespace, "slowpoke", "Failed", timeout=20)
    assert failed["status"]["reason"] == "DeadlineExceeded"
    assert [h["phase"] for h in failed["status"]["history"]] == ["Spawning", "Running", "Failed"]
    wait_for(lambda: pod(crds, namespace, failed["status"]["podName"]) is None, 15, "the Pod to go")


def test_reapplying_changes_nothing_and_a_finished_agent_never_restarts(
    crds: Cluster, namespace: str, valkey_url: str, feed: Feed, operator: Operator
) -> None:
    text = manifest("once", {f"{SIM}/run-for": "1s"})
    apply(crds, namespace, text)
    done = agree(crds, valkey_url, feed, namespace, "once", "Completed")
    assert "unchanged" in apply(crds, namespace, text)
    metrics = f"http://127.0.0.1:{operator.port()}/metrics"
    deleted = 'agent_operator_watch_events_total{kind="pod",type="deleted"}'
    before = metric(get(metrics)[1], deleted)
    crds.kubectl("delete", "pod", done["status"]["podName"], "-n", namespace, "--wait=true")

    def operator_acted_on_the_deletion() -> bool:
        # The watch delivered it (its agent was queued then), and no key waits or is being
        # worked on since: the pass that saw the Pod gone is over.
        text = get(metrics)[1]
        return metric(text, deleted) > before and (
            metric(text, "agent_operator_queue_depth") + metric(text, "agent_operator_queue_busy")
            == 0
        )

    wait_for(operator_acted_on_the_deletion, 30, "the operator to see the Pod's deletion")
    again = views.check(crds, valkey_url, feed, namespace, "once", "Completed")
    assert again["metadata"]["resourceVersion"] == done["metadata"]["resourceVersion"]
    assert crds.kubectl("get", "pods", "-n", namespace, "-o", "name").strip() == ""
    assert len(views.stream(valkey_url, done["metadata"]["uid"])) == 3


def test_a_template_the_api_server_refuses_fails_with_its_sentence(
    crds: Cluster, namespace: str, valkey_url: str, feed: Feed, operator: Operator
) -> None:
    text = yaml.safe_load(manifest("broken"))
    text["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] = "Sometimes"
    apply(crds, namespace, yaml.safe_dump(text))
    failed = agree(crds, valkey_url, feed, namespace, "broken", "Failed")
    assert failed["status"]["reason"] == "InvalidTemplate"
    assert 'Unsupported value: "Sometimes"' in failed["status"]["error"]
    warnings = [
        e for e in events_of(crds, namespace, failed["metadata"]["uid"]) if e[0] == "Warning"
    ]
    assert ("InvalidTemplate", failed["status"]["error"]) in [(r, m) for _, r, m in warnings]
    assert "pods" not in crds.kubectl("get", "pods", "-n", namespace, "-o", "name")


def test_an_agent_released_by_hand_while_no_operator_ran_leaves_no_live_record(
    crds: Cluster, namespace: str, valkey_url: str, feed: Feed, operators: Operators
) -> None:
    """README "An Agent whose operator is gone": the record is closed by the next operator."""
    first = operators.start(valkey_url, namespace)
    apply(crds, namespace, manifest("abandoned"))
    running = agree(crds, valkey_url, feed, namespace, "abandoned", "Running")
    uid = running["metadata"]["uid"]
    assert first.stop() == 0
    crds.kubectl("delete", "agent", "abandoned", "-n", namespace, "--wait=false")
    crds.kubectl(
        "patch",
        "agent",
        "abandoned",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        '{"metadata":{"finalizers":null}}',
    )
    wait_for(
        lambda: crds.kubectl("get", "agents", "-n", namespace, "-o", "name").strip() == "",
        30,
        "the released Agent to go",
    )
    assert views.phase_sets(valkey_url, f"{namespace}/abandoned") == ["Running"]

    operators.start(valkey_url, namespace)
    wait_for(
        lambda: views.phase_sets(valkey_url, f"{namespace}/abandoned") == [],
        30,
        "the next operator to take the gone agent out of the phase index",
    )
    record = views.record(valkey_url, namespace, "abandoned")
    assert (record["deleted"], record["phase"]) == ("1", "Running")
    events = [json.loads(e) for e in views.stream(valkey_url, uid)]
    assert [e["type"] for e in events] == ["agent.spawning", "agent.running", "agent.deleted"]
    assert events[-1]["data"]["from"] == "Running"


def test_a_restart_after_valkey_was_wiped_rebuilds_the_mirror(
    crds: Cluster, namespace: str, valkey_url: str, feed: Feed, operators: Operators
) -> None:
    first = operators.start(valkey_url, namespace)
    apply(crds, namespace, manifest("survivor", {f"{SIM}/run-for": "1s"}))
    agree(crds, valkey_url, feed, namespace, "survivor", "Completed")
    assert first.stop() == 0
    with redis.Redis.from_url(valkey_url) as client:
        client.flushall()
    feed.messages.clear()
    operators.start(valkey_url, namespace)
    done = agree(crds, valkey_url, feed, namespace, "survivor", "Completed")
    assert len(views.stream(valkey_url, done["metadata"]["uid"])) == 3


def test_valkey_down_holds_nothing_back_and_loses_nothing(
    crds: Cluster, namespace: str, operators: Operators, restartable_valkey: RestartableValkey
) -> None:
    url = restartable_valkey.url
    operators.start(url, namespace)
    restartable_valkey.stop()
    apply(crds, namespace, manifest("patient", {f"{SIM}/run-for": "1s"}))
    done = wait_for(lambda: phase_of(crds, namespace, "patient", "Completed"), 30, "Completed")
    uid = done["metadata"]["uid"]
    wait_for(
        lambda: any(r == "ValkeyUnreachable" for _, r, _ in events_of(crds, namespace, uid)),
        30,
        "a Warning that Valkey is unreachable",
    )
    restartable_valkey.start()
    feed = views.Feed(url)
    try:
        wait_for(lambda: len(views.stream(url, uid)) == 3 or None, 60, "the mirror to catch up")
        body = views.agent(crds, namespace, "patient")
        times = [json.loads(e)["time"] for e in views.stream(url, uid)]
        assert times == [h["at"] for h in body["status"]["history"]]

        # Deletion waits for Valkey, and says so.
        restartable_valkey.stop()
        crds.kubectl("delete", "agent", "patient", "-n", namespace, "--wait=false")
        wait_for(
            lambda: any(
                "deletion waits for Valkey" in m for _, _, m in events_of(crds, namespace, uid)
            ),
            60,
            "a Warning that the deletion waits for Valkey",
        )
        assert views.agent(crds, namespace, "patient")["metadata"]["deletionTimestamp"]
        restartable_valkey.start()
        wait_for(
            lambda: crds.kubectl("get", "agents", "-n", namespace, "-o", "name").strip() == "",
            60,
            "the Agent to go once Valkey is back",
        )
        assert json.loads(views.stream(url, uid)[-1])["type"] == "agent.deleted"
    finally:
        feed.close()
