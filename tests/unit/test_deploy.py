"""The image and deploy/, read as files: what no Docker engine or cluster is needed to check.

The Dockerfile cannot be built here (no Docker engine); these tests hold it to its
promises: pinned bases, a non-root numeric USER that is the Deployment's uid, the
entrypoint, and a build context of only what the wheel is made of. deploy/'s
workloads are held to the restricted Pod Security profile and to the image
version in pyproject.toml; tests/e2e/test_deploy.py applies them to the real API
server.
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


def stages() -> list[str]:
    """The image reference of each FROM, with ARG defaults substituted."""
    args: dict[str, str] = {}
    images = []
    for word, rest in DOCKERFILE:
        if word == "ARG" and "=" in rest:
            name, _, default = rest.partition("=")
            args[name] = default
        elif word == "FROM":
            image = rest.split()[0]
            images.append(re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], image))
    return images


def load(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def workload(path: Path, kind: str) -> dict[str, Any]:
    (found,) = (doc for doc in load(path) if doc["kind"] == kind)
    return found


DEPLOYMENT: Final = workload(DEPLOY / "base" / "deployment.yaml", "Deployment")
VALKEY: Final = workload(DEPLOY / "valkey" / "statefulset.yaml", "StatefulSet")


def test_the_image_is_built_in_stages_from_pinned_bases() -> None:
    images = stages()
    assert len(images) >= 2, "a build stage and a runtime stage"
    for image in images:
        assert PINNED.match(image), f"{image}: pin an exact tag and its digest"


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
    assert json.loads(entrypoints[-1]) == ["python", "-m", "controller", "run"]
    assert not [rest for word, rest in DOCKERFILE if word == "CMD"]


def test_the_build_context_is_only_what_the_wheel_is_made_of() -> None:
    copied = {
        source.rstrip("/")
        for word, rest in DOCKERFILE
        if word == "COPY" and "--from" not in rest
        for source in rest.split()[:-1]
    }
    assert copied == {"pyproject.toml", "README.md", "controller"}
    rules = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert rules[0] == "*", "everything is left out unless named"
    assert {rule[1:].rstrip("/") for rule in rules if rule.startswith("!")} == copied


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
