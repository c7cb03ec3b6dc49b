"""Kubernetes work never waits on Valkey: a hung server (SIGSTOP) and a wiped one (FLUSHALL).

A hung server is not a refused one: its connections stay open and nothing
answers, so a client that waits for it waits as long as it is allowed to. The
agents' workers make no Valkey call, and the mirror's calls are bounded, so
kills, timeouts and Pods go on; the mirror catches up once Valkey answers.
"""

from __future__ import annotations

import datetime
import json
import os
import signal
import time
from collections.abc import Iterator

import pytest
import redis

from controller import models
from tests.conftest import Cluster, Operators, RestartableValkey
from tests.e2e import views
from tests.e2e.test_killswitch import agents_yaml, phases, switch_yaml
from tests.e2e.test_operator import SIM, apply, manifest
from tests.helpers import get, wait_for

pytestmark = pytest.mark.usefixtures("crds")


@pytest.fixture
def hang(restartable_valkey: RestartableValkey) -> Iterator[RestartableValkey]:
    """The test's Valkey, which ``freeze()`` hangs with SIGSTOP; always continued at the end."""
    yield restartable_valkey
    thaw(restartable_valkey)


def freeze(server: RestartableValkey) -> None:
    assert server.proc is not None
    os.kill(server.proc.pid, signal.SIGSTOP)


def thaw(server: RestartableValkey) -> None:
    if server.proc is not None:
        os.kill(server.proc.pid, signal.SIGCONT)


def pods(cluster: Cluster, namespace: str) -> list[str]:
    return cluster.kubectl("get", "pods", "-n", namespace, "-o", "name").split()


def wait_until_all_killed(cluster: Cluster, namespace: str, timeout: float) -> None:
    wait_for(
        lambda: (
            set(phases(cluster, namespace).values()) == {"Killed"} and not pods(cluster, namespace)
        ),
        timeout,
        "every agent Killed and every Pod gone while Valkey hangs",
    )


def caught_up(cluster: Cluster, url: str, namespace: str, name: str) -> bool:
    """The record, the phase index and the stream say exactly what the status says: every
    transition once, in order, with its original time."""
    body = views.agent(cluster, namespace, name)
    status, uid = body["status"], body["metadata"]["uid"]
    record = views.record(url, namespace, name)
    if (record.get("uid"), record.get("seq"), record.get("phase")) != (
        uid,
        str(status["seq"]),
        status["phase"],
    ):
        return False
    if views.phase_sets(url, f"{namespace}/{name}") != [status["phase"]]:
        return False
    events = [json.loads(e) for e in views.stream(url, uid)]
    history = status["history"]
    return [e["id"] for e in events] == [f"{uid}-{i}" for i in range(1, len(history) + 1)] and [
        e["time"] for e in events
    ] == [h["at"] for h in history]


def test_a_killswitch_stops_40_agents_while_valkey_hangs(
    cluster: Cluster,
    namespace: str,
    operators: Operators,
    hang: RestartableValkey,
    switch_name: str,
) -> None:
    url = hang.url
    operators.start(url, namespace, VALKEY_TIMEOUT_SECONDS="2")
    labels = {"fleet": switch_name}
    feed = views.Feed(url)
    try:
        cluster.kubectl("apply", "-n", namespace, "-f", "-", stdin=agents_yaml(40, "hung", labels))
        wait_for(
            lambda: list(phases(cluster, namespace).values()).count("Running") == 40 or None,
            120,
            "40 running agents",
        )
        freeze(hang)
        started = time.monotonic()
        cluster.kubectl("apply", "-f", "-", stdin=switch_yaml(switch_name, True, labels))
        wait_until_all_killed(cluster, namespace, 15)
        print(f"\n40 agents killed, Pods gone, Valkey hung: {time.monotonic() - started:.1f} s")
        body = views.agent(cluster, namespace, "hung-0")
        assert (body["status"]["reason"], body["status"]["message"]) == (
            "KillswitchEngaged",
            f"killswitch {switch_name}: runaway spend",
        )

        thaw(hang)
        for i in range(40):
            wait_for(
                lambda i=i: caught_up(cluster, url, namespace, f"hung-{i}"),  # type: ignore[misc]
                60,
                f"hung-{i}'s record and stream to catch up",
            )
        with redis.Redis.from_url(url) as client:
            ids = [json.loads(f[b"event"])["id"] for _, f in client.xrange(views.STREAM)]
        assert len(ids) == len(set(ids)), "no event id twice in the stream"
        assert len([i for i in ids if not i.startswith("killswitch-")]) == 40 * 3
        wait_for(
            lambda: {json.loads(m)["id"] for m in feed.messages} == set(ids),
            30,
            "the subscriber to hear every event of the stream",
        )
    finally:
        feed.close()


