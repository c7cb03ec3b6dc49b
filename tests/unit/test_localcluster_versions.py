"""The pinned versions in localcluster/versions.py agree with the Go modules that build them."""

from __future__ import annotations

import re

import pytest

from localcluster import versions


def required(component: versions.Component, module: str) -> str:
    text = (component.module_dir / "go.mod").read_text()
    found = re.search(rf"^\s*(?:require\s+)?{re.escape(module)} (v\S+)", text, re.MULTILINE)
    assert found, f"{module} is not required by {component.module_dir}/go.mod"
    return found.group(1)


@pytest.mark.parametrize(
    ("component", "module"),
    [
        (versions.KUBERNETES, "k8s.io/kubernetes"),
        (versions.ETCD, "go.etcd.io/etcd/server/v3"),
        (versions.KWOK, "sigs.k8s.io/kwok"),
    ],
    ids=["kubernetes", "etcd", "kwok"],
)
def test_go_module_pins_the_same_version(component: versions.Component, module: str) -> None:
    assert required(component, module) == component.version


def test_every_staging_module_is_replaced_by_the_matching_published_release() -> None:
    minor = versions.KUBERNETES_VERSION.removeprefix("v1.")
    text = (versions.KUBERNETES.module_dir / "go.mod").read_text()
    replaced = re.findall(r"^\s*(k8s\.io/\S+) => (\S+) (v\S+)$", text, re.MULTILINE)
    assert len(replaced) >= 25
    for module, target, version in replaced:
        assert target == module
        assert version == f"v0.{minor}", f"{module} is replaced by {version}, not v0.{minor}"


def test_cache_directory_is_keyed_by_version_outside_the_repository() -> None:
    path = versions.KUBERNETES.cache_dir()
    assert path.name.startswith(f"kubernetes-{versions.KUBERNETES_VERSION}-")
    assert versions.GO_DIR.parent.parent not in path.parents
