"""A finished Agent deletes itself after its TTL (spec.ttlSecondsAfterFinished, else the
operator's AGENT_TTL_SECONDS_AFTER_FINISHED), on the real cluster, through the ordinary
deletion: the finalizer waits for ``agent.deleted`` on the Valkey stream.

The delay is measured from a watch on the Agents (when the first event showing its
deletion arrived) against the Agent's own ``status.completedAt``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from controller import models
from tests.conftest import Cluster, Operator, Operators
from tests.e2e import views
from tests.e2e.test_operator import SIM, apply, events_of, manifest, patch_spec
from tests.e2e.views import Feed
from tests.helpers import wait_for

pytestmark = pytest.mark.usefixtures("crds")

SLACK = 2.0  # seconds either side of the TTL that a deletion may land


@dataclass
class AgentWatch:
    """Every Agent event of a namespace from `kubectl get -w`, each stamped as it arrived."""

    last: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> the last body seen
    deleting_at: dict[str, float] = field(default_factory=dict)  # name -> first sign of deletion
    gone: set[str] = field(default_factory=set)

    def seen(self, event: dict[str, Any]) -> None:
        arrived = time.time()
        body = event["object"]
        name = body["metadata"]["name"]
        if event["type"] == "DELETED" or body["metadata"].get("deletionTimestamp"):
            self.deleting_at.setdefault(name, arrived)
        if event["type"] == "DELETED":
            self.gone.add(name)
        else:
            self.last[name] = body

    def finished(self, name: str, phase: str, timeout: float = 30) -> dict[str, Any]:
        """The Agent once the watch has shown it ``phase``."""

        def shown() -> dict[str, Any] | None:
            body = self.last.get(name, {})
            return body if body.get("status", {}).get("phase") == phase else None

        return wait_for(shown, timeout, f"{name} to be {phase}")

    def delay(self, name: str, timeout: float = 30) -> float:
        """Seconds from the Agent's completedAt to the first sign of its deletion, once it
        is gone."""
        wait_for(lambda: name in self.gone, timeout, f"{name} to be deleted")
        completed = models.parse_time(self.last[name]["status"]["completedAt"])
        return self.deleting_at[name] - completed.timestamp()


@pytest.fixture
def agent_watch(cluster: Cluster, namespace: str) -> Iterator[AgentWatch]:
    watch = AgentWatch()
    with views.kubectl_watch(cluster, watch.seen, "agents", "-n", namespace):
        yield watch


def ended_by_deletion(url: str, feed: Feed, body: dict[str, Any], last: str) -> list[str]:
    """The agent's events in the stream, which must end with ``agent.deleted`` from ``last``,
    and the same on the channel; its Valkey record is marked deleted."""
    uid = body["metadata"]["uid"]

    def deleted_event_seen() -> list[str] | None:
        events = views.stream(url, uid)
        return events if events and json.loads(events[-1])["type"] == "agent.deleted" else None

    events = [json.loads(e) for e in wait_for(deleted_event_seen, 15, "the agent.deleted event")]
    assert events[-1]["id"] == f"{uid}-deleted"
    assert events[-1]["data"]["from"] == last
    assert events[-2]["type"] == f"agent.{last.lower()}"
    namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
    record = views.record(url, namespace, name)
    assert (record["deleted"], record["phase"]) == ("1", last)
    assert views.phase_sets(url, f"{namespace}/{name}") == []
    wait_for(lambda: views.received(feed, uid) == views.stream(url, uid), 10, "the channel")
    return [e["type"] for e in events]


def said_why(cluster: Cluster, body: dict[str, Any]) -> str:
    """The TTLExpired Event's sentence on the (deleted) Agent."""
    events = events_of(cluster, body["metadata"]["namespace"], body["metadata"]["uid"])
    said = [message for kind, reason, message in events if reason == "TTLExpired"]
    assert len(said) == 1, events
    assert ("Normal", "TTLExpired", said[0]) in events
    return said[0]


def test_a_completed_agent_is_deleted_its_ttl_after_finishing(
    crds: Cluster,
    namespace: str,
    valkey_url: str,
    feed: Feed,
    operator: Operator,
    agent_watch: AgentWatch,
) -> None:
    apply(crds, namespace, manifest("brief", {f"{SIM}/run-for": "1s"}, ttlSecondsAfterFinished=3))
    done = agent_watch.finished("brief", "Completed")
    delay = agent_watch.delay("brief")
    print(f"Completed, ttlSecondsAfterFinished=3: deleted {delay:.2f} s after completedAt")
    assert 3 - SLACK <= delay <= 3 + SLACK
    assert ended_by_deletion(valkey_url, feed, done, "Completed") == [
        "agent.spawning",
        "agent.running",
        "agent.completed",
        "agent.deleted",
    ]
    assert said_why(crds, done).endswith("s after it finished (ttlSecondsAfterFinished=3)")
    # Its finished Pod goes with it: the garbage collector follows the owner reference.
    wait_for(
        lambda: crds.kubectl("get", "pods", "-n", namespace, "-o", "name").strip() == "",
        30,
        "the finished Pod to be collected",
    )


