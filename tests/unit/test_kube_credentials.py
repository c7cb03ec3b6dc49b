"""Token credentials (a kubeconfig's, the in-cluster ServiceAccount's) reach the API server."""

from __future__ import annotations

from pathlib import Path

import kubernetes
import yaml

from controller import kube


def token_kubeconfig(path: Path, token: str) -> Path:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "c",
                "cluster": {"server": "https://127.0.0.1:6443", "insecure-skip-tls-verify": True},
            }
        ],
        "users": [{"name": "u", "user": {"token": token}}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "x",
    }
    path.write_text(yaml.safe_dump(config))
    return path


def test_a_kubeconfig_token_is_sent_as_a_bearer_token(tmp_path: Path) -> None:
    config = kube.load_config(str(token_kubeconfig(tmp_path / "config", "s3cr3t")))
    assert kube.bearer_token(config) == "Bearer s3cr3t"
    assert kube.Kube(config)._headers("application/json")["Authorization"] == "Bearer s3cr3t"


def test_a_token_under_the_older_key_is_found_too() -> None:
    config = kubernetes.client.Configuration()
    config.api_key["authorization"] = "Bearer old"
    assert kube.bearer_token(config) == "Bearer old"


def test_without_a_token_no_authorization_header_is_sent() -> None:
    config = kubernetes.client.Configuration()
    assert kube.bearer_token(config) is None
    assert "Authorization" not in kube.Kube(config)._headers("application/json")
