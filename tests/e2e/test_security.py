"""Who may do what, on the real API server: the audit of who killed an agent or engaged a
switch (deploy/base/admission.yaml), the roles for people (deploy/base/roles.yaml), the
optional template guard (deploy/template-guard) and the namespace's Pod Security level."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from controller import models
from tests.conftest import REPO, Cluster, Operators
from tests.e2e import views
from tests.e2e.test_plugin import agents as kubectl_agents
from tests.helpers import wait_for

pytestmark = pytest.mark.usefixtures("crds")

BASE = REPO / "deploy" / "base"
GUARD = REPO / "deploy" / "template-guard"
GUARD_NAMESPACE = "agent-lifecycle-operator"  # where the guard's binding reads its params
GITOPS = "system:serviceaccount:gitops:deployer"


@pytest.fixture(scope="module")
def secured(crds: Cluster) -> Iterator[Cluster]:
    """The cluster with deploy/base's admission policies and roles for people."""
    files = ("-f", str(BASE / "admission.yaml"), "-f", str(BASE / "roles.yaml"))
    crds.kubectl("apply", *files)
    yield crds
    crds.kubectl("delete", "--ignore-not-found", *files)


def agent_yaml(name: str, desired: str = "Running", **template: Any) -> str:
    pod: dict[str, Any] = {"containers": [{"name": "agent", "image": "registry.example/a:1"}]}
    pod.update(template)
    spec: dict[str, Any] = {"taskId": f"TASK-{name}", "template": {"spec": pod}}
    if desired != "Running":
        spec["desiredPhase"] = desired
    return yaml.safe_dump(
        {
            "apiVersion": models.API_VERSION,
            "kind": "Agent",
            "metadata": {"name": name},
            "spec": spec,
        }
    )


def grant(cluster: Cluster, namespace: str, role: str, user: str) -> None:
    cluster.kubectl(
        "create",
        "rolebinding",
        f"{user.rsplit(':', 1)[-1]}-{role}",
        "-n",
        namespace,
        f"--clusterrole={role}",
        f"--user={user}",
    )


def wait_policies(cluster: Cluster, namespace: str) -> None:
    """Until the API server enforces both audit policies (it loads each a moment after it is
    made): a forged killed-by or engaged-by is taken off a new object (dry runs: nothing is
    left behind)."""
    agent = yaml.safe_load(agent_yaml("probe"))
    agent["metadata"]["annotations"] = {models.KILLED_BY: "mallory"}
    switch = {
        "apiVersion": models.API_VERSION,
        "kind": "Killswitch",
        "metadata": {"name": "probe", "annotations": {models.ENGAGED_BY: "mallory"}},
        "spec": {"engaged": False},
    }

    def forged_kept(body: dict[str, Any], *where: str) -> bool:
        made = cluster.kubectl(
            "create", *where, "--dry-run=server", "-o", "json", "-f", "-", stdin=json.dumps(body)
        )
        return bool(json.loads(made)["metadata"].get("annotations"))

    def enforced() -> bool:
        return not forged_kept(agent, "-n", namespace) and not forged_kept(switch)

    wait_for(enforced, 30, "the admission policies to be enforced")


def events_of(cluster: Cluster, namespace: str, name: str) -> list[dict[str, Any]]:
    listed = cluster.kubectl(
        "get",
        "events",
        "-n",
        namespace,
        "--field-selector",
        f"involvedObject.kind=Agent,involvedObject.name={name}",
        "-o",
        "json",
    )
    items: list[dict[str, Any]] = json.loads(listed)["items"]
    return items


def stream_data(valkey_url: str, uid: str, kind: str) -> dict[str, Any] | None:
    for raw in views.stream(valkey_url, uid):
        event = json.loads(raw)
        if event["type"] == kind:
            data: dict[str, Any] = event["data"]
            return data
    return None


def phase_of(cluster: Cluster, namespace: str, name: str) -> str | None:
    phase = views.agent(cluster, namespace, name).get("status", {}).get("phase")
    return str(phase) if phase else None