def test_failed_and_killed_agents_are_deleted_after_their_ttl_too(
    crds: Cluster,
    namespace: str,
    valkey_url: str,
    feed: Feed,
    operator: Operator,
    agent_watch: AgentWatch,
) -> None:
    failing = {f"{SIM}/run-for": "1s", f"{SIM}/exit-code": "3"}
    apply(crds, namespace, manifest("failing", failing, ttlSecondsAfterFinished=3))
    apply(crds, namespace, manifest("doomed", killGracePeriodSeconds=0, ttlSecondsAfterFinished=3))
    agent_watch.finished("doomed", "Running")
    assert patch_spec(crds, namespace, "doomed", desiredPhase="Killed").returncode == 0
    for name, phase in (("failing", "Failed"), ("doomed", "Killed")):
        body = agent_watch.finished(name, phase)
        delay = agent_watch.delay(name)
        print(f"{phase}, ttlSecondsAfterFinished=3: deleted {delay:.2f} s after completedAt")
        assert 3 - SLACK <= delay <= 3 + SLACK, (name, delay)
        assert ended_by_deletion(valkey_url, feed, body, phase)[-2:] == [
            f"agent.{phase.lower()}",
            "agent.deleted",
        ]
        assert said_why(crds, body).endswith("(ttlSecondsAfterFinished=3)")


def test_an_operator_restarted_in_between_deletes_on_time(
    crds: Cluster,
    namespace: str,
    valkey_url: str,
    feed: Feed,
    operators: Operators,
    agent_watch: AgentWatch,
) -> None:
    first = operators.start(valkey_url, namespace)
    ttl = 12  # room to stop one operator and start another on a loaded machine before it runs out
    apply(
        crds, namespace, manifest("patient", {f"{SIM}/run-for": "1s"}, ttlSecondsAfterFinished=ttl)
    )
    done = agent_watch.finished("patient", "Completed")
    assert first.stop() == 0  # the timer, if it were kept in memory, goes with it
    operators.start(valkey_url, namespace)
    ready = time.time()
    due = models.parse_time(done["status"]["completedAt"]).timestamp() + ttl
    assert ready < due, f"the new operator was ready {ready - due:.1f} s after the TTL ran out"
    assert "patient" not in agent_watch.deleting_at, "deleted while no operator ran"
    delay = agent_watch.delay("patient")
    print(f"restarted in between, ttlSecondsAfterFinished={ttl}: deleted {delay:.2f} s after")
    assert ttl - SLACK <= delay <= ttl + SLACK
    assert ended_by_deletion(valkey_url, feed, done, "Completed")[-1] == "agent.deleted"


def test_the_operators_default_applies_when_the_spec_says_null(
    crds: Cluster,
    namespace: str,
    valkey_url: str,
    feed: Feed,
    operators: Operators,
    agent_watch: AgentWatch,
) -> None:
    operators.start(valkey_url, namespace, AGENT_TTL_SECONDS_AFTER_FINISHED="3")
    short = {f"{SIM}/run-for": "1s"}
    apply(crds, namespace, manifest("defaulted", short))  # ttlSecondsAfterFinished: null
    apply(crds, namespace, manifest("instant", short, ttlSecondsAfterFinished=0))
    for name, ttl in (("defaulted", 3), ("instant", 0)):
        body = agent_watch.finished(name, "Completed")
        delay = agent_watch.delay(name)
        print(f"{name}: deleted {delay:.2f} s after completedAt (TTL {ttl})")
        assert max(0, ttl - SLACK) <= delay <= ttl + SLACK, (name, delay)
        assert ended_by_deletion(valkey_url, feed, body, "Completed")[-1] == "agent.deleted"
    defaulted = agent_watch.last["defaulted"]
    assert said_why(crds, defaulted).endswith("(the operator's AGENT_TTL_SECONDS_AFTER_FINISHED=3)")
    assert said_why(crds, agent_watch.last["instant"]).endswith("(ttlSecondsAfterFinished=0)")


def test_an_agent_with_neither_ttl_stays(
    crds: Cluster,
    namespace: str,
    valkey_url: str,
    feed: Feed,
    operator: Operator,
    agent_watch: AgentWatch,
) -> None:
    short = {f"{SIM}/run-for": "1s"}
    apply(crds, namespace, manifest("kept", short))  # and AGENT_TTL_SECONDS_AFTER_FINISHED unset
    # A witness that finishes alongside it and goes after 4 s: by then "kept" would have gone.
    apply(crds, namespace, manifest("witness", short, ttlSecondsAfterFinished=4))
    kept = agent_watch.finished("kept", "Completed")
    witness = agent_watch.finished("witness", "Completed")
    agent_watch.delay("witness")
    kept_done = models.parse_time(kept["status"]["completedAt"]).timestamp()
    assert time.time() - kept_done >= 3, "the witness went too soon to show anything"
    assert "kept" not in agent_watch.deleting_at
    views.check(crds, valkey_url, feed, namespace, "kept", "Completed")
    assert not [
        e for e in events_of(crds, namespace, kept["metadata"]["uid"]) if e[1] == "TTLExpired"
    ]
    assert ended_by_deletion(valkey_url, feed, witness, "Completed")[-1] == "agent.deleted"
