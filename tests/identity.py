"""deploy/'s ServiceAccount as an identity the tests run the operator under.

The RBAC objects are rendered from ``deploy/`` by kustomize, never copied by hand,
under names of one test session's own (kustomize's ``namespace`` and
``nameSuffix``; the rules are untouched), so that sessions sharing a ``make up``
cluster never change or delete each other's grants. A token for the
ServiceAccount comes from the TokenRequest API (``kubectl create token``); a
kubeconfig holds it with the cluster's address and CA. An operator started with
that kubeconfig can do exactly what the ClusterRole and Role allow.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import yaml

REPO: Final = Path(__file__).resolve().parent.parent
DEPLOY: Final = REPO / "deploy"
# What an operator's identity is made of; the Deployment, CRDs and the rest are not applied.
KINDS: Final = frozenset(
    {"Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}
)
TOKEN_DURATION: Final = "4h"
COMPONENT: Final = "app.kubernetes.io/component"
PEOPLE: Final = "roles-for-people"


@dataclass(frozen=True)
class Identity:
    namespace: str
    service_account: str
    kubeconfig: Path
    objects: tuple[dict[str, Any], ...]

    @property
    def username(self) -> str:
        """The name the API server knows the ServiceAccount by (``kubectl --as=...``)."""
        return f"system:serviceaccount:{self.namespace}:{self.service_account}"

    def rules(self, kind: str) -> list[dict[str, Any]]:
        """The rules of the (one) ClusterRole or Role in ``objects``."""
        (role,) = (obj for obj in self.objects if obj["kind"] == kind)
        rules: list[dict[str, Any]] = role["rules"]
        return rules


def render(kubectl: str, workdir: Path, session: str) -> list[dict[str, Any]]:
    """deploy/'s Namespace and RBAC objects, rendered by ``kubectl kustomize`` for ``session``."""
    overlay = workdir / "identity-overlay"
    overlay.mkdir(parents=True, exist_ok=True)
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "namespace": f"alo-{session}",
        "nameSuffix": f"-{session}",
        # kustomize takes other kustomization folders by relative path only.
        "resources": [os.path.relpath(DEPLOY, overlay)],
    }
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    rendered = subprocess.run(
        [kubectl, "kustomize", str(overlay)], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    return [
        doc
        for doc in yaml.safe_load_all(rendered)
        if doc
        and doc["kind"] in KINDS
        # The roles for people (deploy/base/roles.yaml) are no part of the operator's identity.
        and (doc["metadata"].get("labels") or {}).get(COMPONENT) != PEOPLE
    ]


def service_account(objects: list[dict[str, Any]]) -> tuple[str, str]:
    """(namespace, name) of the one ServiceAccount among ``objects``."""
    (account,) = (obj for obj in objects if obj["kind"] == "ServiceAccount")
    return account["metadata"]["namespace"], account["metadata"]["name"]


def write_kubeconfig(admin_view: str, token: str, path: Path, namespace: str) -> Path:
    """A kubeconfig for ``token`` on the cluster of ``admin_view``.

    ``admin_view`` is ``kubectl config view --raw --minify -o json`` of the admin's
    kubeconfig: its cluster entry (address and CA) is reused, its credentials never.
    """
    cluster = json.loads(admin_view)["clusters"][0]["cluster"]
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "local", "cluster": cluster}],
        "users": [{"name": "operator", "user": {"token": token}}],
        "contexts": [
            {
                "name": "operator",
                "context": {"cluster": "local", "user": "operator", "namespace": namespace},
            }
        ],
        "current-context": "operator",
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path
