"""The operator on Valkey as platforms run it: a Cluster (3 primaries, 3 replicas) and Sentinel.

In each topology an operator takes agents to Completed and a killswitch kills
others; the stream and a live subscriber then agree on every event, by id, and
every record equals its agent's status.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.cluster
import redis.sentinel
import yaml

from localcluster import topologies
from tests.conftest import KUBECTL, Cluster, Operators
from tests.e2e import views
from tests.e2e.test_killswitch import agents_yaml, phases, switch_yaml
from tests.e2e.test_operator import SIM
from tests.helpers import get, wait_for

pytestmark = pytest.mark.usefixtures("crds")
PREFIX = "{orchestrator}:"
BIN = str(Path(sys.executable).parent)
RUNNING3 = ["Running"] * 3
KILLED3 = ["Killed"] * 3


class Topology:
    """How an operator reaches one topology, and a client of it for the test's own reads."""

    def __init__(self, name: str, settings: dict[str, str], client: Any) -> None:
        self.name = name
        self.settings = settings
        self.client = client

    def empty(self) -> None:
        """Remove what earlier tests left under the prefix."""
        for key in self.client.scan_iter(match=f"{PREFIX}*"):
            self.client.delete(key)

    def stream(self) -> list[dict[str, Any]]:
        entries = self.client.xrange(f"{PREFIX}events:stream")
        return [json.loads(fields[b"event"]) for _, fields in entries]

    def record(self, namespace: str, name: str) -> dict[str, str]:
        raw = self.client.hgetall(f"{PREFIX}agent:{namespace}/{name}")
        return {k.decode(): v.decode() for k, v in raw.items()}

    def phase_members(self, phase: str) -> set[str]:
        return {m.decode() for m in self.client.smembers(f"{PREFIX}phase:{phase}")}


@pytest.fixture(scope="module", params=["cluster", "sentinel"])
def topology(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Topology]:
    state = Path(tmp_path_factory.mktemp(request.param))
    if request.param == "cluster":
        valkey_cluster = topologies.start_cluster(state, primaries=3, replicas=1)
        client = redis.cluster.RedisCluster.from_url(valkey_cluster.seed_url)
        try:
            yield Topology(
                "cluster",
                {
                    "VALKEY_CLUSTER": "true",
                    "VALKEY_URL": valkey_cluster.seed_url,
                    "VALKEY_KEY_PREFIX": PREFIX,
                },
                client,
            )
        finally:
            client.close()
            valkey_cluster.stop()
    else:
        sentinel = topologies.start_sentinel(state, replicas=1, sentinels=3)
        sentinels: Any = redis.sentinel.Sentinel(sentinel.sentinel_addresses)  # type: ignore[no-untyped-call]
        primary = sentinels.master_for(sentinel.master_name)
        try:
            yield Topology(
                "sentinel",
                {
                    "VALKEY_SENTINELS": sentinel.sentinels_arg,
                    "VALKEY_SENTINEL_MASTER": sentinel.master_name,
                    "VALKEY_URL": "redis://127.0.0.1:1/0",  # scheme, credentials, db only
                    "VALKEY_KEY_PREFIX": PREFIX,
                },
                primary,
            )
        finally:
            primary.close()
            sentinel.stop()