def test_a_kill_as_alice_is_on_record_as_alice(
    secured: Cluster, namespace: str, valkey_url: str, operators: Operators
) -> None:
    wait_policies(secured, namespace)
    grant(secured, namespace, "edit", "alice")
    operators.start(valkey_url, namespace)
    secured.kubectl("apply", "-n", namespace, "-f", "-", stdin=agent_yaml("worker"))
    wait_for(lambda: phase_of(secured, namespace, "worker") == "Running", 60, "Running")

    secured.kubectl(
        "patch",
        "agent",
        "worker",
        "-n",
        namespace,
        "--as",
        "alice",
        "--type",
        "merge",
        "-p",
        '{"spec": {"desiredPhase": "Killed", "killReason": "over budget"}}',
    )
    wait_for(lambda: phase_of(secured, namespace, "worker") == "Killed", 60, "Killed")
    body = views.agent(secured, namespace, "worker")
    assert body["metadata"]["annotations"][models.KILLED_BY] == "alice"
    assert body["status"]["killedBy"] == "alice"
    killed = wait_for(
        lambda: [e for e in events_of(secured, namespace, "worker") if e["reason"] == "Killed"],
        30,
        "the Killed Event",
    )
    assert killed[0]["message"] == "over budget (killed by alice)"
    data = wait_for(
        lambda: stream_data(valkey_url, body["metadata"]["uid"], "agent.killed"),
        30,
        "agent.killed on the stream",
    )
    assert (data["killedBy"], data["reason"], data["message"]) == ("alice", "Killed", "over budget")

    shown = kubectl_agents(secured, valkey_url, "status", "worker", "-n", namespace).stdout
    assert "agent/worker: killed by alice" in shown
    listed = kubectl_agents(secured, valkey_url, "events", "-n", namespace).stdout
    assert [line for line in listed.splitlines() if "→ Killed" in line and "by alice" in line]

    # A client cannot rewrite the record: the API server puts the annotation back.
    secured.kubectl(
        "annotate",
        "agent",
        "worker",
        "-n",
        namespace,
        "--overwrite",
        "--as",
        "alice",
        f"{models.KILLED_BY}=mallory",
    )
    again = views.agent(secured, namespace, "worker")
    assert again["metadata"]["annotations"][models.KILLED_BY] == "alice"


def test_a_switch_engaged_as_bob_is_on_record_as_bob(
    secured: Cluster, namespace: str, valkey_url: str, operators: Operators, switch_name: str
) -> None:
    wait_policies(secured, namespace)
    secured.kubectl(
        "create",
        "clusterrolebinding",
        f"{switch_name}-bob",
        "--clusterrole=agent-switch-operator",
        "--user=bob",
    )
    try:
        operators.start(valkey_url, namespace)
        labelled = agent_yaml("caught").replace(
            "metadata:\n", f"metadata:\n  labels: {{switch: {switch_name}}}\n"
        )
        secured.kubectl("apply", "-n", namespace, "-f", "-", stdin=labelled)
        wait_for(lambda: phase_of(secured, namespace, "caught") == "Running", 60, "Running")
        switch = {
            "apiVersion": models.API_VERSION,
            "kind": "Killswitch",
            "metadata": {"name": switch_name},
            "spec": {
                "engaged": True,
                "reason": "runaway spend",
                "agentSelector": {"matchLabels": {"switch": switch_name}},
            },
        }
        secured.kubectl("apply", "--as", "bob", "-f", "-", stdin=json.dumps(switch))
        wait_for(lambda: phase_of(secured, namespace, "caught") == "Killed", 60, "Killed")

        body = views.agent(secured, namespace, "caught")
        assert body["status"]["killedBy"] == "bob"
        data = wait_for(
            lambda: stream_data(valkey_url, body["metadata"]["uid"], "agent.killed"),
            30,
            "agent.killed on the stream",
        )
        assert (data["killedBy"], data["reason"]) == ("bob", "KillswitchEngaged")

        def switch_status() -> dict[str, Any]:
            got = secured.kubectl("get", "killswitch", switch_name, "-o", "json")
            status: dict[str, Any] = json.loads(got).get("status") or {}
            return status

        wait_for(lambda: switch_status().get("engagedBy") == "bob", 30, "engagedBy bob")
        engaged = wait_for(lambda: switch_event(valkey_url, switch_name, "engaged"), 30, "event")
        assert engaged["engagedBy"] == "bob"
        shown = kubectl_agents(secured, valkey_url, "killswitch", "status", switch_name).stdout
        assert shown.splitlines()[1].split()[:3] == [switch_name, "true", "bob"]

        secured.kubectl(
            "patch",
            "killswitch",
            switch_name,
            "--as",
            "bob",
            "--type",
            "merge",
            "-p",
            '{"spec": {"engaged": false}}',
        )
        wait_for(lambda: switch_status().get("disengagedBy") == "bob", 30, "disengagedBy bob")
        off = wait_for(lambda: switch_event(valkey_url, switch_name, "disengaged"), 30, "event")
        assert off["disengagedBy"] == "bob"
        listed = kubectl_agents(secured, valkey_url, "events", "-n", namespace).stdout
        assert f"killswitch/{switch_name}  engaged  by bob  runaway spend" in listed
        assert f"killswitch/{switch_name}  disengaged  by bob  runaway spend" in listed
    finally:
        secured.kubectl("delete", "clusterrolebinding", f"{switch_name}-bob", check=False)


