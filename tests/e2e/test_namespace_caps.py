"""Per-namespace caps: a Namespace's annotation limits its agents beside MAX_CONCURRENT_AGENTS,
and namespaces share the operator's slots without starving each other."""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field

import pytest

from controller import admission
from tests.conftest import Cluster, Operators, fresh_namespace
from tests.e2e import views
from tests.e2e.test_concurrency import agents_yaml
from tests.e2e.test_plugin import agents as kubectl_agents
from tests.helpers import wait_for

pytestmark = pytest.mark.usefixtures("crds")


@dataclass
class LivePods:
    """Live Pods per namespace over time, from one `kubectl get pods -A -w` of the namespaces."""

    namespaces: tuple[str, ...]
    phases: dict[tuple[str, str], str] = field(default_factory=dict)
    most: Counter[str] = field(default_factory=Counter)
    most_in_all: int = 0
    # The most Pods both namespaces had live at one moment: min over the two, maxed over time.
    most_shared: int = 0

    def seen(self, event: dict[str, object]) -> None:
        pod = event["object"]
        assert isinstance(pod, dict)
        where = (pod["metadata"]["namespace"], pod["metadata"]["name"])
        if where[0] not in self.namespaces:
            return
        if event["type"] == "DELETED":
            self.phases.pop(where, None)
        else:
            self.phases[where] = pod.get("status", {}).get("phase", "Pending")
        live = Counter(ns for (ns, _), p in self.phases.items() if p in ("Pending", "Running"))
        for ns in self.namespaces:
            self.most[ns] = max(self.most[ns], live[ns])
        self.most_in_all = max(self.most_in_all, sum(live.values()))
        self.most_shared = max(self.most_shared, min(live[ns] for ns in self.namespaces))


@pytest.fixture
def two_namespaces(cluster: Cluster) -> Iterator[tuple[str, str]]:
    suffix = uuid.uuid4().hex[:8]
    with ExitStack() as stack:
        first = stack.enter_context(fresh_namespace(cluster, f"cap-a-{suffix}"))
        second = stack.enter_context(fresh_namespace(cluster, f"cap-b-{suffix}"))
        yield first, second


@pytest.fixture
def live_pods(cluster: Cluster, two_namespaces: tuple[str, str]) -> Iterator[LivePods]:
    watch = LivePods(two_namespaces)
    with views.kubectl_watch(cluster, watch.seen, "pods", "-A"):
        yield watch


def annotate(cluster: Cluster, namespace: str, value: str) -> None:
    cluster.kubectl(
        "annotate", "namespace", namespace, f"{admission.ANNOTATION}={value}", "--overwrite"
    )


def phases(cluster: Cluster, namespace: str) -> list[str]:
    items = json.loads(cluster.kubectl("get", "agents", "-n", namespace, "-o", "json"))["items"]
    return [i.get("status", {}).get("phase", "") for i in items]


def test_caps_of_2_and_3_under_a_global_4_share_the_slots(
    crds: Cluster,
    two_namespaces: tuple[str, str],
    valkey_url: str,
    operators: Operators,
    live_pods: LivePods,
) -> None:
    small, large = two_namespaces
    annotate(crds, small, "2")
    annotate(crds, large, "3")
    operators.start(valkey_url, f"{small},{large}", MAX_CONCURRENT_AGENTS="4")
    # The small namespace first, until it holds its two slots: then the large one can take
    # only the other two, and its queued agents are held by the operator's limit, not its cap
    # (were the large one first, it would rightly hold three and its cap would be the reason).
    # Lives of 4 s keep those slots held while the large namespace's agents are queued.
    crds.kubectl("apply", "-n", small, "-f", "-", stdin=agents_yaml(10, run_for="4s"))
    wait_for(lambda: live_pods.most[small] == 2 or None, 30, f"two Pods in {small}")
    crds.kubectl("apply", "-n", large, "-f", "-", stdin=agents_yaml(10, run_for="4s"))

    def queued(namespace: str) -> dict[str, object] | None:
        agent = views.agent(crds, namespace, "agent-09")
        return agent if agent.get("status", {}).get("reason") == "Queued" else None

    held_by_cap = wait_for(lambda: queued(small), 30, f"agent-09 of {small} to be queued")
    assert held_by_cap["status"]["message"] == (  # type: ignore[index]
        f"waiting for a slot: namespace {small} allows 2 agents at once ({admission.ANNOTATION})"
    )
    shown = kubectl_agents(crds, valkey_url, "status", "agent-09", "-n", small).stdout
    assert f"agent/agent-09: queued, waiting for a slot: namespace {small} allows 2" in shown
    held_by_operator = wait_for(lambda: queued(large), 30, f"agent-09 of {large} to be queued")
    assert held_by_operator["status"]["message"] == (  # type: ignore[index]
        "waiting for a slot: 4 agents may run at once (MAX_CONCURRENT_AGENTS)"
    )

    for namespace in two_namespaces:
        wait_for(
            lambda ns=namespace: phases(crds, ns) == ["Completed"] * 10 or None,  # type: ignore[misc]
            180,
            f"the ten agents of {namespace} to complete",
        )
    assert live_pods.most[small] == 2, live_pods.most
    assert live_pods.most[large] <= 3, live_pods.most
    assert live_pods.most_in_all == 4, live_pods.most_in_all
    # Fair share: both namespaces ran two at once (neither waited while the other held the
    # operator's slots).
    assert live_pods.most_shared == 2, live_pods.most_shared


def test_a_bad_annotation_is_a_warning_on_the_namespace(
    crds: Cluster, namespace: str, valkey_url: str, operators: Operators
) -> None:
    operators.start(valkey_url, namespace)
    annotate(crds, namespace, "lots")

    def warning() -> str | None:
        listed = crds.kubectl(
            "get",
            "events",
            "-n",
            "default",
            "--field-selector",
            f"involvedObject.kind=Namespace,involvedObject.name={namespace}",
            "-o",
            "json",
        )
        found = [e for e in json.loads(listed)["items"] if e["reason"] == "InvalidAnnotation"]
        return found[0]["message"] if found else None

    message = wait_for(warning, 30, "a Warning on the Namespace")
    assert message.startswith(f"{admission.ANNOTATION}='lots' is not a whole number")
