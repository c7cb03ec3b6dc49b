"""The Agent API as the API server enforces it, driven through kubectl."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
import yaml

from controller import kube
from tests import identity
from tests.conftest import Cluster


def agent(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "orchestrator.mosaicstack.dev/v1alpha1",
        "kind": "Agent",
        "metadata": {"name": name},
        "spec": {
            "taskId": "TASK-1234",
            "template": {
                "spec": {"containers": [{"name": "agent", "image": "registry.example/a:1"}]}
            },
            **spec,
        },
    }


def apply(cluster: Cluster, namespace: str, manifest: dict[str, Any]) -> str:
    return cluster.kubectl("apply", "-n", namespace, "-f", "-", stdin=yaml.safe_dump(manifest))


def refused(cluster: Cluster, namespace: str, *args: str, stdin: str | None = None) -> str:
    """Run kubectl expecting the API server to refuse; return its error."""
    result = cluster.kubectl_result(*args, "-n", namespace, stdin=stdin)
    assert result.returncode != 0, f"kubectl {' '.join(args)} was accepted: {result.stdout}"
    return result.stderr


def set_status(cluster: Cluster, namespace: str, name: str, **status: Any) -> None:
    cluster.kubectl(
        "patch",
        "agent",
        name,
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": status}),
    )


def refused_status(cluster: Cluster, namespace: str, name: str, **status: Any) -> str:
    return refused(
        cluster,
        namespace,
        "patch",
        "agent",
        name,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": status}),
    )


def test_a_valid_agent_is_accepted_with_defaults_and_columns(crds: Cluster, namespace: str) -> None:
    apply(crds, namespace, agent("fix-login-bug", agentType="reviewer"))
    stored = json.loads(crds.kubectl("get", "ag", "fix-login-bug", "-n", namespace, "-o", "json"))
    assert stored["spec"]["desiredPhase"] == "Running"
    assert stored["spec"]["killGracePeriodSeconds"] == 10
    assert stored["spec"]["spawnTimeoutSeconds"] == 300
    set_status(crds, namespace, "fix-login-bug", phase="Spawning", seq=1)
    set_status(
        crds,
        namespace,
        "fix-login-bug",
        phase="Running",
        seq=2,
        startedAt="2026-01-01T10:00:01.123Z",
    )
    table = crds.kubectl("get", "agents", "-n", namespace).splitlines()
    assert table[0].split() == ["NAME", "PHASE", "TASK", "TYPE", "STARTED", "AGE"]
    assert table[1].split()[:4] == ["fix-login-bug", "Running", "TASK-1234", "reviewer"]


def test_re_applying_the_same_manifest_changes_nothing(crds: Cluster, namespace: str) -> None:
    manifest = agent("steady")
    apply(crds, namespace, manifest)
    before = json.loads(crds.kubectl("get", "agent", "steady", "-n", namespace, "-o", "json"))
    assert "unchanged" in apply(crds, namespace, manifest)
    after = json.loads(crds.kubectl("get", "agent", "steady", "-n", namespace, "-o", "json"))
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]


def test_task_id_cannot_change(crds: Cluster, namespace: str) -> None:
    apply(crds, namespace, agent("a1"))
    error = refused(
        crds, namespace, "patch", "agent", "a1", "--type=merge", "-p", '{"spec":{"taskId":"OTHER"}}'
    )
    assert "spec.taskId is immutable: an agent works on one task for its whole life" in error


def test_desired_phase_never_leaves_killed(crds: Cluster, namespace: str) -> None:
    apply(crds, namespace, agent("a2", desiredPhase="Killed", killReason="runaway spend"))
    error = refused(crds, namespace, "apply", "-f", "-", stdin=yaml.safe_dump(agent("a2")))
    assert "spec.desiredPhase cannot leave Killed: a killed agent is never revived" in error


def test_the_first_phase_is_spawning(crds: Cluster, namespace: str) -> None:
    apply(crds, namespace, agent("a3"))
    assert "an agent's first phase is Spawning" in refused_status(
        crds, namespace, "a3", phase="Running", seq=1
    )


def test_status_phase_moves_only_along_the_lifecycle(crds: Cluster, namespace: str) -> None:
    apply(crds, namespace, agent("a4"))
    set_status(crds, namespace, "a4", phase="Spawning", seq=1)
    error = refused_status(crds, namespace, "a4", phase="Completed", seq=2)
    assert (
        "status.phase may only move along the lifecycle: Spawning to Running, Failed, Killed"
        in error
    )


def test_a_terminal_phase_never_changes(crds: Cluster, namespace: str) -> None:
    apply(crds, namespace, agent("a5"))
    set_status(crds, namespace, "a5", phase="Spawning", seq=1)
    set_status(crds, namespace, "a5", phase="Killed", seq=2)
    error = refused_status(crds, namespace, "a5", phase="Running", seq=3)
    assert "status.phase is terminal (Completed, Failed or Killed) and never changes" in error


def test_status_phase_cannot_be_removed(crds: Cluster, namespace: str) -> None:
    apply(crds, namespace, agent("a6"))
    set_status(crds, namespace, "a6", phase="Spawning", seq=1)
    assert "status.phase cannot be removed once it is set" in refused_status(
        crds, namespace, "a6", phase=None
    )


def test_the_whole_status_cannot_be_removed_to_start_a_life_over(
    crds: Cluster, namespace: str
) -> None:
    apply(crds, namespace, agent("a6b"))
    set_status(crds, namespace, "a6b", phase="Spawning", seq=1)
    set_status(crds, namespace, "a6b", phase="Killed", seq=2)
    error = refused(
        crds,
        namespace,
        "patch",
        "agent",
        "a6b",
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": None}),
    )
    assert "status cannot be removed once status.phase is set" in error
    status = json.loads(crds.kubectl("get", "agent", "a6b", "-n", namespace, "-o", "json"))[
        "status"
    ]
    assert (status["phase"], status["seq"]) == ("Killed", 2)


def test_seq_never_decreases(crds: Cluster, namespace: str) -> None:
    apply(crds, namespace, agent("a7"))
    set_status(crds, namespace, "a7", phase="Spawning", seq=1)
    set_status(crds, namespace, "a7", phase="Running", seq=2)
    assert "status.seq counts transitions: it never decreases" in refused_status(
        crds, namespace, "a7", seq=1
    )


BAD_MANIFESTS = {
    "a missing taskId": (
        {"taskId": None},
        "spec.taskId: Required value",
    ),
    "a taskId that is a number": (
        {"taskId": 1234},
        'spec.taskId: Invalid value: "integer": spec.taskId in body must be of type string',
    ),
    "an unknown desired phase": (
        {"desiredPhase": "Paused"},
        'spec.desiredPhase: Unsupported value: "Paused": supported values: "Running", "Killed"',
    ),
    "an agent type that is not a DNS label": (
        {"agentType": "Code_Reviewer"},
        "spec.agentType in body should match '^[a-z0-9]([-a-z0-9]*[a-z0-9])?$'",
    ),
    "an over-long kill reason": (
        {"killReason": "x" * 1025},
        "spec.killReason: Too long: may not be more than 1024 bytes",
    ),
    "a negative grace period": (
        {"killGracePeriodSeconds": -1},
        "spec.killGracePeriodSeconds in body should be greater than or equal to 0",
    ),
    "a negative spawn timeout": (
        {"spawnTimeoutSeconds": -5},
        "spec.spawnTimeoutSeconds in body should be greater than or equal to 1",
    ),
    "a zero active deadline": (
        {"activeDeadlineSeconds": 0},
        "spec.activeDeadlineSeconds in body should be greater than or equal to 1",
    ),
    "a negative TTL after finishing": (
        {"ttlSecondsAfterFinished": -1},
        "spec.ttlSecondsAfterFinished in body should be greater than or equal to 0",
    ),
    "a template without containers": (
        {"template": {"spec": {"containers": []}}},
        "spec.template.spec.containers: Invalid value: 0: "
        "spec.template.spec.containers in body should have at least 1 items",
    ),
    "a container without an image": (
        {"template": {"spec": {"containers": [{"name": "agent"}]}}},
        "spec.template.spec.containers[0].image: Required value",
    ),
}


@pytest.mark.parametrize(("change", "message"), BAD_MANIFESTS.values(), ids=BAD_MANIFESTS.keys())
def test_a_bad_manifest_is_refused_with_a_specific_message(
    crds: Cluster, namespace: str, change: dict[str, Any], message: str
) -> None:
    manifest = agent("bad")
    manifest["spec"] = {k: v for k, v in {**manifest["spec"], **change}.items() if v is not None}
    error = refused(crds, namespace, "apply", "-f", "-", stdin=yaml.safe_dump(manifest))
    assert message in error
    assert crds.kubectl("get", "agents", "-n", namespace, "-o", "name").strip() == ""


def test_an_unknown_status_phase_is_refused(crds: Cluster, namespace: str) -> None:
    apply(crds, namespace, agent("a8"))
    error = refused_status(crds, namespace, "a8", phase="Paused", seq=1)
    assert 'status.phase: Unsupported value: "Paused"' in error


def test_the_operator_lists_every_agent_name_a_page_at_a_time(
    crds: Cluster,
    namespace: str,
    operator_identity: identity.Identity,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for i in range(5):
        apply(crds, namespace, agent(f"paged-{i}"))
    monkeypatch.setattr(kube, "LIST_PAGE", 2)  # three pages

    async def listing() -> tuple[set[str], str]:
        api = kube.Kube(kube.load_config(str(operator_identity.kubeconfig)))
        try:
            return await api.agent_keys(namespace)
        finally:
            await api.close()

    keys, as_of = asyncio.run(listing())
    assert keys == {f"{namespace}/paged-{i}" for i in range(5)}
    items = json.loads(crds.kubectl("get", "agents", "-n", namespace, "-o", "json"))["items"]
    assert int(as_of) >= max(int(i["metadata"]["resourceVersion"]) for i in items)