def switch_event(valkey_url: str, name: str, state: str) -> dict[str, Any] | None:
    for raw in views.all_events(valkey_url):
        event = json.loads(raw)
        if event["type"] == f"killswitch.{state}" and event["data"].get("name") == name:
            data: dict[str, Any] = event["data"]
            return data
    return None


def can_i(cluster: Cluster, user: str, *args: str) -> bool:
    result = cluster.kubectl_result("auth", "can-i", *args, "--as", user)
    return result.stdout.strip() == "yes"


def test_the_roles_grant_what_they_say(secured: Cluster, namespace: str) -> None:
    wait_policies(secured, namespace)
    grant(secured, namespace, "view", "vera")  # the agent-viewer, aggregated into view
    grant(secured, namespace, "edit", "ed")  # the agent-editor, aggregated into edit
    grant(secured, namespace, "agent-killer", "carol")
    secured.kubectl("apply", "-n", namespace, "-f", "-", stdin=agent_yaml("target"))
    where = ("-n", namespace)

    def aggregated() -> bool:
        return can_i(secured, "vera", "list", "agents", *where) and can_i(
            secured, "ed", "create", "agents", *where
        )

    wait_for(aggregated, 30, "the roles to be aggregated into view and edit")
    assert can_i(secured, "vera", "watch", "agents", *where)
    assert can_i(secured, "vera", "get", "agents", *where)
    assert not can_i(secured, "vera", "create", "agents", *where)
    assert not can_i(secured, "vera", "patch", "agents", *where)

    assert can_i(secured, "ed", "delete", "agents", *where)
    assert not can_i(secured, "ed", "patch", "killswitches")
    assert not can_i(secured, "ed", "create", "killswitches")

    # The killer: RBAC lets it patch, the agent-kill-only policy lets it change only a kill.
    assert can_i(secured, "carol", "patch", "agents", *where)
    assert not can_i(secured, "carol", "create", "agents", *where)
    assert not can_i(secured, "carol", "delete", "agents", *where)

    def patch_as_carol(patch: dict[str, Any]) -> subprocess.CompletedProcess[str]:
        return secured.kubectl_result(
            "patch",
            "agent",
            "target",
            *where,
            "--as",
            "carol",
            "--type",
            "merge",
            "-p",
            json.dumps(patch),
            "--dry-run=server",
        )

    image = {"spec": {"template": {"spec": {"containers": [{"name": "x", "image": "evil:1"}]}}}}
    refused = wait_for(  # the agent-kill-only policy is loaded in its own time
        lambda: r if (r := patch_as_carol(image)).returncode else None, 30, "a refusal"
    )
    assert (
        f"carol may only kill this Agent (spec.desiredPhase, spec.killReason): changing "
        f"spec.template needs the right to create Agents in namespace {namespace}"
    ) in refused.stderr
    refused = patch_as_carol({"spec": {"taskId": "TASK-other"}})
    assert refused.returncode != 0
    assert "spec.taskId" in refused.stderr
    refused = patch_as_carol({"metadata": {"labels": {"escape": "switches"}}})
    assert "changing metadata.labels needs" in refused.stderr
    kill = patch_as_carol({"spec": {"desiredPhase": "Killed", "killReason": "carol's call"}})
    assert kill.returncode == 0, kill.stderr


