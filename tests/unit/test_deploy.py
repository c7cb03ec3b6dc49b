"""The image and deploy/, read as files: what no Docker engine or cluster is needed to check.

These tests hold the Dockerfile to its promises: nothing pulled (FROM scratch, the layers
are the tarballs `make image-context` writes), a non-root numeric USER that is the
Deployment's uid, the entrypoint, and a build context of only those tarballs;
tests/e2e/test_image.py runs what `make image` builds from it. deploy/'s workloads
are held to the restricted Pod Security profile and to the image version in
pyproject.toml; tests/e2e/test_deploy.py applies them to the real API server.
"""

from __future__ import annotations

import fnmatch
import json
import re
import tomllib
from pathlib import Path
from typing import Any, Final

import pytest
import yaml

import image

REPO: Final = Path(__file__).resolve().parents[2]
DEPLOY: Final = REPO / "deploy"
PINNED: Final = re.compile(r"^[a-z0-9./-]+:[0-9][A-Za-z0-9._-]*@sha256:[0-9a-f]{64}$")
IMAGE: Final = "ghcr.io/mosaicstack/agent-lifecycle-operator"


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile: comments dropped, continuations joined."""
    logical: list[str] = []
    pending = ""
    for line in path.read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, "a continuation runs off the end of the Dockerfile"
    found = []
    for text in logical:
        word, _, rest = text.strip().partition(" ")
        found.append((word.upper(), rest.strip()))
    return found


DOCKERFILE: Final = instructions(REPO / "Dockerfile")


def load(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def workload(path: Path, kind: str) -> dict[str, Any]:
    (found,) = (doc for doc in load(path) if doc["kind"] == kind)
    return found


DEPLOYMENT: Final = workload(DEPLOY / "base" / "deployment.yaml", "Deployment")
VALKEY: Final = workload(DEPLOY / "valkey" / "statefulset.yaml", "StatefulSet")


def added() -> list[str]:
    """The sources of the ADD and COPY instructions, in order."""
    return [
        source
        for word, rest in DOCKERFILE
        if word in {"ADD", "COPY"}
        for source in rest.split()[:-1]
        if not source.startswith("--")
    ]


def test_the_image_pulls_nothing_and_its_layers_are_what_make_image_context_writes() -> None:
    assert [rest for word, rest in DOCKERFILE if word == "FROM"] == ["scratch"]
    assert not [word for word, _ in DOCKERFILE if word == "RUN"], "nothing runs at build time"
    context = image.CONTEXT.relative_to(REPO).as_posix()
    assert added() == [f"{context}/{layer}" for layer in image.LAYERS]
    assert all(rest.endswith(" /") for word, rest in DOCKERFILE if word == "ADD")


def test_the_image_finds_the_operator_where_the_layers_put_it() -> None:
    (env,) = [rest for word, rest in DOCKERFILE if word == "ENV"]
    assert f"PYTHONPATH={image.SITE_PACKAGES}" in env.split()
    assert "PYTHONDONTWRITEBYTECODE=1" in env.split(), "the root filesystem is read-only"


def test_the_image_runs_as_the_deployments_non_root_uid() -> None:
    users = [rest for word, rest in DOCKERFILE if word == "USER"]
    assert users, "the image names its USER"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit(), "a numeric uid, so that runAsNonRoot can check it"
    assert int(uid) != 0
    pod = DEPLOYMENT["spec"]["template"]["spec"]["securityContext"]
    assert pod["runAsUser"] == int(uid)
    assert pod["runAsGroup"] == int(gid or uid)


def test_the_entrypoint_runs_the_operator() -> None:
    entrypoints = [rest for word, rest in DOCKERFILE if word == "ENTRYPOINT"]
    assert json.loads(entrypoints[-1]) == [image.PYTHON, "-m", "controller", "run"]
    assert not [rest for word, rest in DOCKERFILE if word == "CMD"]


def test_the_build_context_is_only_the_layers() -> None:
    rules = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert rules[0] == "*", "everything is left out unless named"
    assert [rule[1:] for rule in rules[1:] if rule.startswith("!")] == added()


def test_the_python_layers_are_pinned_with_hashes() -> None:
    lock = (REPO / "image" / "requirements.lock").read_text()
    pins = re.findall(r"^([a-z0-9._-]+)==\S+ \\$", lock, re.MULTILINE)
    runtime = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    # Names compared as PEP 503 normalises them (PyYAML is pinned as pyyaml).
    assert {re.split(r"[<>=!~ \[]", dep)[0].lower() for dep in runtime} <= set(pins)
    assert lock.count("==") == len(pins), "every requirement pinned to one version"
    assert "kubernetes" not in pins, "kopf imports it whenever it is installed: 14 MiB for nothing"
    for block in lock.split("==")[1:]:
        assert "--hash=sha256:" in block.split("# via")[0], "every pin with its hashes"


def test_the_wheel_holds_the_controller_package_only() -> None:
    # setuptools' package discovery matches dotted names against these patterns; every
    # package's name starts with its top-level folder's, so those decide what is shipped.
    find = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    patterns = find["packages"]["find"]["include"]
    shipped = {
        folder.name
        for folder in REPO.iterdir()
        if folder.is_dir() and any(fnmatch.fnmatchcase(folder.name, p) for p in patterns)
    }
    assert shipped == {"controller"}, "not localcluster, tests or benchmarks"


def test_the_image_tag_is_the_project_version() -> None:
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    kustomization = load(DEPLOY / "base" / "kustomization.yaml")[0]
    (image,) = (i for i in kustomization["images"] if i["name"] == IMAGE)
    assert image["newTag"] == version
    (container,) = DEPLOYMENT["spec"]["template"]["spec"]["containers"]
    assert container["image"] == IMAGE, "the tag is set by kustomize, in one place"


@pytest.mark.parametrize("workload", [DEPLOYMENT, VALKEY], ids=["the operator", "Valkey"])
def test_workloads_meet_the_restricted_pod_security_profile(workload: dict[str, Any]) -> None:
    pod = workload["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] > 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    for container in pod["containers"]:
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False
        assert context["readOnlyRootFilesystem"] is True
        assert context["capabilities"] == {"drop": ["ALL"]}
        assert {"cpu", "memory"} <= set(container["resources"]["requests"])
        assert {"cpu", "memory"} <= set(container["resources"]["limits"])
        assert "livenessProbe" in container
        assert "readinessProbe" in container
    assert not pod.get("hostNetwork")
    assert not pod.get("hostPID")


def test_the_operator_serves_its_probes_and_reads_its_settings_from_the_cluster() -> None:
    assert DEPLOYMENT["spec"]["replicas"] == 2
    (container,) = DEPLOYMENT["spec"]["template"]["spec"]["containers"]
    assert container["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    env = {item["name"]: item for item in container["env"]}
    assert "secretKeyRef" in env["VALKEY_URL"]["valueFrom"]
    fields = {"LEADER_ELECTION_NAMESPACE": "metadata.namespace", "POD_NAME": "metadata.name"}
    for name, field in fields.items():
        assert env[name]["valueFrom"]["fieldRef"]["fieldPath"] == field
    mounts = {mount["mountPath"] for mount in container["volumeMounts"]}
    assert "/tmp" in mounts, "Python's scratch space on a read-only root"  # noqa: S108


def test_valkey_keeps_its_data_and_needs_its_password() -> None:
    spec = VALKEY["spec"]
    assert [claim["metadata"]["name"] for claim in spec["volumeClaimTemplates"]] == ["data"]
    (container,) = spec["template"]["spec"]["containers"]
    assert PINNED.match(container["image"])
    script = container["args"][0]
    assert "appendonly yes" in script
    assert "requirepass $VALKEY_PASSWORD" in script
    env = {item["name"]: item for item in container["env"]}
    assert "secretKeyRef" in env["VALKEY_PASSWORD"]["valueFrom"]
    assert {"name": "data", "mountPath": "/data"} in container["volumeMounts"]