def test_agents_complete_and_a_killswitch_kills_in_each_topology(
    cluster: Cluster,
    namespace: str,
    operators: Operators,
    topology: Topology,
    switch_name: str,
) -> None:
    topology.empty()
    subscriber = views.Feed(client=topology.client, channel=f"{PREFIX}events")
    try:
        operators.start(
            topology.settings["VALKEY_URL"], namespace, True, False, **topology.settings
        )
        labels = {"fleet": switch_name}
        done = yaml_with_annotations(agents_yaml(3, "done", {"fleet": "other"}))
        cluster.kubectl("apply", "-n", namespace, "-f", "-", stdin=done)
        cluster.kubectl("apply", "-n", namespace, "-f", "-", stdin=agents_yaml(3, "stop", labels))
        wait_for(
            lambda: (
                sorted(map(str, phases(cluster, namespace).values()))
                == [*["Completed"] * 3, *RUNNING3]
                or None
            ),
            120,
            "three agents completed and three running",
        )
        cluster.kubectl("apply", "-f", "-", stdin=switch_yaml(switch_name, True, labels))
        wait_for(
            lambda: (
                sorted(map(str, phases(cluster, namespace).values()))
                == [*["Completed"] * 3, *KILLED3]
                or None
            ),
            60,
            "the switch to kill three",
        )

        def mirrored() -> bool:
            for name in [f"done-{i}" for i in range(3)] + [f"stop-{i}" for i in range(3)]:
                body = views.agent(cluster, namespace, name)
                record = topology.record(namespace, name)
                if (record.get("uid"), record.get("seq"), record.get("phase")) != (
                    body["metadata"]["uid"],
                    str(body["status"]["seq"]),
                    body["status"]["phase"],
                ):
                    return False
            return True

        wait_for(mirrored, 60, f"every record to equal its status ({topology.name})")
        stream = topology.stream()
        ids = [e["id"] for e in stream]
        assert len(ids) == len(set(ids)), "no event twice in the stream"
        assert sum(e["type"] == "agent.completed" for e in stream) == 3
        assert sum(e["type"] == "agent.killed" for e in stream) == 3
        assert [e["type"] for e in stream if e["type"].startswith("killswitch.")] == [
            "killswitch.engaged"
        ]
        wait_for(
            lambda: sorted(json.loads(m)["id"] for m in subscriber.messages) == sorted(ids) or None,
            30,
            "the subscriber to have heard exactly the stream's events",
        )
        killed = {f"{namespace}/stop-{i}" for i in range(3)}
        assert topology.phase_members("Killed") >= killed
    finally:
        subscriber.close()


def yaml_with_annotations(text: str) -> str:
    """The agents of ``agents_yaml``, each finishing one second after it starts."""
    docs = list(yaml.safe_load_all(text))
    for doc in docs:
        doc["spec"]["template"]["metadata"] = {"annotations": {f"{SIM}/run-for": "1s"}}
    return yaml.safe_dump_all(docs)


def plugin(cluster: Cluster, topology: Topology, *args: str) -> subprocess.CompletedProcess[str]:
    """`kubectl agents ARGS` with the topology's settings, as an operator's shell has them."""
    env = {**cluster.env, **topology.settings, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(
        [KUBECTL, "agents", *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def test_the_plugin_reads_each_topology_with_the_same_settings(
    crds: Cluster, namespace: str, operators: Operators, topology: Topology
) -> None:
    topology.empty()
    url = topology.settings["VALKEY_URL"]
    operators.start(url, namespace, True, False, **topology.settings)
    one = yaml_with_annotations(agents_yaml(1, "p", {}))
    crds.kubectl("apply", "-n", namespace, "-f", "-", stdin=one)
    wait_for(
        lambda: phases(crds, namespace).get("p-0") == "Completed" or None, 60, "p-0 to complete"
    )
    wait_for(
        lambda: plugin(crds, topology, "status", "p-0", "-n", namespace).returncode == 0 or None,
        30,
        "kubectl agents status to find Kubernetes and Valkey agreeing",
    )
    events = plugin(crds, topology, "events", "-n", namespace).stdout.splitlines()
    assert [line.split("  ")[2] for line in events] == [
        "- → Spawning",
        "Spawning → Running",
        "Running → Completed",
    ]


def test_a_topology_that_does_not_answer_as_configured_is_one_warning_and_not_ready(
    operators: Operators, topology: Topology, valkey_url: str, namespace: str
) -> None:
    """A wrong setting and an outage look alike from here, and kills must not wait on either:
    the operator starts, names the problem in one line, and /readyz holds a rollout back."""
    bad: dict[str, Any]
    if topology.name == "cluster":
        # A seed that is a plain server, not a Cluster node.
        bad = {**topology.settings, "VALKEY_URL": valkey_url}
        expected = "VALKEY_CLUSTER=true, but this server is not in cluster mode"
    else:
        bad = {**topology.settings, "VALKEY_SENTINEL_MASTER": "no-such-master"}
        expected = "no-such-master"
    running = operators.start(bad.pop("VALKEY_URL"), namespace, **bad)
    warnings = [line for line in running.log().splitlines() if "cannot reach Valkey at " in line]
    assert len(warnings) == 1, running.log()
    assert expected in warnings[0]
    assert "starting without it" in warnings[0]
    assert "Traceback" not in running.log()
    status, body = get(f"http://127.0.0.1:{running.port()}/readyz")
    assert (status, body.startswith("Valkey is unreachable: ")) == (503, True), body
