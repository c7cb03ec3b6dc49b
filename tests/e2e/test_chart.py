"""The Helm chart: it lints, renders what deploy/ holds, and installs, upgrades and uninstalls
on the real API server under the `restricted` Pod Security profile.

helm is the real one, built from its Go module at the version localcluster/versions.py pins.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import pytest
import yaml

from localcluster import build, versions
from tests.conftest import KUBECTL, REPO, Cluster
from tests.helpers import wait_for

CHART: Final = REPO / "charts" / "agent-lifecycle-operator"
NAME: Final = "agent-lifecycle-operator"
MONITORING: Final = (
    "--set=monitoring.serviceMonitor.enabled=true",
    "--set=monitoring.prometheusRule.enabled=true",
    "--set=monitoring.grafanaDashboard.enabled=true",
)


def helm(
    home: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """The pinned helm, with its cache and config in ``home`` (never the caller's)."""
    settings = {
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_DATA_HOME": str(home / "data"),
    }
    return subprocess.run(
        [str(build.binary(versions.HELM, "helm")), *args],
        env={**(env or {}), **settings, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"{' '.join(result.args)}: {result.stderr}"
    return result.stdout


def documents(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    (found,) = (
        doc for doc in docs if doc["kind"] == kind and name in (None, doc["metadata"]["name"])
    )
    return found


# The cluster-scoped objects deploy/base and the chart share as written: the admission
# policies (who asked; what a killer may change) and the roles for people.
SHARED_KINDS: Final = (
    "MutatingAdmissionPolicy",
    "MutatingAdmissionPolicyBinding",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
)
PEOPLE: Final = ("agent-viewer", "agent-editor", "agent-killer", "agent-switch-operator")


def container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (operator,) = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    return dict(operator)


@pytest.fixture(scope="module")
def helm_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("helm")


@pytest.fixture(scope="module")
def chart(helm_home: Path) -> list[dict[str, Any]]:
    """The chart rendered with its defaults, as release `agent-lifecycle-operator`."""
    return documents(ok(helm(helm_home, "template", NAME, str(CHART), "--namespace", NAME)))


def kustomize(folder: str) -> list[dict[str, Any]]:
    """deploy/``folder`` as `kubectl kustomize` renders it."""
    out = subprocess.run(
        [KUBECTL, "kustomize", str(REPO / "deploy" / folder)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    return documents(out)


@pytest.fixture(scope="module")
def base() -> list[dict[str, Any]]:
    return kustomize("base")


def test_helm_lint_passes_with_and_without_monitoring(helm_home: Path) -> None:
    for extra in ((), MONITORING):
        out = ok(helm(helm_home, "lint", "--strict", str(CHART), *extra))
        assert "1 chart(s) linted, 0 chart(s) failed" in out, out


def test_the_chart_carries_deploys_rbac_security_context_and_env(
    chart: list[dict[str, Any]], base: list[dict[str, Any]]
) -> None:
    assert one(chart, "Role")["rules"] == one(base, "Role")["rules"]
    operator_role = (one(d, "ClusterRole", NAME)["rules"] for d in (chart, base))
    assert next(operator_role) == next(operator_role)
    pod, pod_in_base = (one(d, "Deployment")["spec"]["template"]["spec"] for d in (chart, base))
    assert pod["securityContext"] == pod_in_base["securityContext"]
    assert pod["volumes"] == pod_in_base["volumes"]
    ours, theirs = container(chart), container(base)
    for field in (
        "securityContext",
        "env",
        "ports",
        "livenessProbe",
        "readinessProbe",
        "resources",
        "volumeMounts",
        "image",
    ):
        assert ours[field] == theirs[field], field
    assert (
        one(chart, "Deployment")["spec"]["replicas"] == one(base, "Deployment")["spec"]["replicas"]
    )
    assert (
        one(chart, "NetworkPolicy")["spec"]["egress"]
        == one(base, "NetworkPolicy")["spec"]["egress"]
    )
    pdb, pdb_in_base = (one(d, "PodDisruptionBudget")["spec"] for d in (chart, base))
    assert pdb["minAvailable"] == pdb_in_base["minAvailable"]
    # Monitoring is off by default: no object a cluster without Prometheus Operator refuses.
    assert not {"ServiceMonitor", "PrometheusRule"} & {doc["kind"] for doc in chart}


def test_the_chart_carries_deploys_admission_policies_and_roles(
    chart: list[dict[str, Any]], base: list[dict[str, Any]]
) -> None:
    def shared(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        found = [
            doc
            for doc in docs
            if doc["kind"] in SHARED_KINDS
            or (doc["kind"] == "ClusterRole" and doc["metadata"]["name"] in PEOPLE)
        ]
        for doc in found:
            # kustomize does not know these kinds are cluster-scoped and gives them the
            # base's namespace, which the API server ignores.
            doc["metadata"].pop("namespace", None)
        return sorted(found, key=lambda doc: (doc["kind"], doc["metadata"]["name"]))

    assert len(shared(base)) == 6 + len(PEOPLE)
    assert shared(chart) == shared(base)
    # The template guard is off by default, in both.
    guard = "agent-template-guard.orchestrator.mosaicstack.dev"
    assert guard not in {doc["metadata"]["name"] for doc in chart + base}


def test_the_template_guard_is_deploys_policy_bound_to_the_values(helm_home: Path) -> None:
    docs = documents(
        ok(
            helm(
                helm_home, "template", NAME, str(CHART), "--namespace", "ops",
                "--set=templateGuard.enabled=true",
                "--set=templateGuard.allowedRegistries={registry.example/,ghcr.io/team/}",
                "--set=templateGuard.requiredLimits={memory}",
            )
        )
    )  # fmt: skip
    shipped = kustomize("template-guard")
    policy = "agent-template-guard.orchestrator.mosaicstack.dev"
    for name in (policy, "agent-template-fixed.orchestrator.mosaicstack.dev"):
        assert one(docs, "ValidatingAdmissionPolicy", name) == one(
            shipped, "ValidatingAdmissionPolicy", name
        )
        assert one(docs, "ValidatingAdmissionPolicyBinding", name)
    binding = one(docs, "ValidatingAdmissionPolicyBinding", policy)["spec"]
    params = one(docs, "ConfigMap", f"{NAME}-template-guard")
    assert binding["paramRef"] == {
        "name": f"{NAME}-template-guard",
        "namespace": "ops",
        "parameterNotFoundAction": "Deny",
    }
    assert params["metadata"]["namespace"] == "ops"
    assert params["data"] == {
        "allowedRegistries": "registry.example/,ghcr.io/team/",
        "allowedServiceAccounts": "default",
        "requiredLimits": "memory",
    }


def test_values_set_the_operators_settings(helm_home: Path) -> None:
    docs = documents(
        ok(
            helm(
                helm_home,
                "template",
                "team-x",
                str(CHART),
                "--set=watchNamespaces={a,b}",
                "--set=maxConcurrentAgents=7",
                "--set=agentTtlSecondsAfterFinished=3600",
                "--set=valkey.topology=sentinel",
                "--set=valkey.sentinel.sentinels={s1:26379,s2:26379}",
                "--set=valkey.sentinel.masterName=agents",
                "--set=valkey.tls.secretName=valkey-tls",
                "--set=valkey.tls.certKey=tls.crt",
                "--set=valkey.tls.keyKey=tls.key",
                "--set=replicaCount=1",
            )
        )
    )
    env = {item["name"]: item.get("value") for item in container(docs)["env"]}
    assert env["WATCH_NAMESPACES"] == "a,b"
    assert env["MAX_CONCURRENT_AGENTS"] == "7"
    assert env["AGENT_TTL_SECONDS_AFTER_FINISHED"] == "3600"
    assert env["VALKEY_SENTINELS"] == "s1:26379,s2:26379"
    assert env["VALKEY_SENTINEL_MASTER"] == "agents"
    assert env["VALKEY_CA_FILE"] == "/etc/agent-lifecycle-operator/valkey-tls/ca.crt"
    assert env["VALKEY_CERT_FILE"] == "/etc/agent-lifecycle-operator/valkey-tls/tls.crt"
    assert env["LEASE_NAME"] == "team-x-agent-lifecycle-operator"
    (role,) = (doc for doc in docs if doc["kind"] == "Role")
    assert role["rules"][1]["resourceNames"] == ["team-x-agent-lifecycle-operator"]
    # One replica: a PodDisruptionBudget of minAvailable 1 would block every drain.
    assert "PodDisruptionBudget" not in {doc["kind"] for doc in docs}


def test_large_numbers_from_a_values_file_reach_the_operator_as_integers(
    helm_home: Path, tmp_path: Path
) -> None:
    values = tmp_path / "values.yaml"
    values.write_text("maxConcurrentAgents: 1000000\nagentTtlSecondsAfterFinished: 2592000\n")
    docs = documents(ok(helm(helm_home, "template", NAME, str(CHART), "-f", str(values))))
    env = {item["name"]: item.get("value") for item in container(docs)["env"]}
    assert env["MAX_CONCURRENT_AGENTS"] == "1000000"
    assert env["AGENT_TTL_SECONDS_AFTER_FINISHED"] == "2592000"


@pytest.mark.parametrize(
    ("values", "says"),
    [
        (
            ("--set=leaderElection.enabled=false",),
            "leaderElection.enabled=false needs replicaCount 1",
        ),
        (("--set=valkey.topology=sentinel",), "valkey.topology=sentinel needs"),
        (("--set=valkey.topology=cluster",), "needs valkey.keyPrefix with a hash tag"),
        (("--set=valkey.topology=replicated",), "valkey.topology must be standalone"),
    ],
)
def test_values_that_cannot_work_are_refused_with_one_line(
    helm_home: Path, values: tuple[str, ...], says: str
) -> None:
    result = helm(helm_home, "template", NAME, str(CHART), *values)
    assert result.returncode != 0
    assert says in result.stderr, result.stderr


@pytest.fixture
def release_namespace(crds: Cluster) -> Iterator[str]:
    """A namespace that enforces the `restricted` Pod Security profile."""
    name = f"helm-{uuid.uuid4().hex[:8]}"
    crds.kubectl("create", "namespace", name)
    for mode in ("enforce", "warn"):
        crds.kubectl("label", "namespace", name, f"pod-security.kubernetes.io/{mode}=restricted")
    try:
        yield name
    finally:
        crds.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture(scope="module")
def monitoring_crds(crds: Cluster) -> Cluster:
    """The Prometheus Operator's ServiceMonitor and PrometheusRule CRDs, from its Go module."""
    for path in build.module_files(versions.PROMETHEUS_OPERATOR_CRDS):
        crds.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(path))
    for crd in ("servicemonitors", "prometheusrules"):
        crds.kubectl(
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            f"crd/{crd}.monitoring.coreos.com",
        )
    return crds


def test_install_upgrade_and_uninstall_on_the_local_cluster(
    monitoring_crds: Cluster, release_namespace: str, helm_home: Path
) -> None:
    cluster, ns = monitoring_crds, release_namespace
    release = f"r{uuid.uuid4().hex[:6]}"
    fullname = f"{release}-{NAME}"
    cluster.kubectl(
        "create", "secret", "generic", f"{NAME}-valkey", "-n", ns, "--from-literal=url=redis://x"
    )
    env = cluster.env
    install = ("install", release, str(CHART), "--namespace", ns, *MONITORING)
    dry = ok(helm(helm_home, *install, "--dry-run=server", env=env))
    assert f"name: {fullname}" in dry

    installed = helm(helm_home, *install, env=env)
    ok(installed)
    # Pod Security's warn mode speaks through the API server's warnings, which helm prints.
    assert "PodSecurity" not in installed.stderr, installed.stderr
    assert "would violate" not in installed.stderr, installed.stderr

    def pods() -> list[str]:
        out = cluster.kubectl(
            "get", "pods", "-n", ns, "-l", f"app.kubernetes.io/instance={release}", "-o", "name"
        )
        return out.split()

    # The enforce mode admitted the replicas' Pods: the ReplicaSet made both.
    wait_for(lambda: len(pods()) == 2, timeout=60, what="the Deployment's two Pods")
    events = cluster.kubectl("get", "events", "-n", ns, "--field-selector=reason=FailedCreate")
    assert "forbidden" not in events, events
    for kind in ("servicemonitor", "prometheusrule", "service", "networkpolicy", "pdb"):
        cluster.kubectl(
            "get", kind, "-n", ns, f"{fullname}" + ("-metrics" if kind == "service" else "")
        )
    rule = yaml.safe_load(
        cluster.kubectl("get", "prometheusrule", fullname, "-n", ns, "-o", "yaml")
    )
    chart_rules = yaml.safe_load((CHART / "files" / "prometheus-rules.yaml").read_text())
    assert rule["spec"]["groups"] == chart_rules["groups"]

    ok(
        helm(
            helm_home,
            "upgrade",
            release,
            str(CHART),
            "--namespace",
            ns,
            "--reuse-values",
            "--set=maxConcurrentAgents=7",
            env=env,
        )
    )
    deployment = yaml.safe_load(
        cluster.kubectl("get", "deployment", fullname, "-n", ns, "-o", "yaml")
    )
    (operator,) = deployment["spec"]["template"]["spec"]["containers"]
    assert {"name": "MAX_CONCURRENT_AGENTS", "value": "7"} in operator["env"]
    assert "deployed" in ok(helm(helm_home, "status", release, "--namespace", ns, env=env))
    history = ok(helm(helm_home, "history", release, "--namespace", ns, "-o", "yaml", env=env))
    assert [entry["revision"] for entry in yaml.safe_load(history)] == [1, 2]

    ok(helm(helm_home, "uninstall", release, "--namespace", ns, "--wait", env=env))
    for what in (("deployment", fullname, "-n", ns), ("clusterrole", fullname)):
        assert cluster.kubectl("get", *what, "--ignore-not-found", "-o", "name") == ""
    # helm never deletes what it installed from crds/: the Agents live on.
    assert cluster.kubectl("get", "crd", "agents.orchestrator.mosaicstack.dev", "-o", "name")