@pytest.mark.parametrize("fault", ["hung", "refused"])
def test_an_operator_started_while_valkey_is_down_runs_agents_and_kills_them(
    cluster: Cluster,
    namespace: str,
    operators: Operators,
    hang: RestartableValkey,
    switch_name: str,
    fault: str,
) -> None:
    """A restart during an outage, a hung server (SIGSTOP) or none at all (connections
    refused): start-up names it in one warning line and goes on, not ready; Pods start and
    a killswitch kills; the mirror catches up once Valkey answers."""
    url = hang.url
    if fault == "hung":
        freeze(hang)
    else:
        hang.stop()
    operator = operators.start(url, namespace, VALKEY_TIMEOUT_SECONDS="2")
    warnings = [line for line in operator.log().splitlines() if "cannot reach Valkey" in line]
    assert len(warnings) == 1, operator.log()
    assert f"cannot reach Valkey at {url}: " in warnings[0]
    assert "; starting without it" in warnings[0]
    if fault == "hung":
        assert "no answer within 2 s" in warnings[0]
    status, body = get(f"http://127.0.0.1:{operator.port()}/readyz")
    assert (status, "Valkey is unreachable" in body) == (503, True), body

    labels = {"fleet": switch_name}
    cluster.kubectl("apply", "-n", namespace, "-f", "-", stdin=agents_yaml(5, "restarted", labels))
    wait_for(
        lambda: list(phases(cluster, namespace).values()).count("Running") == 5 or None,
        60,
        "5 running agents while Valkey hangs",
    )
    cluster.kubectl("apply", "-f", "-", stdin=switch_yaml(switch_name, True, labels))
    wait_until_all_killed(cluster, namespace, 30)

    if fault == "hung":
        thaw(hang)
    else:
        hang.start()  # the same port
    for i in range(5):
        wait_for(
            lambda i=i: caught_up(cluster, url, namespace, f"restarted-{i}"),  # type: ignore[misc]
            60,
            f"restarted-{i}'s record and stream to catch up",
        )
    wait_for(
        lambda: get(f"http://127.0.0.1:{operator.port()}/readyz") == (200, "ready\n"),
        30,
        "readyz to recover",
    )


def seconds_between(later: str, earlier: datetime.datetime) -> float:
    return (models.parse_time(later) - earlier).total_seconds()


def test_timeouts_fire_on_time_while_valkey_hangs(
    cluster: Cluster, namespace: str, operators: Operators, hang: RestartableValkey
) -> None:
    operators.start(hang.url, namespace, VALKEY_TIMEOUT_SECONDS="2")
    freeze(hang)
    apply(cluster, namespace, manifest("deadline", activeDeadlineSeconds=20))
    apply(
        cluster,
        namespace,
        manifest("never-starts", {f"{SIM}/start-after": "10m"}, spawnTimeoutSeconds=10),
    )

    def failed(name: str) -> dict[str, str] | None:
        status: dict[str, str] = views.agent(cluster, namespace, name).get("status", {})
        return status if status.get("phase") == "Failed" else None

    late = wait_for(lambda: failed("deadline"), 60, "the active deadline to fire")
    assert late["reason"] == "DeadlineExceeded"
    due = models.parse_time(late["startedAt"]) + datetime.timedelta(seconds=20)
    overdue = seconds_between(late["completedAt"], due)
    stuck = wait_for(lambda: failed("never-starts"), 60, "the spawn timeout to fire")
    assert stuck["reason"] == "SpawnTimeout"
    created = views.agent(cluster, namespace, "never-starts")["status"]["history"][0]["at"]
    spawn_due = models.parse_time(created) + datetime.timedelta(seconds=10)
    spawn_overdue = seconds_between(stuck["completedAt"], spawn_due)
    print(
        f"\nValkey hung: deadline fired {overdue:.1f} s late, spawn timeout {spawn_overdue:.1f} s"
    )
    # startedAt comes from the Pod (whole seconds), so the deadline may seem up to 1 s early.
    assert -1 <= overdue <= 3
    assert 0 <= spawn_overdue <= 3
    wait_for(lambda: not pods(cluster, namespace), 30, "both Pods to be removed")


def test_anti_entropy_repairs_a_wiped_valkey_without_a_restart(
    cluster: Cluster, namespace: str, operators: Operators, valkey_url: str
) -> None:
    interval = 5
    operators.start(valkey_url, namespace, VALKEY_RESYNC_INTERVAL_SECONDS=str(interval))
    apply(cluster, namespace, manifest("quick", {f"{SIM}/run-for": "1s"}))
    for i in range(3):
        apply(cluster, namespace, manifest(f"steady-{i}"))
    names = ["quick", "steady-0", "steady-1", "steady-2"]
    wait_for(
        lambda: (
            phases(cluster, namespace)
            == {
                "quick": "Completed",
                "steady-0": "Running",
                "steady-1": "Running",
                "steady-2": "Running",
            }
            and all(caught_up(cluster, valkey_url, namespace, n) for n in names)
        ),
        60,
        "the agents running (and one done) and mirrored",
    )
    with redis.Redis.from_url(valkey_url) as client:
        client.flushall()
    wiped = time.monotonic()
    # Nothing changes in Kubernetes from here: only the periodic pass can repair the mirror.
    wait_for(
        lambda: all(caught_up(cluster, valkey_url, namespace, n) for n in names),
        interval + 5,
        "every record, phase set and stream to equal the status again",
    )
    print(
        f"\nValkey wiped: repaired after {time.monotonic() - wiped:.1f} s (interval {interval} s)"
    )
    assert len(pods(cluster, namespace)) == 4, "no Pod was made or removed meanwhile"
