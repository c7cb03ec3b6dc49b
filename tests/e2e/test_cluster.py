"""The local cluster is a real, RBAC-enforcing Kubernetes whose kwok node runs Pods as annotated."""

from __future__ import annotations

import datetime
import json
from typing import Any

from localcluster import cluster as localcluster
from localcluster import versions
from tests.conftest import Cluster
from tests.helpers import wait_for

SIM = "sim.orchestrator.mosaicstack.dev"


def pod_manifest(name: str, annotations: dict[str, str]) -> str:
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "annotations": annotations},
            "spec": {
                "restartPolicy": "Never",
                "containers": [{"name": "agent", "image": "registry.example/agent-worker:1.4"}],
            },
        }
    )


def get_pod(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    pod: dict[str, Any] = json.loads(
        cluster.kubectl("get", "pod", name, "-n", namespace, "-o", "json")
    )
    return pod


def phase_is(cluster: Cluster, namespace: str, name: str, phase: str) -> dict[str, Any] | None:
    pod = get_pod(cluster, namespace, name)
    return pod if pod.get("status", {}).get("phase") == phase else None


def when(stamp: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def test_kubectl_version_shows_the_pinned_server(cluster: Cluster) -> None:
    version = json.loads(cluster.kubectl("version", "-o", "json"))
    assert version["serverVersion"]["gitVersion"] == versions.KUBERNETES_VERSION


def test_the_kwok_node_is_ready(cluster: Cluster) -> None:
    nodes = json.loads(cluster.kubectl("get", "nodes", "-o", "json"))["items"]
    assert [n["metadata"]["name"] for n in nodes] == [localcluster.NODE_NAME]
    ready = {c["type"]: c["status"] for c in nodes[0]["status"]["conditions"]}["Ready"]
    assert ready == "True"


def test_rbac_is_enforced(cluster: Cluster) -> None:
    # The scheduler's own identity holds only its bootstrap role: no reading Secrets.
    assert (
        cluster.kubectl(
            "auth", "can-i", "list", "secrets", "--as=system:kube-scheduler", check=False
        ).strip()
        == "no"
    )
    assert (
        cluster.kubectl(
            "auth", "can-i", "create", "pods", "--as=someone", "-n", "default", check=False
        ).strip()
        == "no"
    )
    assert cluster.kubectl("auth", "can-i", "create", "pods").strip() == "yes"


def test_a_pod_runs_for_its_time_then_succeeds(cluster: Cluster, namespace: str) -> None:
    manifest = pod_manifest("ok", {f"{SIM}/run-for": "2s", f"{SIM}/exit-code": "0"})
    cluster.kubectl("apply", "-n", namespace, "-f", "-", stdin=manifest)
    running = wait_for(lambda: phase_is(cluster, namespace, "ok", "Running"), 30, "phase Running")
    started = running["status"]["containerStatuses"][0]["state"]["running"]["startedAt"]
    done = wait_for(lambda: phase_is(cluster, namespace, "ok", "Succeeded"), 30, "phase Succeeded")
    terminated = done["status"]["containerStatuses"][0]["state"]["terminated"]
    assert terminated["exitCode"] == 0
    assert terminated["reason"] == "Completed"
    assert terminated["startedAt"] == started
    assert when(terminated["finishedAt"]) - when(started) >= datetime.timedelta(seconds=1)


def test_a_pod_with_an_exit_code_fails_with_its_message(cluster: Cluster, namespace: str) -> None:
    manifest = pod_manifest(
        "broken",
        {
            f"{SIM}/run-for": "1s",
            f"{SIM}/exit-code": "3",
            f"{SIM}/termination-message": "tests failed: 4 of 120",
        },
    )
    cluster.kubectl("apply", "-n", namespace, "-f", "-", stdin=manifest)
    failed = wait_for(lambda: phase_is(cluster, namespace, "broken", "Failed"), 30, "phase Failed")
    terminated = failed["status"]["containerStatuses"][0]["state"]["terminated"]
    assert terminated["exitCode"] == 3
    assert terminated["reason"] == "Error"
    assert terminated["message"] == "tests failed: 4 of 120"


def test_start_after_holds_a_pod_pending(cluster: Cluster, namespace: str) -> None:
    manifest = pod_manifest("slow", {f"{SIM}/start-after": "3s"})
    cluster.kubectl("apply", "-n", namespace, "-f", "-", stdin=manifest)
    pending = wait_for(
        lambda: (
            get_pod(cluster, namespace, "slow").get("status", {}).get("podIP")
            and get_pod(cluster, namespace, "slow")
        ),
        30,
        "the node to accept the Pod",
    )
    assert pending["status"]["phase"] == "Pending"
    running = wait_for(lambda: phase_is(cluster, namespace, "slow", "Running"), 30, "phase Running")
    started = running["status"]["containerStatuses"][0]["state"]["running"]["startedAt"]
    accepted = running["status"]["startTime"]
    assert when(started) - when(accepted) >= datetime.timedelta(seconds=2)


def test_without_run_for_a_pod_runs_until_deleted(cluster: Cluster, namespace: str) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", "-", stdin=pod_manifest("forever", {}))
    wait_for(lambda: phase_is(cluster, namespace, "forever", "Running"), 30, "phase Running")
    cluster.kubectl("delete", "pod", "forever", "-n", namespace, "--wait=true", "--timeout=30s")
    assert cluster.kubectl("get", "pods", "-n", namespace, "-o", "name").strip() == ""
