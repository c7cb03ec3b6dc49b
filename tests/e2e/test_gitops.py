"""GitOps: manifests in git are the desired state, and the operator never fights them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import Cluster, Operator
from tests.e2e import views
from tests.helpers import wait_for

pytestmark = pytest.mark.usefixtures("crds")


def test_reapplying_a_finished_folder_changes_nothing_and_shows_no_drift(
    crds: Cluster, namespace: str, valkey_url: str, operator: Operator, tmp_path: Path
) -> None:
    folder = tmp_path / "agents"
    folder.mkdir()
    for i in range(20):
        manifest = {
            "apiVersion": "orchestrator.mosaicstack.dev/v1alpha1",
            "kind": "Agent",
            "metadata": {"name": f"task-{i}", "namespace": namespace, "labels": {"team": "a"}},
            "spec": {
                "taskId": f"TASK-{i}",
                "agentType": "reviewer",
                "template": {
                    "metadata": {"annotations": {"sim.orchestrator.mosaicstack.dev/run-for": "1s"}},
                    "spec": {"containers": [{"name": "agent", "image": "registry.example/a:1"}]},
                },
            },
        }
        (folder / f"task-{i}.yaml").write_text(yaml.safe_dump(manifest))
    crds.kubectl("apply", "--server-side", "-f", str(folder))

    def agents() -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = json.loads(
            crds.kubectl("get", "agents", "-n", namespace, "-o", "json")
        )["items"]
        return items

    def all_completed() -> list[dict[str, Any]] | None:
        found = agents()
        done = [a for a in found if a.get("status", {}).get("phase") == "Completed"]
        return found if len(done) == 20 else None

    before = wait_for(all_completed, 120, "20 completed agents")
    uids = [a["metadata"]["uid"] for a in before]
    wait_for(
        lambda: all(len(views.stream(valkey_url, u)) == 3 for u in uids) or None, 30, "every event"
    )
    pods_before = crds.kubectl(
        "get", "pods", "-n", namespace, "-o", "jsonpath={.items[*].metadata.uid}"
    )
    # Each agent's Event comes after its status write: wait for the last one before the count.
    wait_for(
        lambda: (
            len(
                crds.kubectl(
                    "get",
                    "events",
                    "-n",
                    namespace,
                    "--field-selector",
                    "involvedObject.kind=Agent,reason=Completed",
                    "-o",
                    "name",
                ).split()
            )
            == 20
        ),
        30,
        "the Completed Event of every agent",
    )
    events_before = crds.kubectl("get", "events", "-n", namespace, "-o", "name").split()

    crds.kubectl("apply", "--server-side", "-f", str(folder))
    diff = crds.kubectl_result("diff", "--server-side", "-f", str(folder))
    assert (diff.returncode, diff.stdout) == (0, ""), f"drift: {diff.stdout}{diff.stderr}"

    after = agents()
    version = {a["metadata"]["name"]: a["metadata"]["resourceVersion"] for a in before}
    assert {a["metadata"]["name"]: a["metadata"]["resourceVersion"] for a in after} == version
    assert (
        crds.kubectl("get", "pods", "-n", namespace, "-o", "jsonpath={.items[*].metadata.uid}")
        == pods_before
    )
    assert crds.kubectl("get", "events", "-n", namespace, "-o", "name").split() == events_before
    assert all(len(views.stream(valkey_url, u)) == 3 for u in uids), "no new event in Valkey"
    for agent in after:
        meta = agent["metadata"]
        assert "annotations" not in meta, "the operator writes no annotations"
        assert meta["labels"] == {"team": "a"}
        assert agent["spec"]["desiredPhase"] == "Running"
