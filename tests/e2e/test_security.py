"""Who may do what, on the real API server: the audit of who killed an agent or engaged a
switch (deploy/base/audit.yaml), the roles for people (deploy/base/roles.yaml, kill-only.yaml), the
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
from tests.e2e.test_killswitch import switch_yaml
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
    files = tuple(
        arg
        for name in ("audit", "kill-only", "roles")
        for arg in ("-f", str(BASE / f"{name}.yaml"))
    )
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


def grant(
    cluster: Cluster, namespace: str, role: str, user: str, proof: tuple[str, str] | None = None
) -> None:
    """Bind ``role`` to ``user`` in ``namespace``; once ``proof`` (verb, resource) is allowed,
    the binding and the role's aggregation are in force."""
    cluster.kubectl(
        "create",
        "rolebinding",
        f"{user.rsplit(':', 1)[-1]}-{role}",
        "-n",
        namespace,
        f"--clusterrole={role}",
        f"--user={user}",
    )
    if proof is not None:
        verb, resource = proof
        wait_for(lambda: can_i(cluster, user, verb, resource, "-n", namespace), 30, f"{role}")


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
    grant(secured, namespace, "edit", "alice", ("patch", "agents"))
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
    for user in ("bob", "dora"):
        secured.kubectl(
            "create",
            "clusterrolebinding",
            f"{switch_name}-{user}",
            "--clusterrole=agent-switch-operator",
            f"--user={user}",
        )
        wait_for(lambda u=user: can_i(secured, u, "patch", "killswitches"), 30, user)  # type: ignore[misc]
    try:
        operators.start(valkey_url, namespace)
        labelled = agent_yaml("caught").replace(
            "metadata:\n", f"metadata:\n  labels: {{switch: {switch_name}}}\n"
        )
        secured.kubectl("apply", "-n", namespace, "-f", "-", stdin=labelled)
        wait_for(lambda: phase_of(secured, namespace, "caught") == "Running", 60, "Running")
        switch = switch_yaml(switch_name, True, {"switch": switch_name})
        secured.kubectl("apply", "--as", "bob", "-f", "-", stdin=switch)
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

        # A change to an engaged switch is a decision of its own: whoever makes it is on
        # record for the kills from then on.
        secured.kubectl(
            "patch", "killswitch", switch_name, "--as", "dora", "--type", "merge",
            "-p", '{"spec": {"reason": "runaway spend, all of it"}}',
        )  # fmt: skip
        wait_for(lambda: switch_status().get("engagedBy") == "dora", 30, "engagedBy dora")
        late = labelled.replace("name: caught", "name: late").replace("TASK-caught", "TASK-late")
        secured.kubectl("apply", "-n", namespace, "-f", "-", stdin=late)
        wait_for(lambda: phase_of(secured, namespace, "late") == "Killed", 60, "late Killed")
        assert views.agent(secured, namespace, "late")["status"]["killedBy"] == "dora"

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
        assert f"killswitch/{switch_name}  disengaged  by bob  runaway spend, all of it" in listed
    finally:
        for user in ("bob", "dora"):
            secured.kubectl("delete", "clusterrolebinding", f"{switch_name}-{user}", check=False)


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
    # The agent-viewer and the agent-editor, aggregated into view and edit.
    grant(secured, namespace, "view", "vera", ("list", "agents"))
    grant(secured, namespace, "edit", "ed", ("create", "agents"))
    grant(secured, namespace, "agent-killer", "carol", ("patch", "agents"))
    secured.kubectl("apply", "-n", namespace, "-f", "-", stdin=agent_yaml("target"))
    where = ("-n", namespace)
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
    # Each field only the policy guards (taskId: the CRD keeps it immutable for everyone).
    owner = {"apiVersion": "v1", "kind": "ConfigMap", "name": "x", "uid": "0" * 36}
    beyond: dict[str, dict[str, Any]] = {
        "spec.agentType": {"spec": {"agentType": "reviewer"}},
        "spec.killGracePeriodSeconds": {"spec": {"killGracePeriodSeconds": 0}},
        "spec.spawnTimeoutSeconds": {"spec": {"spawnTimeoutSeconds": 5}},
        "spec.activeDeadlineSeconds": {"spec": {"activeDeadlineSeconds": 1}},
        "spec.ttlSecondsAfterFinished": {"spec": {"ttlSecondsAfterFinished": 0}},
        "metadata.labels": {"metadata": {"labels": {"escape": "switches"}}},
        "metadata.ownerReferences": {"metadata": {"ownerReferences": [owner]}},
        "metadata.finalizers": {"metadata": {"finalizers": ["example.com/never"]}},
    }
    for field, patch in beyond.items():
        refused = patch_as_carol(patch)
        assert f"changing {field} needs the right to create Agents" in refused.stderr, field
    # Nor may a killer take the operator's finalizer off (the Agent would go unrecorded);
    # here the admin puts it on, as the operator would.
    secured.kubectl(
        "patch", "agent", "target", *where, "--type", "merge",
        "-p", json.dumps({"metadata": {"finalizers": [models.FINALIZER]}}),
    )  # fmt: skip
    refused = patch_as_carol({"metadata": {"finalizers": None}})
    assert "changing metadata.finalizers needs" in refused.stderr
    kill = patch_as_carol({"spec": {"desiredPhase": "Killed", "killReason": "carol's call"}})
    assert kill.returncode == 0, kill.stderr