def test_gitops_reapplying_after_a_kill_is_a_no_op(
    secured: Cluster, namespace: str, valkey_url: str, operators: Operators
) -> None:
    wait_policies(secured, namespace)
    grant(secured, namespace, "edit", GITOPS)
    operators.start(valkey_url, namespace)
    manifest = agent_yaml("synced")
    secured.kubectl(
        "apply", "--server-side", "--as", GITOPS, "-n", namespace, "-f", "-", stdin=manifest
    )
    wait_for(lambda: phase_of(secured, namespace, "synced") == "Running", 60, "Running")
    killed = agent_yaml("synced", desired="Killed")
    secured.kubectl(
        "apply", "--server-side", "--as", GITOPS, "-n", namespace, "-f", "-", stdin=killed
    )
    wait_for(lambda: phase_of(secured, namespace, "synced") == "Killed", 60, "Killed")
    body = views.agent(secured, namespace, "synced")
    assert body["status"]["killedBy"] == GITOPS  # the tool's own identity: the truth
    before = body["metadata"]["resourceVersion"]

    # The same manifest again, as the sync loop applies it: nothing changes, not even the
    # resourceVersion (the audit annotation is nobody's field, so no drift to undo).
    result = secured.kubectl(
        "apply", "--server-side", "--as", GITOPS, "-n", namespace, "-f", "-", stdin=killed
    )
    assert "serverside-applied" in result
    diff = secured.kubectl_result(
        "diff", "--server-side", "--as", GITOPS, "-n", namespace, "-f", "-", stdin=killed
    )
    assert diff.returncode == 0, diff.stdout  # kubectl diff: 0 is "no differences"
    after = views.agent(secured, namespace, "synced")
    assert after["metadata"]["resourceVersion"] == before
    assert after["metadata"]["annotations"][models.KILLED_BY] == GITOPS


@pytest.fixture
def guard(secured: Cluster) -> Iterator[Cluster]:
    """deploy/template-guard applied as shipped (its params in GUARD_NAMESPACE)."""
    made_namespace = secured.kubectl_result("create", "namespace", GUARD_NAMESPACE)
    secured.kubectl("apply", "-k", str(GUARD))
    yield secured
    secured.kubectl("delete", "--ignore-not-found", "-k", str(GUARD))
    if made_namespace.returncode == 0:
        secured.kubectl("delete", "namespace", GUARD_NAMESPACE, "--wait=false")


