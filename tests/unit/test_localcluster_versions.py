"""The pinned versions in localcluster/versions.py agree with the Go modules that build them."""

from __future__ import annotations

import re
from pathlib import PurePosixPath

import pytest

from localcluster import versions


def go_mod(component: versions.Component) -> str:
    return (component.module_dir / "go.mod").read_text()


def required(component: versions.Component, module: str) -> str:
    found = re.search(
        rf"^\s*(?:require\s+)?{re.escape(module)} (v\S+)", go_mod(component), re.MULTILINE
    )
    assert found, f"{module} is not required by {component.module_dir}/go.mod"
    return found.group(1)


def tools(component: versions.Component) -> set[str]:
    """The packages named by go.mod's `tool` directive, one line or a block."""
    text = go_mod(component)
    single = re.findall(r"^tool (\S+)$", text, re.MULTILINE)
    blocks = re.findall(r"^tool \(\n(.*?)^\)", text, re.MULTILINE | re.DOTALL)
    return {*single, *(line.strip() for block in blocks for line in block.splitlines())}


@pytest.mark.parametrize(
    ("component", "module"),
    [
        (versions.KUBERNETES, "k8s.io/kubernetes"),
        (versions.ETCD, "go.etcd.io/etcd/server/v3"),
        (versions.KWOK, "sigs.k8s.io/kwok"),
        (versions.HELM, "helm.sh/helm/v3"),
        (versions.PROMTOOL, "github.com/prometheus/prometheus"),
    ],
    ids=["kubernetes", "etcd", "kwok", "helm", "promtool"],
)
def test_go_module_pins_the_same_version(component: versions.Component, module: str) -> None:
    assert required(component, module) == component.version


@pytest.mark.parametrize(
    "component",
    [versions.KUBERNETES, versions.KWOK, versions.HELM, versions.PROMTOOL],
    ids=["kubernetes", "kwok", "helm", "promtool"],
)
def test_every_package_built_is_a_tool_of_its_go_module(component: versions.Component) -> None:
    assert set(component.packages) <= tools(component)
    assert [PurePosixPath(p).name for p in component.packages] == list(component.binaries)


def test_every_staging_module_is_replaced_by_the_matching_published_release() -> None:
    minor = versions.KUBERNETES_VERSION.removeprefix("v1.")
    text = go_mod(versions.KUBERNETES)
    replaced = re.findall(r"^\s*(k8s\.io/\S+) => (\S+) (v\S+)$", text, re.MULTILINE)
    assert len(replaced) >= 25
    for module, target, version in replaced:
        assert target == module
        assert version == f"v0.{minor}", f"{module} is replaced by {version}, not v0.{minor}"


def test_helm_is_told_the_kubernetes_version_of_the_client_go_it_is_built_with() -> None:
    assert required(versions.HELM, "k8s.io/client-go") == versions.HELM_CLIENT_GO_VERSION
    minor = versions.HELM_CLIENT_GO_VERSION.split(".")[1]
    for pkg in ("chartutil", "lint/rules"):
        assert f"-X helm.sh/helm/v3/pkg/{pkg}.k8sVersionMinor={minor}" in versions.HELM.ldflags


@pytest.mark.parametrize(
    ("component", "stamp"),
    [
        (
            versions.KUBERNETES,
            f"k8s.io/component-base/version.gitVersion={versions.KUBERNETES_VERSION}",
        ),
        (versions.HELM, f"helm.sh/helm/v3/internal/version.version={versions.HELM_VERSION}"),
        (
            versions.PROMTOOL,
            f"github.com/prometheus/common/version.Version={versions.PROMETHEUS_VERSION}",
        ),
    ],
    ids=["kubernetes", "helm", "promtool"],
)
def test_binaries_report_the_pinned_release(component: versions.Component, stamp: str) -> None:
    assert f"-X {stamp}" in component.ldflags


def test_prometheus_release_matches_its_go_module_version() -> None:
    # Prometheus 3.X.Y is published as v0.3XX.Y: 3.16.0 is v0.316.0, 3.5.1 would be v0.305.1.
    major, minor, patch = (int(n) for n in versions.PROMETHEUS_VERSION.split("."))
    assert f"v0.{major * 100 + minor}.{patch}" == versions.PROMETHEUS_MODULE_VERSION


def test_prometheus_operator_crds_are_the_servicemonitor_and_prometheusrule_ones() -> None:
    crds = versions.PROMETHEUS_OPERATOR_CRDS
    names = [PurePosixPath(f).name for f in crds.files]
    assert names == [
        "monitoring.coreos.com_servicemonitors.yaml",
        "monitoring.coreos.com_prometheusrules.yaml",
    ]
    assert re.fullmatch(r"v\d+\.\d+\.\d+", crds.version)
    assert re.fullmatch(r"h1:[A-Za-z0-9+/]{43}=", crds.sum)


def test_make_build_caches_the_cluster_the_tools_and_the_crds() -> None:
    assert set(versions.EVERYTHING) == {
        *versions.COMPONENTS,
        versions.HELM,
        versions.PROMTOOL,
        versions.PROMETHEUS_OPERATOR_CRDS,
    }
    assert not set(versions.TOOLS) & set(versions.COMPONENTS), "`make up` needs no tools"


@pytest.mark.parametrize(
    "pinned",
    versions.EVERYTHING,
    ids=[pinned.name for pinned in versions.EVERYTHING],
)
def test_cache_directory_is_keyed_by_version_outside_the_repository(
    pinned: versions.Pinned,
) -> None:
    path = pinned.cache_dir()
    assert path.name.startswith(f"{pinned.name}-{pinned.version}-")
    assert versions.GO_DIR.parent.parent not in path.parents
