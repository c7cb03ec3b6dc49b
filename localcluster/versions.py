"""The pinned releases of the local cluster and its tools, and where they are cached.

The versions here must agree with the Go modules under ``localcluster/go``;
``tests/unit/test_localcluster_versions.py`` fails when they drift apart.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Final, TypeAlias

GO_DIR: Final = Path(__file__).resolve().parent / "go"


@dataclass(frozen=True)
class Component:
    """One Go module of ours that builds one or more pinned binaries."""

    name: str
    version: str
    module_dir: Path
    packages: tuple[str, ...]
    binaries: tuple[str, ...]
    ldflags: tuple[str, ...] = ()

    def fingerprint(self) -> str:
        """A short hash of the module files, so that editing go.mod rebuilds."""
        digest = hashlib.sha256()
        for name in sorted(p.name for p in self.module_dir.iterdir() if p.is_file()):
            digest.update(name.encode())
            digest.update((self.module_dir / name).read_bytes())
        return digest.hexdigest()[:10]

    def cache_dir(self) -> Path:
        return cache_root() / f"{self.name}-{self.version}-{self.fingerprint()}"


@dataclass(frozen=True)
class ModuleFiles:
    """Files copied out of one published Go module at a pinned version, e.g. manifests.

    The Go module proxy serves a module's whole tree with a checksum, so a file
    taken from it is as reproducible as a binary built from it.
    """

    name: str
    module: str
    version: str
    # The module's checksum as in a go.sum line: the proxy's download must match it.
    sum: str
    files: tuple[str, ...]

    def fingerprint(self) -> str:
        """A short hash of what is copied, so that choosing other files fetches again."""
        digest = hashlib.sha256("\n".join((self.module, self.sum, *self.files)).encode())
        return digest.hexdigest()[:10]

    def cache_dir(self) -> Path:
        return cache_root() / f"{self.name}-{self.version}-{self.fingerprint()}"


# What the cache holds: binaries built from a module of ours, or files of a published module.
Pinned: TypeAlias = Component | ModuleFiles

KUBERNETES_VERSION: Final = "v1.37.2"
ETCD_VERSION: Final = "v3.6.16"
KWOK_VERSION: Final = "v0.8.0"

_VERSION_PKG: Final = "k8s.io/component-base/version"

KUBERNETES: Final = Component(
    name="kubernetes",
    version=KUBERNETES_VERSION,
    module_dir=GO_DIR / "kubernetes",
    packages=(
        "k8s.io/kubernetes/cmd/kube-apiserver",
        "k8s.io/kubernetes/cmd/kube-controller-manager",
        "k8s.io/kubernetes/cmd/kube-scheduler",
    ),
    binaries=("kube-apiserver", "kube-controller-manager", "kube-scheduler"),
    # Stamp the release so that `kubectl version` reports it, as an official build does.
    ldflags=(
        f"-X {_VERSION_PKG}.gitVersion={KUBERNETES_VERSION}",
        f"-X {_VERSION_PKG}.gitMajor={KUBERNETES_VERSION[1:].split('.')[0]}",
        f"-X {_VERSION_PKG}.gitMinor={KUBERNETES_VERSION.split('.')[1]}",
        f"-X {_VERSION_PKG}.gitTreeState=clean",
    ),
)
ETCD: Final = Component(
    name="etcd",
    version=ETCD_VERSION,
    module_dir=GO_DIR / "etcd",
    packages=(".",),
    binaries=("etcd",),
)
KWOK: Final = Component(
    name="kwok",
    version=KWOK_VERSION,
    module_dir=GO_DIR / "kwok",
    packages=("sigs.k8s.io/kwok/cmd/kwok",),
    binaries=("kwok",),
)
COMPONENTS: Final = (ETCD, KUBERNETES, KWOK)

HELM_VERSION: Final = "v3.22.0"
# The k8s.io/client-go that helm is built with: an official build tells `helm template`
# and `helm lint` this Kubernetes version (1.<minor>) instead of helm's default, 1.20.
HELM_CLIENT_GO_VERSION: Final = "v0.37.0"
# Prometheus 3.X.Y is published as the Go module version v0.3XX.Y.
PROMETHEUS_MODULE_VERSION: Final = "v0.316.0"
PROMETHEUS_VERSION: Final = "3.16.0"
PROMETHEUS_OPERATOR_VERSION: Final = "v0.92.0"

_HELM_VERSION_PKG: Final = "helm.sh/helm/v3/internal/version"
_HELM_KUBE_MINOR: Final = HELM_CLIENT_GO_VERSION.split(".")[1]
_PROMETHEUS_VERSION_PKG: Final = "github.com/prometheus/common/version"

HELM: Final = Component(
    name="helm",
    version=HELM_VERSION,
    module_dir=GO_DIR / "helm",
    packages=("helm.sh/helm/v3/cmd/helm",),
    binaries=("helm",),
    # As helm's own Makefile does, so that `helm version` reports the release.
    ldflags=(
        f"-X {_HELM_VERSION_PKG}.version={HELM_VERSION}",
        f"-X {_HELM_VERSION_PKG}.gitTreeState=clean",
        *(
            f"-X helm.sh/helm/v3/pkg/{pkg}.k8sVersion{part}={value}"
            for pkg in ("chartutil", "lint/rules")
            for part, value in (("Major", "1"), ("Minor", _HELM_KUBE_MINOR))
        ),
    ),
)
PROMTOOL: Final = Component(
    name="promtool",
    version=PROMETHEUS_MODULE_VERSION,
    module_dir=GO_DIR / "promtool",
    packages=("github.com/prometheus/prometheus/cmd/promtool",),
    binaries=("promtool",),
    # As Prometheus's .promu.yml does, so that `promtool --version` reports the release.
    ldflags=(
        f"-X {_PROMETHEUS_VERSION_PKG}.Version={PROMETHEUS_VERSION}",
        f"-X {_PROMETHEUS_VERSION_PKG}.Branch=HEAD",
    ),
)
# Tools for the tests and for people, not for the cluster: `make up` does not wait for them.
TOOLS: Final = (HELM, PROMTOOL)

_CRD_DIR: Final = "example/prometheus-operator-crd"

# Applied to a test cluster so that a chart's ServiceMonitor and PrometheusRule
# are validated by the API server as they would be in a cluster running the operator.
PROMETHEUS_OPERATOR_CRDS: Final = ModuleFiles(
    name="prometheus-operator-crds",
    module="github.com/prometheus-operator/prometheus-operator",
    version=PROMETHEUS_OPERATOR_VERSION,
    sum="h1:tAbsod3+9sQsxDeAvLP27dAe9terToht5M+YdDwLGP0=",
    files=(
        f"{_CRD_DIR}/monitoring.coreos.com_servicemonitors.yaml",
        f"{_CRD_DIR}/monitoring.coreos.com_prometheusrules.yaml",
    ),
)
# Everything `make build` puts in the cache, so that a cold CI run builds it once.
EVERYTHING: Final[tuple[Pinned, ...]] = (*COMPONENTS, *TOOLS, PROMETHEUS_OPERATOR_CRDS)


def cache_root() -> Path:
    """Where built binaries live: outside the repo, so every clone shares them."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "agent-lifecycle-operator"
