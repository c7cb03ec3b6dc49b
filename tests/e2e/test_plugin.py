"""`kubectl agents ...` driven as a user would: through kubectl, as a subprocess."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import uuid
from pathlib import Path
from typing import IO

import pytest
import redis
import yaml

from controller import plugin
from localcluster import procs
from tests.conftest import KUBECTL, Cluster, Operator
from tests.e2e import views
from tests.helpers import wait_for

pytestmark = pytest.mark.usefixtures("crds")
BIN = str(Path(sys.executable).parent)


def agents(
    cluster: Cluster, valkey_url: str, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`kubectl agents ARGS`: kubectl finds the plugin on the PATH, as for any user."""
    environment = {
        **cluster.env,
        "VALKEY_URL": valkey_url,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        **(env or {}),
    }
    return subprocess.run(
        [KUBECTL, "agents", *args],
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def apply_agent(
    cluster: Cluster,
    namespace: str,
    name: str,
    labels: dict[str, str] | None = None,
    run_for: str = "",
) -> None:
    annotations = {"sim.orchestrator.mosaicstack.dev/run-for": run_for} if run_for else {}
    manifest = {
        "apiVersion": "orchestrator.mosaicstack.dev/v1alpha1",
        "kind": "Agent",
        "metadata": {"name": name, "labels": labels or {}},
        "spec": {
            "taskId": f"TASK-{name}",
            "template": {
                "metadata": {"annotations": annotations},
                "spec": {"containers": [{"name": "agent", "image": "registry.example/a:1"}]},
            },
        },
    }
    cluster.kubectl("apply", "-n", namespace, "-f", "-", stdin=yaml.safe_dump(manifest))


def phase(cluster: Cluster, namespace: str, name: str) -> str | None:
    found: str | None = views.agent(cluster, namespace, name).get("status", {}).get("phase")
    return found


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["kill"],
        ["killswitch"],
        ["killswitch", "engage"],
        ["killswitch", "disengage"],
        ["killswitch", "status"],
        ["events"],
        ["status"],
    ],
    ids=lambda c: " ".join(c) or "kubectl agents",
)
def test_help_everywhere(crds: Cluster, command: list[str]) -> None:
    result = agents(crds, "", *command, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: kubectl agents")


def test_kill_by_name_waits_and_keeps_the_reason(
    crds: Cluster, namespace: str, valkey_url: str, operator: Operator
) -> None:
    apply_agent(crds, namespace, "a1")
    wait_for(lambda: phase(crds, namespace, "a1") == "Running" or None, 30, "a1 running")
    result = agents(
        crds, valkey_url, "kill", "a1", "--reason", "runaway spend", "--wait", "-n", namespace
    )
    assert result.returncode == plugin.OK, result.stderr
    assert result.stdout.splitlines() == [
        "agent/a1 kill requested",
        "agent/a1 Killed",
        "1 agent(s) killed",
    ]
    status = views.agent(crds, namespace, "a1")["status"]
    assert (status["phase"], status["message"]) == ("Killed", "runaway spend")


def test_kill_refuses_what_it_cannot_do_with_exit_codes(
    crds: Cluster, namespace: str, valkey_url: str
) -> None:
    unknown = agents(crds, valkey_url, "kill", "nobody", "-n", namespace)
    assert unknown.returncode == plugin.FAILED
    assert f"agent nobody not found in namespace {namespace}" in unknown.stdout
    bad = agents(crds, valkey_url, "kill", "-l", "fleet in (a", "-n", namespace)
    assert (bad.returncode, bad.stderr.strip()) == (
        plugin.USAGE,
        "error: bad selector: cannot parse the selector term 'fleet in (a'",
    )
    nothing = agents(crds, valkey_url, "kill", "-n", namespace)
    assert (nothing.returncode, nothing.stderr.strip()) == (
        plugin.USAGE,
        "error: name the agents to kill, or use --all or -l SELECTOR",
    )
    both = agents(crds, valkey_url, "kill", "x", "--all", "-n", namespace)
    assert both.returncode == plugin.USAGE


def test_kill_by_selector_in_every_namespace_kills_only_live_matches(
    crds: Cluster, namespace: str, valkey_url: str, operator: Operator
) -> None:
    fleet = f"f-{uuid.uuid4().hex[:6]}"
    for name in ("s1", "s2"):
        apply_agent(crds, namespace, name, {"fleet": fleet})
    apply_agent(crds, namespace, "other", {"fleet": "other"})
    apply_agent(crds, namespace, "done", {"fleet": fleet}, run_for="1s")
    wait_for(lambda: phase(crds, namespace, "done") == "Completed" or None, 30, "done to complete")
    wait_for(lambda: phase(crds, namespace, "s2") == "Running" or None, 30, "s2 running")
    result = agents(
        crds, valkey_url, "kill", "-A", "-l", f"fleet={fleet}", "--reason", "sweep", "--wait"
    )
    assert result.returncode == plugin.OK, result.stderr
    assert result.stdout.splitlines()[-1] == "2 agent(s) killed"
    assert [phase(crds, namespace, n) for n in ("s1", "s2", "other", "done")] == [
        "Killed",
        "Killed",
        "Running",
        "Completed",
    ]


def test_killswitch_engage_status_and_disengage(
    crds: Cluster, namespace: str, valkey_url: str, operator: Operator, switch_name: str
) -> None:
    apply_agent(crds, namespace, "k1", {"fleet": switch_name})
    wait_for(lambda: phase(crds, namespace, "k1") == "Running" or None, 30, "k1 running")
    engaged = agents(
        crds,
        valkey_url,
        "killswitch",
        "engage",
        switch_name,
        "--reason",
        "drill",
        "-l",
        f"fleet={switch_name}",
    )
    assert (engaged.returncode, engaged.stdout.strip()) == (
        plugin.OK,
        f"killswitch/{switch_name} engaged: drill",
    )
    wait_for(
        lambda: phase(crds, namespace, "k1") == "Killed" or None, 30, "k1 killed by the switch"
    )

    def counted() -> str | None:
        shown = agents(crds, valkey_url, "killswitch", "status", switch_name).stdout
        return shown if " 1        1 " in shown else None

    table = wait_for(counted, 30, "the switch's counts").splitlines()
    assert table[0].split() == [
        "NAME",
        "ENGAGED",
        "BY",
        "MATCHED",
        "KILLED",
        "ENGAGED-AT",
        "COMPLETED-AT",
        "REASON",
    ]
    # BY: nobody known, without the audit policies (tests/e2e/test_security.py has them).
    assert table[1].split()[:5] == [switch_name, "true", "-", "1", "1"]
    off = agents(crds, valkey_url, "killswitch", "disengage", switch_name)
    assert (off.returncode, off.stdout.strip()) == (
        plugin.OK,
        f"killswitch/{switch_name} disengaged (killed agents stay killed)",
    )
    spec = json.loads(crds.kubectl("get", "killswitch", switch_name, "-o", "json"))["spec"]
    assert (spec["engaged"], spec["agentSelector"]) == (
        False,
        {"matchLabels": {"fleet": switch_name}},
    )
    assert (
        agents(crds, valkey_url, "killswitch", "disengage", "no-such-switch").returncode
        == plugin.FAILED
    )
    assert (
        agents(crds, valkey_url, "killswitch", "status", "no-such-switch").returncode
        == plugin.FAILED
    )


def test_events_readable_json_since_and_follow(
    crds: Cluster, namespace: str, valkey_url: str, operator: Operator
) -> None:
    apply_agent(crds, namespace, "e1", run_for="1s")
    uid = wait_for(
        lambda: (
            (a := views.agent(crds, namespace, "e1")).get("status", {}).get("phase") == "Completed"
            and a["metadata"]["uid"]
        ),
        30,
        "e1 to complete",
    )
    wait_for(lambda: len(views.stream(valkey_url, uid)) == 3 or None, 30, "e1's events")
    text = agents(crds, valkey_url, "events", "-n", namespace).stdout.splitlines()
    mine = [line for line in text if f"{namespace}/e1" in line]
    assert mine == text, "only this namespace's events"
    # As kubectl: the context's namespace (here default, which has none), -A for all.
    assert agents(crds, valkey_url, "events").stdout == ""
    assert agents(crds, valkey_url, "events", "-A").stdout.splitlines() == text
    assert (
        agents(
            crds, valkey_url, "events", "--all-namespaces", "--for", "agent/e1"
        ).stdout.splitlines()
        == text
    )
    assert agents(crds, valkey_url, "events", "-A", "--for", "agent/other").stdout == ""
    assert agents(crds, valkey_url, "events", "--for", "pod/e1").returncode == plugin.USAGE
    assert [line.split("  ")[2:4] for line in mine] == [
        ["- → Spawning", "Created"],
        ["Spawning → Running", "Started"],
        ["Running → Completed", "Completed"],
    ]
    as_json = [
        json.loads(line)
        for line in agents(crds, valkey_url, "events", "-A", "-o", "json").stdout.splitlines()
    ]
    assert [e["type"] for e in as_json if e["data"].get("uid") == uid] == [
        "agent.spawning",
        "agent.running",
        "agent.completed",
    ]
    wide = agents(crds, valkey_url, "events", "-n", namespace, "-o", "wide").stdout
    assert "seq=2" in wide
    assert "task=TASK-e1" in wide
    with redis.Redis.from_url(valkey_url) as client:
        entries = client.xrange("orchestrator:events:stream")
    second = entries[1][0].decode()
    since = agents(crds, valkey_url, "events", "-A", "--since", second).stdout.splitlines()
    assert len(since) == len(entries) - 1
    assert agents(crds, valkey_url, "events", "-A", "--since", "2999-01-01T00:00:00Z").stdout == ""
    assert agents(crds, valkey_url, "events", "--since", "yesterday").returncode == plugin.USAGE

    follow_env = {
        **crds.env,
        "VALKEY_URL": valkey_url,
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
    }
    with redis.Redis.from_url(valkey_url) as client:
        newest = client.xrevrange("orchestrator:events:stream", count=1)[0][0].decode()
    with subprocess.Popen(
        [KUBECTL, "agents", "events", "-w", "-n", namespace, "--since", newest],
        env=follow_env,
        stdout=subprocess.PIPE,
        text=True,
    ) as follower:
        printed = Lines(follower)
        try:
            apply_agent(crds, namespace, "e2")
            wait_for(
                lambda: printed.any(f"{namespace}/e2  - → Spawning  Created"),
                30,
                "the follower to print e2's first event",
            )
        finally:
            follower.terminate()


class Lines:
    """What a running process prints, read in a thread so that waiting on it stays bounded."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.seen: list[str] = []
        self._queue: queue.Queue[str] = queue.Queue()
        stream = process.stdout
        assert stream is not None
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self._queue.put(line)

    def any(self, text: str) -> bool:
        while not self._queue.empty():
            self.seen.append(self._queue.get())
        return any(text in line for line in self.seen)


def test_status_says_whether_kubernetes_and_valkey_agree(
    crds: Cluster, namespace: str, valkey_url: str, operator: Operator
) -> None:
    apply_agent(crds, namespace, "c1")
    wait_for(lambda: phase(crds, namespace, "c1") == "Running" or None, 30, "c1 running")
    wait_for(
        lambda: views.record(valkey_url, namespace, "c1").get("phase") == "Running" or None,
        30,
        "mirror",
    )
    agree = agents(crds, valkey_url, "status", "c1", "-n", namespace)
    assert agree.returncode == plugin.OK, agree.stdout
    assert agree.stdout.splitlines()[-1] == "agent/c1: Kubernetes and Valkey agree"
    with redis.Redis.from_url(valkey_url) as client:
        client.hset(f"orchestrator:agent:{namespace}/c1", "phase", "Completed")
    differ = agents(crds, valkey_url, "status", "c1", "-n", namespace)
    assert differ.returncode == plugin.FAILED
    assert differ.stdout.splitlines()[-1] == "agent/c1: Kubernetes and Valkey disagree on phase"
    unknown = agents(crds, valkey_url, "status", "ghost", "-n", namespace)
    assert (unknown.returncode, unknown.stderr.strip()) == (
        plugin.FAILED,
        f"error: agent ghost not found in namespace {namespace}",
    )


def test_an_unreachable_cluster_or_valkey_is_named_with_its_exit_code(
    crds: Cluster, namespace: str, tmp_path: Path
) -> None:
    dead = procs.free_port()
    kubeconfig = tmp_path / "dead.kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "x",
                "clusters": [{"name": "c", "cluster": {"server": f"https://127.0.0.1:{dead}"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
            }
        )
    )
    cluster = agents(crds, "", "kill", "x", "--kubeconfig", str(kubeconfig))
    assert cluster.returncode == plugin.NO_CLUSTER
    assert f"error: cannot reach the Kubernetes API at https://127.0.0.1:{dead}" in cluster.stderr
    valkey = agents(crds, f"redis://:secret@127.0.0.1:{procs.free_port()}/0", "events")
    assert valkey.returncode == plugin.NO_VALKEY
    assert "error: cannot reach Valkey at redis://:***@127.0.0.1:" in valkey.stderr
    assert "secret" not in valkey.stderr
    missing = agents(crds, "", "events")
    assert (missing.returncode, missing.stderr.strip()) == (
        plugin.USAGE,
        "error: no Valkey to read: set VALKEY_URL or pass --valkey-url",
    )
