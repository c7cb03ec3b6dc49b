"""The one module that talks to the Kubernetes API directly.

Credentials come from ``KUBECONFIG`` (or ``~/.kube/config``) and, inside a
cluster, from the Pod's service account, in that order of preference.
"""

from __future__ import annotations

from dataclasses import dataclass

import kubernetes
import urllib3


class KubernetesUnavailable(RuntimeError):
    """No credentials, or the API server does not answer; the message says which."""


@dataclass(frozen=True)
class ServerInfo:
    host: str
    version: str


def load_config(kubeconfig: str | None) -> kubernetes.client.Configuration:
    """The kubeconfig (``KUBECONFIG``, else ``~/.kube/config``), then in-cluster credentials."""
    try:
        kubernetes.config.load_kube_config(config_file=kubeconfig or None)
    except (kubernetes.config.ConfigException, FileNotFoundError, TypeError) as kube_exc:
        try:
            kubernetes.config.load_incluster_config()
        except kubernetes.config.ConfigException:
            raise KubernetesUnavailable(
                f"no Kubernetes credentials: no usable kubeconfig ({kube_exc}) "
                "and not running in a cluster"
            ) from None
    config: kubernetes.client.Configuration = kubernetes.client.Configuration.get_default_copy()
    return config


def server_info(config: kubernetes.client.Configuration) -> ServerInfo:
    """Ask the API server for its version: proves the address and credentials work."""
    try:
        with kubernetes.client.ApiClient(config) as api:
            code = kubernetes.client.VersionApi(api).get_code(_request_timeout=10)
    except (urllib3.exceptions.HTTPError, kubernetes.client.ApiException, OSError) as exc:
        raise KubernetesUnavailable(
            f"cannot reach the Kubernetes API at {config.host}: {exc}"
        ) from None
    return ServerInfo(host=str(config.host), version=str(code.git_version))
