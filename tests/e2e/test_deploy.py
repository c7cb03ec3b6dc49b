"""deploy/ against the real API server: it installs, and its RBAC is enough and not more.

"Enough" is shown by every other e2e scenario: their operators run under deploy/'s
ServiceAccount (the ``operator_identity`` fixture). "Not more" is shown here, with
that ServiceAccount's own token: what it was not given, it is refused.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from typing import Any, Final

import pytest
import yaml

from tests.conftest import KUBECTL, REPO, Cluster
from tests.helpers import wait_for
from tests.identity import Identity

NAMESPACE: Final = "agent-lifecycle-operator"
LEASE: Final = "agent-lifecycle-operator"
INSTALLS: Final = ("deploy", "deploy/overlays/example", "deploy/overlays/ha-example")


def rendered(path: str) -> list[dict[str, Any]]:
    out = subprocess.run(
        [KUBECTL, "kustomize", str(REPO / path)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def as_operator(
    cluster: Cluster, operator: Identity, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """kubectl with the operator's token, not the admin's certificate."""
    env = {**cluster.env, "KUBECONFIG": str(operator.kubeconfig)}
    return subprocess.run(
        [KUBECTL, *args], env=env, input=stdin, capture_output=True, text=True, timeout=60
    )


def can_i(
    cluster: Cluster, operator: Identity, verb: str, resource: str, *where: str, sub: str = ""
) -> bool:
    """``kubectl auth can-i`` asked by the operator itself (a SelfSubjectAccessReview).

    ``resource`` as kubectl takes it (``plural.group``, or ``plural.group/NAME``),
    ``where`` ``-n NS`` or ``-A``, ``sub`` a subresource (``status``, ``exec``).
    """
    args = ["auth", "can-i", verb, resource, *where, *([f"--subresource={sub}"] if sub else [])]
    answer = as_operator(cluster, operator, *args).stdout.strip()
    assert answer in ("yes", "no"), answer
    return answer == "yes"


@pytest.fixture(scope="module")
def installed_namespace(crds: Cluster) -> Iterator[Cluster]:
    """deploy/'s Namespace, for real, for as long as this module's server-side dry runs need it.

    A dry run creates nothing, so without it every namespaced object would be refused
    ("namespaces not found") where a real apply, which makes the Namespace first, works.
    Applying it for real also lets Pod Security admission check the Deployment and the
    StatefulSet against the `restricted` profile its labels name. It is removed
    afterwards only if it was not there before.
    """
    (manifest,) = (doc for doc in rendered("deploy") if doc["kind"] == "Namespace")

    def phase() -> str:
        return crds.kubectl(
            "get", "namespace", NAMESPACE, "--ignore-not-found", "-o", "jsonpath={.status.phase}"
        ).strip()

    # One still terminating (a previous session's) takes no new content: let it finish.
    wait_for(lambda: phase() != "Terminating", timeout=60, what=f"{NAMESPACE} to finish going")
    existed = phase() != ""
    crds.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(manifest))
    try:
        yield crds
    finally:
        if not existed:
            crds.kubectl("delete", "namespace", NAMESPACE, "--timeout=60s", check=False)


@pytest.mark.parametrize(
    "path", INSTALLS, ids=["the base", "the example overlay", "the HA Valkey overlay"]
)
@pytest.mark.parametrize("mode", ["client-side", "server-side"])
def test_kubectl_apply_k_passes_a_server_side_dry_run(
    installed_namespace: Cluster, path: str, mode: str
) -> None:
    objects = rendered(path)
    result = installed_namespace.kubectl_result(
        "apply", "--dry-run=server", f"--server-side={mode == 'server-side'}", "-k", path
    )
    assert result.returncode == 0, result.stderr
    done = [line for line in result.stdout.splitlines() if line.endswith("(server dry run)")]
    assert len(done) == len(objects), result.stdout
    # Pod Security admission warns of a pod template that the `restricted` profile would refuse.
    assert "PodSecurity" not in result.stderr, result.stderr


def test_every_granted_rule_is_granted_to_the_service_account(
    crds: Cluster, operator_identity: Identity, namespace: str
) -> None:
    for rule in operator_identity.rules("ClusterRole"):
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                plural, _, sub = resource.partition("/")
                kind = f"{plural}.{group}" if group else plural
                for verb in rule["verbs"]:
                    for where in (["-A"], ["-n", namespace]):
                        assert can_i(crds, operator_identity, verb, kind, *where, sub=sub), (
                            verb,
                            resource,
                            where,
                        )
    home = operator_identity.namespace
    assert can_i(crds, operator_identity, "create", "leases.coordination.k8s.io", "-n", home)
    for verb in ("get", "update"):
        lease = f"leases.coordination.k8s.io/{LEASE}"
        assert can_i(crds, operator_identity, verb, lease, "-n", home), verb


def test_the_rules_name_no_wildcard_and_no_secret(operator_identity: Identity) -> None:
    for kind in ("ClusterRole", "Role"):
        for rule in operator_identity.rules(kind):
            for field in ("apiGroups", "resources", "verbs", "resourceNames"):
                assert "*" not in rule.get(field, []), (kind, rule)
            assert "secrets" not in rule["resources"], (kind, rule)


# What the operator never does, asked as the operator: every one must be refused.
REFUSED: Final = [
    ("get", "secrets", ""),
    ("list", "secrets", ""),
    ("watch", "secrets", ""),
    ("list", "configmaps", ""),
    ("create", "agents.orchestrator.mosaicstack.dev", ""),
    ("update", "agents.orchestrator.mosaicstack.dev", ""),
    ("deletecollection", "agents.orchestrator.mosaicstack.dev", ""),
    ("update", "agents.orchestrator.mosaicstack.dev", "status"),
    ("create", "killswitches.orchestrator.mosaicstack.dev", ""),
    ("patch", "killswitches.orchestrator.mosaicstack.dev", ""),
    ("delete", "killswitches.orchestrator.mosaicstack.dev", ""),
    ("update", "killswitches.orchestrator.mosaicstack.dev", "status"),
    ("update", "pods", ""),
    ("patch", "pods", ""),
    ("create", "pods", "exec"),
    ("get", "pods", "log"),
    ("create", "pods", "eviction"),
    ("patch", "pods", "status"),
    ("delete", "events", ""),
    ("create", "events.events.k8s.io", ""),
    ("create", "namespaces", ""),
    ("delete", "namespaces", ""),
    ("patch", "namespaces", ""),
    ("get", "customresourcedefinitions.apiextensions.k8s.io", ""),
    ("create", "customresourcedefinitions.apiextensions.k8s.io", ""),
    ("delete", "customresourcedefinitions.apiextensions.k8s.io", ""),
    ("create", "deployments.apps", ""),
    ("create", "serviceaccounts", "token"),
    ("create", "rolebindings.rbac.authorization.k8s.io", ""),
    ("escalate", "clusterroles.rbac.authorization.k8s.io", ""),
    ("impersonate", "serviceaccounts", ""),
]


def test_what_the_operator_does_not_need_it_is_refused(
    crds: Cluster, operator_identity: Identity, namespace: str
) -> None:
    granted = [
        f"{verb} {kind}{'/' + sub if sub else ''}"
        for verb, kind, sub in REFUSED
        for where in (["-A"], ["-n", namespace])
        if can_i(crds, operator_identity, verb, kind, *where, sub=sub)
    ]
    assert granted == []


def test_leases_only_its_own_and_only_in_its_own_namespace(
    crds: Cluster, operator_identity: Identity, namespace: str
) -> None:
    home = operator_identity.namespace
    leases = "leases.coordination.k8s.io"
    assert not can_i(crds, operator_identity, "get", f"{leases}/another-lease", "-n", home)
    assert not can_i(crds, operator_identity, "update", f"{leases}/another-lease", "-n", home)
    assert not can_i(crds, operator_identity, "delete", f"{leases}/{LEASE}", "-n", home)
    assert not can_i(crds, operator_identity, "list", leases, "-n", home)
    assert not can_i(crds, operator_identity, "create", leases, "-n", namespace)


def test_real_requests_beyond_its_rules_are_forbidden(
    crds: Cluster, operator_identity: Identity, namespace: str
) -> None:
    crds.kubectl("create", "secret", "generic", "kept", "-n", namespace, "--from-literal=k=v")
    agent: dict[str, Any] = {
        "apiVersion": "orchestrator.mosaicstack.dev/v1alpha1",
        "kind": "Agent",
        "metadata": {"name": "kept", "namespace": namespace},
        "spec": {
            "taskId": "TASK-kept",
            "template": {"spec": {"containers": [{"name": "agent", "image": "example/a:1"}]}},
        },
    }
    crds.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(agent))
    switch = f"switch-{uuid.uuid4().hex[:8]}"
    attempts = {
        "read a Secret": ("get", "secret", "kept", "-n", namespace),
        "list Secrets everywhere": ("get", "secrets", "-A"),
        # It may delete one Agent (its TTL after finishing), but never make or rewrite one.
        "create an Agent": ("create", "-f", "-"),
        "replace an Agent": ("replace", "-f", "-"),
        "create a Killswitch": ("create", "-f", "-"),
    }
    stdin = {
        "create an Agent": yaml.safe_dump(
            {**agent, "metadata": {"name": "made", "namespace": namespace}}
        ),
        "replace an Agent": yaml.safe_dump({**agent, "spec": {**agent["spec"], "taskId": "T-2"}}),
        "create a Killswitch": yaml.safe_dump(
            {
                "apiVersion": "orchestrator.mosaicstack.dev/v1alpha1",
                "kind": "Killswitch",
                "metadata": {"name": switch},
                "spec": {"engaged": True, "reason": "not the operator's to make"},
            }
        ),
    }
    try:
        for what, args in attempts.items():
            result = as_operator(crds, operator_identity, *args, stdin=stdin.get(what))
            assert result.returncode != 0, f"{what}: allowed: {result.stdout}"
            assert "Forbidden" in result.stderr, f"{what}: {result.stderr}"
            assert operator_identity.username in result.stderr, f"{what}: {result.stderr}"
    finally:
        crds.kubectl("delete", "killswitch", switch, "--ignore-not-found", check=False)
    # Nothing happened: the Agent is still there, unchanged; none was made; no switch was made.
    kept = json.loads(crds.kubectl("get", "agent", "kept", "-n", namespace, "-o", "json"))
    assert kept["spec"]["taskId"] == "TASK-kept"
    assert crds.kubectl("get", "agent", "made", "-n", namespace, "--ignore-not-found").strip() == ""
    assert crds.kubectl("get", "killswitch", switch, "--ignore-not-found").strip() == ""
    # What it may do still works with the same token.
    assert (
        as_operator(crds, operator_identity, "get", "agent", "kept", "-n", namespace).returncode
        == 0
    )
