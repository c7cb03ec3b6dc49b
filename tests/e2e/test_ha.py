"""High availability, probes and metrics, on the real cluster, as deploy/'s ServiceAccount.

- The Lease: one candidate holds it, another takes it only once it has not been
  renewed for its duration (on the taker's own clock), or at once when released.
- Two operator processes: the standby takes over from a SIGKILLed leader in the
  middle of a burst, and every agent's stream is still exactly its history.
- ``/healthz``, ``/readyz`` (false while Valkey is down, or the CRDs missing) and
  ``/metrics`` of a running operator.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator

import pytest
import redis

from controller import kube, leader, mirror, probes
from localcluster import procs
from tests import identity
from tests.conftest import Cluster, Operator, Operators, RestartableValkey
from tests.e2e import views
from tests.e2e.test_operator import SIM, agree, manifest
from tests.e2e.views import Feed
from tests.helpers import get, metric, wait_for

pytestmark = pytest.mark.usefixtures("crds")
LEASE = "agent-lifecycle-operator"  # the one name deploy/'s Role lets the operator update


@pytest.fixture
def lease_namespace(crds: Cluster, operator_identity: identity.Identity) -> Iterator[str]:
    """The identity's namespace, where deploy/'s Role grants the Lease; no Lease left over."""
    crds.kubectl("delete", "lease", LEASE, "-n", operator_identity.namespace, "--ignore-not-found")
    yield operator_identity.namespace
    crds.kubectl("delete", "lease", LEASE, "-n", operator_identity.namespace, "--ignore-not-found")


def holder(cluster: Cluster, namespace: str) -> str:
    result = cluster.kubectl_result(
        "get", "lease", LEASE, "-n", namespace, "-o", "jsonpath={.spec.holderIdentity}"
    )
    return result.stdout if result.returncode == 0 else ""


def test_a_lease_changes_hands_only_when_its_holder_stops_renewing_or_lets_go(
    operator_identity: identity.Identity, lease_namespace: str
) -> None:
    async def scenario() -> None:
        api = kube.Kube(kube.load_config(str(operator_identity.kubeconfig)))
        b_clock = [0.0]
        a = leader.Lease(api, lease_namespace, LEASE, "a", duration=15, deadline=10, retry=0.05)
        b = leader.Lease(
            api, lease_namespace, LEASE, "b", duration=15, monotonic=lambda: b_clock[0]
        )
        try:
            assert await a.try_acquire_or_renew()
            assert not await b.try_acquire_or_renew()  # held
            b_clock[0] += 14.9
            assert not await b.try_acquire_or_renew()  # not renewed for 14.9 s: still held
            assert await a.try_acquire_or_renew()  # renewed
            assert not await b.try_acquire_or_renew()  # b sees it: b's clock starts again
            b_clock[0] += 14.9
            assert not await b.try_acquire_or_renew()
            b_clock[0] += 0.2  # 15.1 s since b saw the last renewal
            assert await b.try_acquire_or_renew()
            record = await api.get_lease(b.namespace, b.name)
            assert record is not None
            assert (record["spec"]["holderIdentity"], record["spec"]["leaseTransitions"]) == (
                "b",
                1,
            )
            with pytest.raises(leader.LostLease, match="held by b now"):
                await a.hold()  # a must stop acting
            await b.release()
            assert await a.try_acquire_or_renew()  # let go: taken at once
        finally:
            await api.close()

    asyncio.run(scenario())


def test_a_standby_takes_over_a_burst_from_a_killed_leader_losing_and_repeating_nothing(
    crds: Cluster,
    operators: Operators,
    namespace: str,
    valkey_url: str,
    feed: Feed,
    lease_namespace: str,
) -> None:
    def candidate(name: str, ready: bool) -> Operator:
        return operators.start(
            valkey_url,
            namespace,
            ready=ready,
            POD_NAME=name,
            LEADER_ELECTION_NAMESPACE=lease_namespace,
            LEASE_DURATION_SECONDS="3",
        )

    first = candidate("op-a", ready=True)
    second = candidate("op-b", ready=False)
    second.wait_for_log("standby: waiting for lease")
    assert holder(crds, lease_namespace) == "op-a"

    names = [f"burst-{i:02d}" for i in range(20)]
    docs = [
        manifest(n, {f"{SIM}/start-after": f"{i % 4}s", f"{SIM}/run-for": "4s"})
        for i, n in enumerate(names)
    ]
    crds.kubectl("apply", "-n", namespace, "-f", "-", stdin="---\n".join(docs))
    wait_for(
        lambda: "Running" in crds.kubectl("get", "agents", "-n", namespace, "--no-headers"),
        30,
        "the burst to be under way",
    )
    killed_at = time.monotonic()
    first.process.kill()  # SIGKILL: no clean-up, no release of the Lease
    first.process.wait()
    wait_for(lambda: holder(crds, lease_namespace) == "op-b", 30, "op-b to hold the lease")
    lease_taken = time.monotonic() - killed_at
    second.wait_for_log("ready; watching agents")
    acting = time.monotonic() - killed_at
    print(f"\ntakeover after SIGKILL: lease held by the standby in {lease_taken:.1f} s, ", end="")
    print(f"acting in {acting:.1f} s (lease duration 3 s)")

    # Status, Valkey, stream and subscriber: complete. Kubernetes Events are best-effort: the
    # Event of a transition the leader was recording as it was killed may be missing.
    for name in names:
        agree(crds, valkey_url, feed, namespace, name, "Completed", timeout=60, describe=False)

    assert second.stop() == 0  # SIGTERM: a clean stop hands the Lease back
    assert holder(crds, lease_namespace) == ""


def test_a_leader_whose_lease_is_taken_stops_acting_and_exits_1(
    crds: Cluster, operators: Operators, namespace: str, valkey_url: str, lease_namespace: str
) -> None:
    acting = operators.start(
        valkey_url,
        namespace,
        POD_NAME="op-a",
        LEADER_ELECTION_NAMESPACE=lease_namespace,
        LEASE_DURATION_SECONDS="3",
    )
    taken = '{"spec": {"holderIdentity": "op-elsewhere"}}'
    crds.kubectl("patch", "lease", LEASE, "-n", lease_namespace, "--type=merge", "-p", taken)
    assert acting.process.wait(timeout=30) == 1
    assert "stopping at once: lease" in acting.log()
    assert "is held by op-elsewhere now" in acting.log()


def test_probes_say_live_and_ready_and_metrics_count_what_happened(
    crds: Cluster,
    operators: Operators,
    namespace: str,
    restartable_valkey: RestartableValkey,
    feed: Feed,
) -> None:
    port = procs.free_port()
    base = f"http://127.0.0.1:{port}"
    operators.start(restartable_valkey.url, namespace, HTTP_PORT=str(port))
    assert get(f"{base}/healthz") == (200, "ok\n")
    assert get(f"{base}/readyz") == (200, "ready\n")

    crds.kubectl(
        "apply", "-n", namespace, "-f", "-", stdin=manifest("counted", {f"{SIM}/run-for": "1s"})
    )
    wait_for(
        lambda: (
            views.agent(crds, namespace, "counted").get("status", {}).get("phase") == "Completed"
        ),
        30,
        "counted to complete",
    )

    mirrored = (
        'agent_operator_transition_latency_seconds_count{stage="mirrored",to_phase="Completed"}'
    )

    def completed_in_metrics() -> str | None:
        # The mirror follows the status in its own time: wait for its count too.
        text = get(f"{base}/metrics")[1]
        return text if 'phase="Completed"' in text and metric(text, mirrored) else None

    text = wait_for(completed_in_metrics, 10, "the metrics to show the Completed agent mirrored")
    assert metric(text, 'agent_operator_agents{phase="Completed"}') == 1
    for before, after in (
        ("Pending", "Spawning"),
        ("Spawning", "Running"),
        ("Running", "Completed"),
    ):
        name = f'agent_operator_transitions_total{{from_phase="{before}",to_phase="{after}"}}'
        assert metric(text, name) == 1, name
    for stage in ("status", "mirrored"):
        for phase in ("Spawning", "Running", "Completed"):
            labels = f'{{stage="{stage}",to_phase="{phase}"}}'
            assert metric(text, f"agent_operator_transition_latency_seconds_count{labels}") == 1
    assert metric(text, "agent_operator_mirror_lag_seconds_count") == 3
    assert metric(text, "agent_operator_mirror_errors_total") == 0
    assert metric(text, "agent_operator_leader") == 1

    restartable_valkey.stop()

    def not_ready() -> str | None:
        status, body = get(f"{base}/readyz")
        return body if status == 503 else None

    body = wait_for(not_ready, 30, "readyz to say 503")
    assert "Valkey is unreachable" in body
    assert get(f"{base}/healthz")[0] == 200  # alive all the same: nothing to restart for
    restartable_valkey.start()
    wait_for(lambda: get(f"{base}/readyz") == (200, "ready\n"), 30, "readyz to recover")


def test_readiness_names_missing_crds(
    crds: Cluster, operator_identity: identity.Identity, valkey_url: str
) -> None:
    async def scenario() -> list[str]:
        api = kube.Kube(kube.load_config(str(operator_identity.kubeconfig)))
        conn = redis.asyncio.Redis.from_url(valkey_url)
        try:
            valkey = mirror.Mirror(conn)
            ready = await probes.problems(api, valkey)
            missing = await probes.problems(api, valkey, "nothing.example.com/v1")
        finally:
            await api.close()
            await conn.aclose()
        assert ready == []
        return missing

    assert asyncio.run(scenario()) == [
        "CRDs not installed: agents, killswitches (nothing.example.com/v1)"
    ]
    assert json.loads(crds.kubectl("get", "--raw", "/version"))["gitVersion"]
