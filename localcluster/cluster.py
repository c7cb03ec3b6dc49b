"""Bring the local cluster and Valkey up, and take them down again.

Start order follows the dependencies: etcd, then kube-apiserver (waits for
``/readyz``), then the controller manager and the scheduler (``/healthz``),
then kwok with one simulated node (waits for the node to be Ready and for the
``default`` ServiceAccount, so a Pod can be created at once). Valkey starts
first because nothing depends on it. If any step fails, everything started so
far is stopped again, so a failed ``up`` leaves nothing running.

All state lives in one directory (``.local/`` for ``make up``, a temporary one
for a test session): certificates, kubeconfigs, etcd's data, logs, and one
record per process in ``pids/``. ``down`` stops exactly the processes recorded
there, newest first.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import ssl
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Final

from localcluster import build, pki, procs, valkey, versions

log = logging.getLogger(__name__)

NODE_NAME: Final = "sim-node"
KWOK_NODE_ANNOTATION: Final = "kwok.x-k8s.io/node"
STAGES_FILE: Final = Path(__file__).resolve().parent / "kwok" / "stages.yaml"
READY_TIMEOUT: Final = 120.0
# Stop the newest first: kwok and the controllers before the API server, it before etcd.
STOP_ORDER: Final = (
    "kwok",
    "kube-scheduler",
    "kube-controller-manager",
    "kube-apiserver",
    "etcd",
    "valkey",
)


@dataclass(frozen=True)
class Layout:
    """Where one cluster keeps its state."""

    root: Path

    @property
    def pki(self) -> pki.Pki:
        return pki.Pki(self.root / "pki")

    @property
    def pids(self) -> Path:
        return self.root / "pids"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def kubeconfig(self) -> Path:
        return self.root / "kubeconfig"

    @property
    def env_file(self) -> Path:
        return self.root / "env"

    @property
    def info_file(self) -> Path:
        return self.root / "cluster.json"


@dataclass(frozen=True)
class Endpoints:
    """What a client needs to use a running cluster."""

    kubeconfig: Path
    server: str
    valkey_url: str

    def env_lines(self) -> str:
        lines = f"export KUBECONFIG={self.kubeconfig}\n"
        lines += f"export VALKEY_URL={self.valkey_url}\n" if self.valkey_url else ""
        # kubectl (from its wheel) and `kubectl agents` live beside this Python, in the venv;
        # helm and promtool in the cache, once `make build` has built them.
        path = [Path(sys.executable).parent, *(build.bin_dir(tool) for tool in versions.TOOLS)]
        return lines + f'export PATH="{":".join(map(str, path))}:$PATH"\n'


class ClusterError(RuntimeError):
    """The cluster could not be brought up or down; the message says what failed."""


# --- small HTTPS client for readiness checks (the cluster's own CA and certs) ---


def _tls(layout: Layout, client: pki.Identity | None = pki.ADMIN) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(layout.pki.ca_cert))
    if client is not None:
        ctx.load_cert_chain(layout.pki.client_cert(client), layout.pki.client_key(client))
    return ctx


def _request(
    url: str, ctx: ssl.SSLContext | None, method: str = "GET", body: dict[str, Any] | None = None
) -> tuple[int, bytes]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(  # noqa: S310 - the URL is ours, https or http on 127.0.0.1
        url, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=5) as resp:  # noqa: S310
            return int(resp.status), bytes(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except (urllib.error.URLError, ConnectionError, TimeoutError, ssl.SSLError):
        return 0, b""


def _ok(url: str, ctx: ssl.SSLContext | None) -> bool:
    return _request(url, ctx)[0] == 200


# --- up ---


def _bin(component: versions.Component, name: str) -> str:
    return str(build.binary(component, name))


def _start_etcd(layout: Layout) -> tuple[procs.Proc, str]:
    client, peer = procs.free_port(), procs.free_port()
    client_url, peer_url = f"http://127.0.0.1:{client}", f"http://127.0.0.1:{peer}"
    proc = procs.start(
        "etcd",
        [
            _bin(versions.ETCD, "etcd"),
            "--name=local",
            f"--data-dir={layout.root / 'etcd'}",
            f"--listen-client-urls={client_url}",
            f"--advertise-client-urls={client_url}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=local={peer_url}",
            "--log-level=warn",
            # A throwaway development store: skipping fsync makes every write much faster.
            "--unsafe-no-fsync=true",
        ],
        layout.logs,
        layout.pids,
    )
    procs.wait_ready(proc, lambda: _ok(f"{client_url}/health", None), "healthy", READY_TIMEOUT)
    return proc, client_url


def _start_apiserver(layout: Layout, etcd_url: str) -> tuple[procs.Proc, str]:
    p = layout.pki
    port = procs.free_port()
    server = f"https://127.0.0.1:{port}"
    proc = procs.start(
        "kube-apiserver",
        [
            _bin(versions.KUBERNETES, "kube-apiserver"),
            f"--etcd-servers={etcd_url}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={port}",
            f"--tls-cert-file={p.serving_cert}",
            f"--tls-private-key-file={p.serving_key}",
            f"--client-ca-file={p.ca_cert}",
            "--authorization-mode=Node,RBAC",
            # As kubeadm and managed clusters run it: privileged Pods are for each
            # namespace's Pod Security level to refuse, not for the whole API server.
            "--allow-privileged=true",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={p.sa_pub}",
            f"--service-account-signing-key-file={p.sa_key}",
            f"--service-cluster-ip-range={pki.SERVICE_CIDR}",
            # A loopback advertise address may not back the `kubernetes` Service's endpoints.
            "--endpoint-reconciler-type=none",
            "--profiling=false",
            "--v=1",
        ],
        layout.logs,
        layout.pids,
    )
    ctx = _tls(layout)
    procs.wait_ready(proc, lambda: _ok(f"{server}/readyz", ctx), "ready (/readyz)", READY_TIMEOUT)
    return proc, server


def _start_control_loop(
    layout: Layout, name: str, who: pki.Identity, extra: list[str]
) -> procs.Proc:
    p = layout.pki
    kubeconfig = p.kubeconfig(who)
    port = procs.free_port()
    return procs.start(
        name,
        [
            _bin(versions.KUBERNETES, name),
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--bind-address=127.0.0.1",
            f"--secure-port={port}",
            f"--tls-cert-file={p.serving_cert}",
            f"--tls-private-key-file={p.serving_key}",
            "--leader-elect=false",
            "--v=1",
            *extra,
        ],
        layout.logs,
        layout.pids,
    )


def _start_controllers(layout: Layout) -> list[procs.Proc]:
    p = layout.pki
    manager = _start_control_loop(
        layout,
        "kube-controller-manager",
        pki.CONTROLLER_MANAGER,
        [
            f"--service-account-private-key-file={p.sa_key}",
            f"--root-ca-file={p.ca_cert}",
            f"--cluster-signing-cert-file={p.ca_cert}",
            f"--cluster-signing-key-file={p.ca_key}",
            "--use-service-account-credentials=true",
            f"--service-cluster-ip-range={pki.SERVICE_CIDR}",
        ],
    )
    scheduler = _start_control_loop(layout, "kube-scheduler", pki.SCHEDULER, [])
    ctx = _tls(layout, client=None)
    for proc in (manager, scheduler):
        port = next(a.split("=", 1)[1] for a in proc.argv if a.startswith("--secure-port="))
        healthz = f"https://127.0.0.1:{port}/healthz"
        procs.wait_ready(proc, partial(_ok, healthz, ctx), "healthy (/healthz)", READY_TIMEOUT)
    return [manager, scheduler]


def _start_kwok(layout: Layout, server: str) -> procs.Proc:
    ctx = _tls(layout)
    node = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": NODE_NAME,
            "annotations": {KWOK_NODE_ANNOTATION: "fake"},
            "labels": {
                "kubernetes.io/hostname": NODE_NAME,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "type": "kwok",
            },
        },
    }
    status, body = _request(f"{server}/api/v1/nodes", ctx, "POST", node)
    if status not in (201, 409):
        raise ClusterError(f"creating node {NODE_NAME} failed: HTTP {status} {body[:300]!r}")
    proc = procs.start(
        "kwok",
        [
            _bin(versions.KWOK, "kwok"),
            f"--kubeconfig={layout.pki.kubeconfig(pki.KWOK)}",
            f"--config={STAGES_FILE}",
            "--manage-all-nodes=false",
            f"--manage-nodes-with-annotation-selector={KWOK_NODE_ANNOTATION}=fake",
            "--node-lease-duration-seconds=40",
            "--cidr=10.244.0.0/16",
            "--node-ip=10.0.0.1",
        ],
        layout.logs,
        layout.pids,
    )

    def node_ready() -> bool:
        status, body = _request(f"{server}/api/v1/nodes/{NODE_NAME}", ctx)
        if status != 200:
            return False
        conditions = json.loads(body).get("status", {}).get("conditions", [])
        return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)

    def default_service_account() -> bool:
        url = f"{server}/api/v1/namespaces/default/serviceaccounts/default"
        return _request(url, ctx)[0] == 200

    procs.wait_ready(proc, node_ready, f"serving a Ready node {NODE_NAME}", READY_TIMEOUT)
    procs.wait_ready(
        proc, default_service_account, "seeing the default ServiceAccount", READY_TIMEOUT
    )
    return proc


def running(layout: Layout) -> list[procs.Proc]:
    """The recorded processes of this layout that are still alive."""
    if not layout.pids.is_dir():
        return []
    recorded = [procs.Proc.load(path) for path in sorted(layout.pids.glob("*.json"))]
    return [proc for proc in recorded if procs.is_alive(proc)]


def endpoints(layout: Layout) -> Endpoints | None:
    """The endpoints of a cluster that is up and complete in ``layout``, else None."""
    if not layout.info_file.is_file():
        return None
    info = json.loads(layout.info_file.read_text())
    alive = {proc.name for proc in running(layout)}
    if not set(info["processes"]) <= alive:
        return None
    return Endpoints(Path(info["kubeconfig"]), info["server"], info["valkey_url"])


def up(layout: Layout, valkey_url: str | None = None, start_valkey: bool = True) -> Endpoints:
    """Start the cluster, and Valkey unless ``valkey_url`` is given; return its endpoints.

    Idempotent: a cluster already up in ``layout`` is returned as it is. With
    ``start_valkey=False`` and no URL, the endpoints carry no Valkey at all.
    """
    existing = endpoints(layout)
    if existing is not None:
        log.info("the cluster in %s is already up", layout.root)
        return existing
    if running(layout):
        # Half a cluster from an interrupted run: clear it before starting afresh.
        down(layout)
    build.ensure_built()
    for stale in ("etcd", "pki", "pids", "valkey"):
        shutil.rmtree(layout.root / stale, ignore_errors=True)
    layout.info_file.unlink(missing_ok=True)
    layout.root.mkdir(parents=True, exist_ok=True)
    pki.generate(layout.pki)
    started = time.monotonic()
    try:
        names = []
        if valkey_url is None and start_valkey:
            valkey_proc, valkey_url = valkey.start(layout.root)
            names.append(valkey_proc.name)
        etcd, etcd_url = _start_etcd(layout)
        apiserver, server = _start_apiserver(layout, etcd_url)
        for who in pki.IDENTITIES:
            pki.write_kubeconfig(layout.pki, who, server)
        controllers = _start_controllers(layout)
        kwok = _start_kwok(layout, server)
        names += [etcd.name, apiserver.name, *(c.name for c in controllers), kwok.name]
    except BaseException:
        down(layout)
        raise
    kubeconfig = pki.write_kubeconfig(layout.pki, pki.ADMIN, server, layout.kubeconfig)
    result = Endpoints(kubeconfig.resolve(), server, valkey_url or "")
    layout.info_file.write_text(
        json.dumps(
            {
                "kubeconfig": str(result.kubeconfig),
                "server": server,
                "valkey_url": valkey_url,
                "processes": names,
                "kubernetes": versions.KUBERNETES_VERSION,
            },
            indent=2,
        )
    )
    layout.env_file.write_text(result.env_lines())
    log.info("cluster up in %.1f s: %s", time.monotonic() - started, server)
    return result


def down(layout: Layout) -> list[str]:
    """Stop every process recorded in ``layout``; return the names of those that were running."""
    if not layout.pids.is_dir():
        return []
    recorded = {proc.name: proc for proc in map(procs.Proc.load, layout.pids.glob("*.json"))}
    order = [n for n in STOP_ORDER if n in recorded] + sorted(set(recorded) - set(STOP_ORDER))
    stopped = []
    for name in order:
        proc = recorded[name]
        if procs.is_alive(proc):
            procs.stop(proc)
            stopped.append(name)
        (layout.pids / f"{name}.json").unlink(missing_ok=True)
    layout.info_file.unlink(missing_ok=True)
    layout.env_file.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        layout.pids.rmdir()
    return stopped


def default_layout() -> Layout:
    """``.local/`` of the repository, or ``$LOCAL_DIR`` when set."""
    return Layout(Path(os.environ.get("LOCAL_DIR", ".local")).resolve())
