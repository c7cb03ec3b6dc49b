"""MAX_CONCURRENT_AGENTS: a bounded number of agents run at once, oldest first."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
import yaml

from tests.conftest import Cluster, Operators
from tests.e2e import views
from tests.helpers import wait_for

pytestmark = pytest.mark.usefixtures("crds")


@dataclass
class PodWatch:
    """Every Pod event of a namespace, in the API server's order, from `kubectl get -w`."""

    phases: dict[str, str] = field(default_factory=dict)
    finished: set[str] = field(default_factory=set)
    # Each Pod as it was created, with how many Pods had finished (freed a slot) before it.
    created: list[tuple[str, int]] = field(default_factory=list)
    most_live: int = 0

    def seen(self, event: dict[str, object]) -> None:
        pod = event["object"]
        assert isinstance(pod, dict)
        name = pod["metadata"]["name"]
        if event["type"] == "DELETED":
            if self.phases.pop(name, None) is not None:
                self.finished.add(name)  # gone, finished or not: its slot is free
            return
        if name not in self.phases and event["type"] == "ADDED":
            self.created.append((name, len(self.finished)))
        self.phases[name] = pod.get("status", {}).get("phase", "Pending")
        if self.phases[name] in ("Succeeded", "Failed"):
            self.finished.add(name)
        live = sum(p in ("Pending", "Running") for p in self.phases.values())
        self.most_live = max(self.most_live, live)


@pytest.fixture
def pod_watch(cluster: Cluster, namespace: str) -> Iterator[PodWatch]:
    watch = PodWatch()
    with views.kubectl_watch(cluster, watch.seen, "pods", "-n", namespace):
        yield watch


def agents_yaml(count: int, run_for: str = "2s") -> str:
    return yaml.safe_dump_all(
        [
            {
                "apiVersion": "orchestrator.mosaicstack.dev/v1alpha1",
                "kind": "Agent",
                "metadata": {"name": f"agent-{i:02d}"},
                "spec": {
                    "taskId": f"TASK-{i}",
                    "template": {
                        "metadata": {
                            "annotations": {"sim.orchestrator.mosaicstack.dev/run-for": run_for}
                        },
                        "spec": {
                            "containers": [{"name": "agent", "image": "registry.example/a:1"}]
                        },
                    },
                },
            }
            for i in range(count)
        ]
    )


def test_three_at_a_time_oldest_first_and_a_killed_queued_agent_never_starts(
    crds: Cluster, namespace: str, valkey_url: str, operators: Operators, pod_watch: PodWatch
) -> None:
    operators.start(valkey_url, namespace, MAX_CONCURRENT_AGENTS="3")
    crds.kubectl("apply", "-n", namespace, "-f", "-", stdin=agents_yaml(10))
    queued = wait_for(
        lambda: (
            (a := views.agent(crds, namespace, "agent-09")).get("status", {}).get("reason")
            == "Queued"
            and a
        ),
        30,
        "the last agent to be queued",
    )
    assert queued["status"]["phase"] == "Spawning"
    assert queued["status"]["message"] == (
        "waiting for a slot: 3 agents may run at once (MAX_CONCURRENT_AGENTS)"
    )
    crds.kubectl(
        "patch",
        "agent",
        "agent-09",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        '{"spec":{"desiredPhase":"Killed","killReason":"not needed"}}',
    )

    def phases() -> dict[str, str]:
        items = json.loads(crds.kubectl("get", "agents", "-n", namespace, "-o", "json"))["items"]
        return {i["metadata"]["name"]: i.get("status", {}).get("phase", "") for i in items}

    expected = {f"agent-{i:02d}": "Completed" for i in range(9)} | {"agent-09": "Killed"}
    wait_for(lambda: phases() == expected or None, 120, "nine agents completed and one killed")
    assert pod_watch.most_live == 3, (
        f"at most 3 Pods at once, and the limit was used: {pod_watch.most_live}"
    )
    started = [(name.rsplit("-", 1)[0], freed) for name, freed in pod_watch.created]
    assert sorted(agent for agent, _ in started) == [f"agent-{i:02d}" for i in range(9)]
    # Oldest first: agent-N may start only once N - 2 slots have been freed, so the first three
    # start at once and each later one waits its turn. Slots freed together start their agents
    # together, in any order (three finishing within a few milliseconds is common here).
    jumped = [(agent, freed) for agent, freed in started if int(agent[-2:]) >= 3 + freed]
    assert not jumped, f"started before an older agent had its slot (agent, slots freed): {jumped}"
    killed = views.agent(crds, namespace, "agent-09")
    assert "podName" not in killed["status"]
    assert [h["phase"] for h in killed["status"]["history"]] == ["Spawning", "Killed"]