def test_the_garbage_collectors_bookkeeping_is_not_refused(
    secured: Cluster, namespace: str
) -> None:
    # It may not create Agents, yet it must remove foregroundDeletion and drop owner
    # references: it may update agents/finalizers, which the policy allows for that.
    wait_policies(secured, namespace)
    secured.kubectl("create", "configmap", "owner", "-n", namespace)
    owner = json.loads(secured.kubectl("get", "configmap", "owner", "-n", namespace, "-o", "json"))
    owned = yaml.safe_load(agent_yaml("owned"))
    owned["metadata"]["ownerReferences"] = [
        {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner["metadata"]["uid"]}
    ]
    secured.kubectl("create", "-n", namespace, "-f", "-", stdin=json.dumps(owned))
    secured.kubectl("apply", "-n", namespace, "-f", "-", stdin=agent_yaml("foreground"))
    secured.kubectl(
        "delete", "agent", "foreground", "-n", namespace, "--cascade=foreground", "--wait=false"
    )
    secured.kubectl(
        "delete", "configmap", "owner", "-n", namespace, "--cascade=orphan", "--wait=false"
    )

    def done() -> bool:
        names = secured.kubectl("get", "agents", "-n", namespace, "-o", "name").split()
        left = views.agent(secured, namespace, "owned")["metadata"]
        return names == ["agent.orchestrator.mosaicstack.dev/owned"] and not left.get(
            "ownerReferences"
        )

    # The collector notices a new resource type on its own schedule (tens of seconds).
    wait_for(done, 120, "the collector to finish the foreground deletion and the orphaning")


@pytest.mark.parametrize("side", ["server-side", "client-side"])
def test_gitops_reapplying_after_a_kill_is_a_no_op(
    secured: Cluster, namespace: str, valkey_url: str, operators: Operators, side: str
) -> None:
    """Argo CD applies server-side, or client-side (kubectl apply); Flux server-side."""
    wait_policies(secured, namespace)
    grant(secured, namespace, "edit", GITOPS, ("patch", "agents"))
    operators.start(valkey_url, namespace)
    mode = ("--server-side",) if side == "server-side" else ()

    def apply(manifest: str) -> str:
        return secured.kubectl(
            "apply", *mode, "--as", GITOPS, "-n", namespace, "-f", "-", stdin=manifest
        )

    apply(agent_yaml("synced"))
    wait_for(lambda: phase_of(secured, namespace, "synced") == "Running", 60, "Running")
    killed = agent_yaml("synced", desired="Killed")
    apply(killed)
    wait_for(lambda: phase_of(secured, namespace, "synced") == "Killed", 60, "Killed")
    body = views.agent(secured, namespace, "synced")
    assert body["status"]["killedBy"] == GITOPS  # the tool's own identity: the truth
    before = body["metadata"]["resourceVersion"]

    # The same manifest again, as the sync loop applies it: nothing changes, not even the
    # resourceVersion (the audit annotation is in no manifest, so there is no drift to undo).
    result = apply(killed)
    assert ("serverside-applied" if mode else "unchanged") in result
    diff = secured.kubectl_result(
        "diff", *mode, "--as", GITOPS, "-n", namespace, "-f", "-", stdin=killed
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

    def unguarded() -> bool:  # the API server unloads the policy in its own time
        probe = yaml.safe_load(agent_yaml("probe", hostPID=True))
        return not secured.kubectl_result(
            "create", "-n", "default", "--dry-run=server", "-f", "-", stdin=json.dumps(probe)
        ).returncode

    wait_for(unguarded, 30, "the template guard to be gone")


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
    "deprecated service account field": (
        {"serviceAccount": "cluster-admin"},
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

    # A template is judged once: changing it later is refused, whatever the new one holds.
    changed = guard.kubectl_result(
        "patch", "agent", "good", "-n", namespace, "--type", "merge",
        "-p", json.dumps({"spec": {"template": {"spec": {"hostPID": True}}}}),
    )  # fmt: skip
    assert changed.stderr.strip().endswith(
        "denied request: spec.template: an Agent's template is fixed once it is created while "
        "the template guard is on; delete the Agent and create it anew"
    ), changed.stderr

    # Its ConfigMap lost: a new Agent is refused, but nothing else is judged, so the
    # operator still removes its finalizer and a deletion completes.
    guard.kubectl("delete", "configmap", "agent-template-guard", "-n", GUARD_NAMESPACE)
    wait_for(
        lambda: "no params found" in create("after", {}, "--dry-run=server").stderr,
        30,
        "a refusal for want of params",
    )
    guard.kubectl("delete", "agent", "good", "-n", namespace, "--timeout=60s")
    assert guard.kubectl("get", "agents", "-n", namespace, "-o", "name") == ""


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