LIMITED = {"limits": {"cpu": "1", "memory": "1Gi"}}
FORBIDDEN: dict[str, tuple[dict[str, Any], str]] = {
    "registry": (
        {"containers": [{"name": "agent", "image": "docker.io/evil:1", "resources": LIMITED}]},
        "spec.template: container agent uses image docker.io/evil:1, which is not from an "
        "allowed registry (registry.example/)",
    ),
    "service account": (
        {"serviceAccountName": "cluster-admin"},
        "spec.template: service account cluster-admin is not allowed for agents (allowed: default)",
    ),
    "privileged": (
        {
            "containers": [
                {
                    "name": "agent",
                    "image": "registry.example/a:1",
                    "resources": LIMITED,
                    "securityContext": {"privileged": True},
                }
            ]
        },
        "spec.template: container agent is privileged, which agents may not be",
    ),
    "hostPath": (
        {"volumes": [{"name": "root", "hostPath": {"path": "/"}}]},
        "spec.template: volume root is a hostPath, which agents may not mount",
    ),
    "hostNetwork": ({"hostNetwork": True}, "spec.template: hostNetwork is not allowed for agents"),
    "hostPID": ({"hostPID": True}, "spec.template: hostPID is not allowed for agents"),
    "limits": (
        {"containers": [{"name": "agent", "image": "registry.example/a:1"}]},
        "spec.template: container agent must set resources.limits for cpu, memory",
    ),
}


def test_the_template_guard_refuses_each_rule_with_its_sentence_and_lets_good_ones_run(
    guard: Cluster, namespace: str, valkey_url: str, operators: Operators
) -> None:
    allowed = {
        "containers": [{"name": "agent", "image": "registry.example/a:1", "resources": LIMITED}]
    }

    def create(name: str, pod: dict[str, Any], *dry_run: str) -> subprocess.CompletedProcess[str]:
        body = yaml.safe_load(agent_yaml(name))
        body["spec"]["template"]["spec"] = {**allowed, **pod}
        return guard.kubectl_result(
            "create", "-n", namespace, *dry_run, "-f", "-", stdin=json.dumps(body)
        )

    def refused_by_guard() -> bool:
        # A rule that reads the params: the API server loads the policy and the ConfigMap
        # each in its own time.
        pod, sentence = FORBIDDEN["registry"]
        return sentence in create("probe", pod, "--dry-run=server").stderr

    wait_for(refused_by_guard, 30, "the template guard to be enforced")
    for rule, (pod, sentence) in FORBIDDEN.items():
        result = create(f"bad-{rule.replace(' ', '-').lower()}", pod)
        assert result.returncode != 0, rule
        assert result.stderr.strip().endswith(f"denied request: {sentence}"), result.stderr
    assert guard.kubectl("get", "agents", "-n", namespace, "-o", "name") == ""

    operators.start(valkey_url, namespace)
    body = yaml.safe_load(agent_yaml("good"))
    body["spec"]["template"] = {
        "metadata": {"annotations": {"sim.orchestrator.mosaicstack.dev/run-for": "1s"}},
        "spec": allowed,
    }
    guard.kubectl("create", "-n", namespace, "-f", "-", stdin=json.dumps(body))
    wait_for(lambda: phase_of(guard, namespace, "good") == "Completed", 60, "Completed")


@pytest.fixture
def restricted(cluster: Cluster, namespace: str) -> str:
    cluster.kubectl(
        "label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted"
    )
    return namespace


def test_a_template_that_pod_security_refuses_fails_invalid_template(
    crds: Cluster, restricted: str, valkey_url: str, operators: Operators
) -> None:
    operators.start(valkey_url, restricted)
    privileged = agent_yaml(
        "escalate",
        containers=[
            {
                "name": "agent",
                "image": "registry.example/a:1",
                "securityContext": {"privileged": True},
            }
        ],
    )
    crds.kubectl("apply", "-n", restricted, "-f", "-", stdin=privileged)
    wait_for(lambda: phase_of(crds, restricted, "escalate") == "Failed", 60, "Failed")
    status = views.agent(crds, restricted, "escalate")["status"]
    assert status["reason"] == "InvalidTemplate"
    assert status["error"].startswith('pods "escalate-')
    assert 'is forbidden: violates PodSecurity "restricted:latest": privileged' in status["error"]
    assert crds.kubectl("get", "pods", "-n", restricted, "-o", "name") == ""
    uid = views.agent(crds, restricted, "escalate")["metadata"]["uid"]
    failed = wait_for(lambda: stream_data(valkey_url, uid, "agent.failed"), 30, "agent.failed")
    assert failed["error"] == status["error"]
