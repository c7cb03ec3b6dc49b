"""The pinned releases of the local cluster, and where their binaries are cached.

The versions here must agree with the Go modules under ``localcluster/go``;
``tests/unit/test_localcluster_versions.py`` fails when they drift apart.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Final

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


def cache_root() -> Path:
    """Where built binaries live: outside the repo, so every clone shares them."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "agent-lifecycle-operator"
