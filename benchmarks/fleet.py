"""The operator beside a bare client doing the same writes, in one run: kills, bursts, mirror lag.

Each measure runs twice on the same cluster, one after the other: once through the
operator, once through a bare asyncio client (``Floor``) that sends the requests the
operator sends per agent, at the operator's concurrency (its 40 workers, at most 16
on new agents, observed changes served first: ``Places``), with every body computed
beforehand. The ratio of the two is the operator's overhead; the floor is what the
API server, etcd and kwok cost on this machine.

- kill N: N running agents; a Killswitch (operator) or the bare requests (floor):
  per agent the status PATCH that records the kill under way, the Pod's DELETE with
  the agent's grace period, and once the Pod is gone the status PATCH to Killed and
  its Event. Timed until every Pod is gone and every status says Killed.
- burst N: N agents through 2-second lives. Operator: apply them; the run ends when
  the last status says Completed. Floor: the same Agents created, then per agent the
  finalizer PATCH, the status PATCH to Spawning, its Event and the Pod's POST; as the
  Pod watch shows each Pod start and finish, the status PATCH and the Event of that
  transition. Both are watched by ``benchmarks.observe`` in a process of its own,
  which sees the end and times every change.
- mirror lag (in each burst): a Pod change seen by the observer's watch -> its event
  on the Valkey channel (p50, p99, max), and its parts (-> the status seen, -> the
  event); beside it the API server's own p99 for a status PATCH in the same burst
  (from its /metrics), and the floor's own lag, its Pod change -> its status seen,
  timed the same way. Also the operator's peak RSS and CPU seconds per 1000 lives.

Usage: ``make bench`` or ``python -m benchmarks.fleet [--kill 10,100,1000] [--burst 1000]
[--rounds 3] [--keep DIR] [--profile]``.
Uses the ``make up`` cluster when one is up, else starts one of its own (and stops
it); always a Valkey of its own. Figures only, never a pass or fail.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import datetime
import functools
import json
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kubernetes
import redis

from benchmarks import observe
from controller import app, kube, lifecycle, models, status, workload
from localcluster import cluster as localcluster
from localcluster import procs
from localcluster import valkey as localvalkey

REPO = Path(__file__).resolve().parent.parent
GROUP = "/apis/orchestrator.mosaicstack.dev/v1alpha1"
SIM = "sim.orchestrator.mosaicstack.dev/run-for"
KUBECTL = str(Path(sys.executable).parent / "kubectl")
# The operator runs as the image runs it: beside the image's dependencies only.
RUNTIME = REPO / ".local" / "runtime"
LOCK = REPO / "image" / "requirements.lock"


# --- the cluster side ---


def agent(namespace: str, i: int, run_for: str | None = None) -> dict[str, Any]:
    template: dict[str, Any] = {
        "spec": {"containers": [{"name": "agent", "image": "registry.example/a:1"}]}
    }
    if run_for:
        template["metadata"] = {"annotations": {SIM: run_for}}
    return {
        "apiVersion": models.API_VERSION,
        "kind": "Agent",
        "metadata": {"name": f"agent-{i:05d}", "namespace": namespace, "labels": {"b": namespace}},
        "spec": {"taskId": f"TASK-{i}", "template": template},
    }


async def until(check: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    began = time.monotonic()
    said = began
    while not await check():
        now = time.monotonic()
        if now > began + timeout:
            raise TimeoutError(f"{what} did not happen within {timeout:g} s")
        if now - said > 30:
            print(f"  ... still waiting for {what} ({now - began:.0f} s)", file=sys.stderr)
            said = now
        await asyncio.sleep(0.2)


async def items(api: kube.Kube, path: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = (await api.request("GET", path))["items"]
    return found


async def phases(api: kube.Kube, namespace: str) -> list[str]:
    listed = await items(api, f"{GROUP}/namespaces/{namespace}/agents")
    return [(i.get("status") or {}).get("phase", "") for i in listed]


async def create_all(api: kube.Kube, bodies: list[dict[str, Any]], path: str) -> None:
    for start in range(0, len(bodies), 50):
        await asyncio.gather(*(api.request("POST", path, b) for b in bodies[start : start + 50]))


@dataclass
class Operator:
    process: subprocess.Popen[bytes]
    log: Path

    def metrics(self) -> str:
        """Its /metrics (the port it logged at start-up)."""
        found = re.search(r"/metrics on ([\d.]+:\d+)", self.log.read_text(errors="replace"))
        if found is None:
            return ""
        with urllib.request.urlopen(f"http://{found.group(1)}/metrics", timeout=10) as answer:
            text: str = answer.read().decode()
            return text

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def peak_rss_mib(self) -> float:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


def killswitch_body(name: str, labels: dict[str, str]) -> dict[str, Any]:
    """An engaged Killswitch over the agents labelled ``labels``."""
    return {
        "apiVersion": models.API_VERSION,
        "kind": "Killswitch",
        "metadata": {"name": name},
        "spec": {"engaged": True, "reason": "benchmark", "agentSelector": {"matchLabels": labels}},
    }


@functools.cache
def runtime_python() -> Path:
    """A Python with the image's dependencies only (image/requirements.lock, by uv), made
    once per lock and checked once per run. Not the development venv: kopf imports the
    tests' `kubernetes` client whenever it is installed, 14 MiB the shipped operator does
    not carry."""
    python = RUNTIME / "bin" / "python"
    stamp = RUNTIME / "requirements.lock"
    lock = LOCK.read_text()
    if not (python.exists() and stamp.exists() and stamp.read_text() == lock):
        uv = str(Path(sys.executable).parent / "uv")
        subprocess.run(
            [uv, "venv", "--quiet", "--clear", "--python", sys.executable, RUNTIME], check=True
        )
        subprocess.run(
            [
                uv,
                "pip",
                "install",
                "--quiet",
                "--compile-bytecode",
                "--python",
                python,
                "--require-hashes",
                "-r",
                LOCK,
            ],
            check=True,
        )
        stamp.write_text(lock)
    # The operator's own bytecode too, as the image has it: compiling at start-up costs
    # memory that stays, and the caller may run with PYTHONDONTWRITEBYTECODE.
    subprocess.run([python, "-m", "compileall", "-q", REPO / "controller"], check=True)
    return python


def start_operator(env: dict[str, str], valkey_url: str, namespace: str, tmp: Path) -> Operator:
    log = tmp / f"{namespace}-operator.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            # From the repository's root: `-m controller` finds the working tree's package.
            [runtime_python(), "-m", "controller", "run"],
            env={
                **env,
                "VALKEY_URL": valkey_url,
                "WATCH_NAMESPACES": namespace,
                "HTTP_HOST": "127.0.0.1",
                "HTTP_PORT": "0",
            },
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )
    operator = Operator(process, log)
    deadline = time.monotonic() + 60
    while "ready; watching agents" not in log.read_text(errors="replace"):
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the operator did not start:\n{log.read_text()}")
        time.sleep(0.1)
    return operator


@dataclass
class PodWatch:
    """A watch of one namespace's Pods in a thread: when each Pod was seen running, finished
    and gone (monotonic seconds)."""

    api: kube.Kube
    namespace: str
    running: dict[str, float] = field(default_factory=dict)
    finished: dict[str, float] = field(default_factory=dict)
    gone: dict[str, float] = field(default_factory=dict)
    on_change: Callable[[str, str, dict[str, Any]], None] | None = None
    _stop: threading.Event = field(default_factory=threading.Event)

    _ready: threading.Event = field(default_factory=threading.Event)

    def start(self) -> None:
        """Follow from now on: returns once the listing is taken, so no change after it is
        missed (a watch that connects late would miss what happened meanwhile)."""
        threading.Thread(target=self._follow, daemon=True).start()
        if not self._ready.wait(30):
            raise TimeoutError(f"the Pod watch of {self.namespace} did not start")

    def stop(self) -> None:
        self._stop.set()

    def _follow(self) -> None:
        # Once stopped, left blocked on a quiet watch until its connection closes (a daemon).
        core = kubernetes.client.CoreV1Api(observe.kube_client(self.api.config.kubeconfig))
        observe.follow(
            core.list_namespaced_pod, (self.namespace,), self._ready, self._seen, self._stop.is_set
        )

    def _seen(self, kind: str, pod: dict[str, Any]) -> None:
        if kind == observe.LISTED:
            return  # changes from now on
        name, now = pod["metadata"]["name"], time.monotonic()
        phase = (pod.get("status") or {}).get("phase", "Pending")
        if kind == "DELETED":
            self.gone.setdefault(name, now)
            change = "gone"
        elif phase == "Running" and name not in self.running:
            self.running[name] = now
            change = "running"
        elif phase in ("Succeeded", "Failed") and name not in self.finished:
            self.finished[name] = now
            change = "finished"
        else:
            return
        if self.on_change is not None:
            self.on_change(change, name, pod)


class Observer:
    """``benchmarks.observe`` in a process of its own (see there): the burst's clock and eyes."""

    def __init__(self, env: dict[str, str], namespace: str, count: int, valkey: str, tmp: Path):
        self.out = tmp / f"{namespace}-observed.json"
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "benchmarks.observe",
                "--kubeconfig",
                env["KUBECONFIG"],
                "--namespace",
                namespace,
                "--count",
                str(count),
                "--valkey",
                valkey,
                "--out",
                str(self.out),
            ],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )
        self._lines, self._stdin = self.process.stdout, self.process.stdin
        if self._lines is None or self._stdin is None or self._lines.readline() != "ready\n":
            self.process.kill()
            raise RuntimeError(f"the observer of {namespace} did not start")

    async def done(self, timeout: float = 1800) -> float:
        """When (``time.time()``) the last Agent was seen Completed."""
        reading = asyncio.to_thread(self._lines.readline)  # type: ignore[union-attr]
        line = await asyncio.wait_for(reading, timeout)
        if not line.startswith("done "):
            raise RuntimeError(f"the observer stopped before the end: {line!r}")
        return float(line.split()[1])

    def stop(self) -> dict[str, dict[str, dict[str, float]]]:
        """What it saw (``benchmarks.observe``'s JSON); the process is ended."""
        self._stdin.close()  # type: ignore[union-attr]
        try:
            self.process.wait(timeout=60)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
        seen: dict[str, dict[str, dict[str, float]]] = json.loads(self.out.read_text())
        return seen


async def new_namespace(api: kube.Kube, prefix: str) -> str:
    namespace = f"{prefix}-{uuid.uuid4().hex[:6]}"
    await api.request("POST", "/api/v1/namespaces", {"metadata": {"name": namespace}})

    async def ready() -> bool:
        with contextlib.suppress(kube.NotFound):
            await api.request("GET", f"/api/v1/namespaces/{namespace}/serviceaccounts/default")
            return True
        return False

    await until(ready, 60, f"namespace {namespace}")
    return namespace


async def drop_namespace(api: kube.Kube, namespace: str) -> None:
    for item in await items(api, f"{GROUP}/namespaces/{namespace}/agents"):
        path = f"{GROUP}/namespaces/{namespace}/agents/{item['metadata']['name']}"
        with contextlib.suppress(kube.ApiError):
            await api.request("PATCH", path, {"metadata": {"finalizers": None}}, kube.MERGE_PATCH)
    with contextlib.suppress(kube.ApiError):
        await api.request("DELETE", f"/api/v1/namespaces/{namespace}")

    async def gone() -> bool:
        try:
            await api.request("GET", f"/api/v1/namespaces/{namespace}")
        except kube.NotFound:
            return True
        return False

    # Its Pods, Agents and Events deleted by the cluster in the background would weigh on
    # whatever is measured next.
    await until(gone, 600, f"namespace {namespace} to be deleted")


# --- the floor: the operator's requests, from a bare client ---


class Places:
    """The operator's concurrency for a bare client: ``total`` requests at once, at most
    ``slow`` of them for new work, and urgent requests (an observed change, a kill) served
    before the others waiting, as the operator's work queue hands out its urgent lane first."""

    def __init__(self, total: int, slow: int) -> None:
        self.free, self.slow_free = total, slow
        self.waiting: dict[bool, collections.deque[asyncio.Future[None]]] = {
            True: collections.deque(),
            False: collections.deque(),
        }

    @contextlib.asynccontextmanager
    async def __call__(self, urgent: bool) -> AsyncIterator[None]:
        if self._open(urgent) and not self.waiting[True] and not self.waiting[urgent]:
            self._take(urgent)
        else:
            place = asyncio.get_running_loop().create_future()
            self.waiting[urgent].append(place)
            await place  # taken for it by whoever handed it on
        try:
            yield
        finally:
            self.free += 1
            self.slow_free += not urgent
            for lane in (True, False):
                while self.waiting[lane] and self._open(lane):
                    self._take(lane)
                    self.waiting[lane].popleft().set_result(None)

    def _open(self, urgent: bool) -> bool:
        return self.free > 0 and (urgent or self.slow_free > 0)

    def _take(self, urgent: bool) -> None:
        self.free -= 1
        self.slow_free -= not urgent


class Floor:
    """The operator's writes for one agent, bodies computed by the operator's own pure code
    beforehand, sent with no store, no queue, no decision: what they cost the API alone.
    A pass's requests are sent holding one place (``gate``), as the operator's pass holds
    its worker."""

    def __init__(self, api: kube.Kube) -> None:
        self.api = api
        self.gate = Places(app.AGENT_WORKERS, app.AGENT_SLOW_LIMIT)

    def path(self, agent: models.Agent) -> str:
        return f"{GROUP}/namespaces/{agent.metadata.namespace}/agents/{agent.metadata.name}"

    async def write_status(self, agent: models.Agent, new: models.AgentStatus) -> models.Agent:
        body = {
            "metadata": {"resourceVersion": agent.metadata.resource_version},
            "status": new.model_dump(by_alias=True, mode="json", exclude_none=True),
        }
        written = await self.api.request(
            "PATCH", self.path(agent) + "/status", body, kube.MERGE_PATCH
        )
        return models.Agent.model_validate(written)

    async def transition(
        self, agent: models.Agent, to: lifecycle.Phase, reason: str, at: datetime.datetime
    ) -> models.Agent:
        step = lifecycle.Transition(to, at, reason)
        life = agent.status.life().advance(step)
        after = status.after(agent.status, step, life, agent.metadata.generation, at)
        agent = await self.write_status(agent, after)
        await self.api.post_event(agent.model_dump(by_alias=True), "Normal", to, reason)
        return agent


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


async def floor_kill(api: kube.Kube, namespace: str, grace: int) -> Callable[[], Awaitable[None]]:
    """What the operator sends per killed agent, at its concurrency: the reads and the watch
    are made here, untimed (the operator has its store and watches before the switch); the
    returned coroutine function sends the kills."""
    floor = Floor(api)
    listed = [
        models.Agent.model_validate(i)
        for i in await items(api, f"{GROUP}/namespaces/{namespace}/agents")
    ]
    pods = {
        p["metadata"]["name"]: p["metadata"]["uid"]
        for p in await items(api, f"/api/v1/namespaces/{namespace}/pods")
    }
    stopping = models.Stopping(reason=lifecycle.Reason.KILLSWITCH_ENGAGED, message="benchmark")

    async def one(agent: models.Agent) -> None:
        pod_name = workload.pod_name(agent)
        async with floor.gate(urgent=True):  # the pass that sees the kill
            agent = await floor.write_status(
                agent, agent.status.model_copy(update={"stopping": stopping})
            )
            with contextlib.suppress(kube.NotFound, kube.Conflict):
                await api.delete_pod(namespace, pod_name, grace, pods[pod_name])
        await gone[pod_name].wait()
        async with floor.gate(urgent=True):  # the pass that sees the Pod gone
            await floor.transition(
                agent, lifecycle.Phase.KILLED, lifecycle.Reason.KILLSWITCH_ENGAGED, _now()
            )

    loop = asyncio.get_running_loop()
    gone = {name: asyncio.Event() for name in pods}

    def pod_changed(change: str, name: str, _: dict[str, Any]) -> None:
        if change == "gone" and name in gone:
            loop.call_soon_threadsafe(gone[name].set)

    watch = PodWatch(api, namespace, on_change=pod_changed)
    watch.start()

    async def kill_all() -> None:
        try:
            await asyncio.gather(*(one(a) for a in listed))
        finally:
            watch.stop()

    return kill_all


async def floor_burst(api: kube.Kube, namespace: str, count: int, run_for: str) -> None:
    """What the operator sends per agent through a short life, driven by a Pod watch. The
    Agents are created as the operator's run creates them (50 at a time, the user's apply,
    not the operator's work); then per agent, at the operator's concurrency, in one slow
    place: the finalizer PATCH, the fresh GET and the Killswitch LIST made before a Pod,
    the status PATCH to Spawning and its Event, the Pod's POST, the status PATCH that notes
    the Pod; and as the Pod watch shows it start and finish, in an urgent place each, that
    transition's status PATCH and Event."""
    floor = Floor(api)
    done: dict[str, asyncio.Event] = {}
    started: dict[str, asyncio.Event] = {}
    loop = asyncio.get_running_loop()

    def seen(change: str, name: str, _: dict[str, Any]) -> None:
        target = {"running": started, "finished": done}.get(change, {})
        if name in target:
            loop.call_soon_threadsafe(target[name].set)

    async def one(created: dict[str, Any]) -> None:
        meta = created["metadata"]
        path = f"{GROUP}/namespaces/{namespace}/agents/{meta['name']}"
        finalizer = {
            "metadata": {
                "resourceVersion": meta["resourceVersion"],
                "finalizers": [models.FINALIZER],
            }
        }
        async with floor.gate(urgent=False):  # the spawning pass, a new agent's
            patched = await api.request("PATCH", path, finalizer, kube.MERGE_PATCH)
            await api.request("GET", path)
            await api.request("GET", f"{GROUP}/killswitches")
            current = await floor.transition(
                models.Agent.model_validate(patched),
                lifecycle.Phase.SPAWNING,
                lifecycle.Reason.CREATED,
                _now(),
            )
            pod = workload.render(current)
            name = pod["metadata"]["name"]
            started[name], done[name] = asyncio.Event(), asyncio.Event()
            await api.create_pod(pod)
            current = await floor.write_status(
                current, current.status.model_copy(update={"pod_name": name})
            )
        # The Pod's changes: urgent passes, as the operator's queue has them.
        await started[name].wait()
        async with floor.gate(urgent=True):
            current = await floor.transition(
                current, lifecycle.Phase.RUNNING, lifecycle.Reason.STARTED, _now()
            )
        await done[name].wait()
        async with floor.gate(urgent=True):
            await floor.transition(
                current, lifecycle.Phase.COMPLETED, lifecycle.Reason.COMPLETED, _now()
            )

    watch = PodWatch(api, namespace, on_change=seen)
    watch.start()
    path = f"{GROUP}/namespaces/{namespace}/agents"
    try:
        lives = []
        for start in range(0, count, 50):
            batch = [agent(namespace, i, run_for) for i in range(start, min(count, start + 50))]
            for created in await asyncio.gather(*(api.request("POST", path, b) for b in batch)):
                lives.append(asyncio.create_task(one(created)))
        await asyncio.gather(*lives)
    finally:
        watch.stop()


# --- where the operator's time goes ---


class Profile:
    """py-spy sampling the operator (``--profile``): the functions it spends its CPU in, by
    self time, from py-spy's collapsed stacks."""

    def __init__(self, pid: int, out: Path) -> None:
        self.out = out
        self.process = subprocess.Popen(
            [
                *(str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(pid)),
                *("--format", "raw", "--rate", "200", "--nonblocking", "--output", str(out)),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    # Where a sample's time goes, by the first of these found in its stack, innermost first.
    PARTS = (
        ("controller/mirroring.py", "the mirror controller (its queue, Valkey writes)"),
        ("controller/agents.py", "the agents' passes (decisions, status writes, Pods, Events)"),
        ("controller/killswitches.py", "the killswitch controller"),
        ("kopf/_core/reactor/processing.py", "kopf: each event's processing, our intake"),
        ("kopf/_cogs/clients/watching.py", "kopf: the watch streams (reading, decoding)"),
        ("kopf/", "kopf: the rest (its per-object queues and workers)"),
        ("redis/", "the Valkey client, reading replies"),
        ("aiohttp/", "HTTP, reading responses and watch streams (aiohttp)"),
        ("sslproto.py", "TLS"),
        ("selectors.py", "waiting for I/O (epoll)"),
    )

    def stop(self) -> list[tuple[str, int]]:
        """py-spy's samples: (collapsed stack, count)."""
        self.process.send_signal(2)  # SIGINT: py-spy writes its file and exits
        self.process.wait(timeout=60)
        samples = []
        for line in self.out.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if stack:
                samples.append((stack, int(count)))
        return samples

    @staticmethod
    def top(samples: list[tuple[str, int]], count: int = 15) -> list[str]:
        """The functions by self time."""
        by_function: dict[str, int] = {}
        for stack, n in samples:
            leaf = stack.rsplit(";", 1)[-1]
            by_function[leaf] = by_function.get(leaf, 0) + n
        total = sum(by_function.values())
        ranked = sorted(by_function.items(), key=lambda item: -item[1])[:count]
        return [f"{100 * n / total:5.1f} %  {name}" for name, n in ranked]

    @classmethod
    def parts(cls, samples: list[tuple[str, int]]) -> list[str]:
        """The time by part of the operator (``PARTS``), callees included."""
        by_part: dict[str, int] = {}
        for stack, n in samples:
            frames = stack.split(";")
            part = next(
                (name for path, name in cls.PARTS if any(path in f for f in frames)),
                "the rest (the event loop's own work, start-up, leases, probes)",
            )
            by_part[part] = by_part.get(part, 0) + n
        total = sum(by_part.values())
        ranked = sorted(by_part.items(), key=lambda item: -item[1])
        return [f"{100 * n / total:5.1f} %  {name}" for name, n in ranked]


# --- the API server's own figure ---


def series(text: str, name: str) -> Iterator[tuple[dict[str, str], float]]:
    """The labels and value of each series of the Prometheus metric ``name`` in ``text``."""
    for line in text.splitlines():
        if line.startswith(f"{name}{{"):
            labels = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}", 1)[0]))
            yield labels, float(line.rsplit(" ", 1)[1])


def histogram(text: str, name: str, **wanted: str) -> dict[float, float]:
    """Cumulative bucket counts of the Prometheus histogram ``name`` in ``text``, summed over
    the series whose labels have the ``wanted`` values (``verb="PATCH"``)."""
    buckets: dict[float, float] = {}
    for labels, value in series(text, f"{name}_bucket"):
        if all(labels.get(k) == v for k, v in wanted.items()):
            bound = float(labels["le"])  # float() reads "+Inf" too
            buckets[bound] = buckets.get(bound, 0.0) + value
    return buckets


def api_metrics(env: dict[str, str]) -> str:
    """The API server's /metrics."""
    return subprocess.run(
        [KUBECTL, "get", "--raw", "/metrics"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def status_patch_histogram(text: str) -> dict[float, float]:
    """Cumulative counts of the API server's PATCH agents/status latency buckets."""
    return histogram(
        text,
        "apiserver_request_duration_seconds",
        resource="agents",
        subresource="status",
        verb="PATCH",
    )


COUNTED = ("agents", "pods", "events", "killswitches")


def requests_made(text: str) -> collections.Counter[str]:
    """The API server's requests so far by ``VERB resource[/subresource]``, for the kinds an
    agent's life touches (every client's: the operator's or the floor's, kwok's, the
    scheduler's, the controller manager's, the watches here)."""
    counts: collections.Counter[str] = collections.Counter()
    for labels, value in series(text, "apiserver_request_total"):
        if labels.get("resource") in COUNTED:
            sub = f"/{labels['subresource']}" if labels.get("subresource") else ""
            counts[f"{labels['verb']} {labels['resource']}{sub}"] += int(value)
    return counts


def per_agent(scraped: list[str], size: int) -> dict[str, float]:
    """The requests between two scrapes (``[before, after]``), per agent."""
    made = requests_made(scraped[1])
    made.subtract(requests_made(scraped[0]))
    return {what: n / size for what, n in sorted(made.items()) if n > 0}


def _rank_bucket(
    before: dict[float, float], after: dict[float, float], q: float
) -> tuple[float, float, float] | None:
    """The bucket the q-quantile of the observations between two scrapes falls in: its lower
    and upper bounds, and how far into its count the rank is (0-1); None: nothing observed."""
    delta = sorted((le, after.get(le, 0.0) - before.get(le, 0.0)) for le in after)
    total = delta[-1][1] if delta else 0.0
    lower, below = 0.0, 0.0
    for le, count in delta:
        if total and count >= q * total:
            return lower, le, (q * total - below) / (count - below)
        lower, below = le, count
    return None


def quantile(before: dict[float, float], after: dict[float, float], q: float) -> float:
    """The q-quantile of the observations between two scrapes, at the bucket's upper bound."""
    bucket = _rank_bucket(before, after, q)
    return bucket[1] if bucket else float("nan")


def interpolated(before: dict[float, float], after: dict[float, float], q: float) -> float:
    """The q-quantile between two scrapes as Prometheus's ``histogram_quantile`` estimates it:
    linear within the bucket it falls in (from 0 in the first); in the ``+Inf`` bucket, the
    highest finite bound. An estimate, never above ``quantile``'s bucket bound."""
    bucket = _rank_bucket(before, after, q)
    if bucket is None:
        return float("nan")
    lower, upper, into = bucket
    return lower if math.isinf(upper) else lower + (upper - lower) * into


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def disagreements(listed: list[dict[str, Any]], valkey_url: str, namespace: str) -> list[str]:
    """Where status, Valkey record and stream differ for the agents of one namespace (none:
    nothing was lost). Per agent: the record's phase and seq are the status's, and the
    stream holds exactly the event ids ``uid-1 .. uid-seq`` (deduped by id, as consumers do)."""
    client = redis.Redis.from_url(valkey_url, decode_responses=True)
    try:
        ids: dict[str, set[int]] = {}
        last = "-"
        while True:
            batch = client.xrange("orchestrator:events:stream", min=last, count=10_000) or []
            fresh = [(str(at), fields or {}) for at, fields in batch if at != last]
            if not fresh:
                break
            for _, fields in fresh:
                data = json.loads(fields["event"]).get("data") or {}
                if data.get("namespace") == namespace and "uid" in data and "seq" in data:
                    ids.setdefault(str(data["uid"]), set()).add(int(data["seq"]))
            last = fresh[-1][0]
        found: list[str] = []
        pipe = client.pipeline(transaction=False)
        for body in listed:
            pipe.hmget(f"orchestrator:agent:{namespace}/{body['metadata']['name']}", "phase", "seq")
        records = pipe.execute()
        for body, (phase, seq) in zip(listed, records, strict=True):
            name, uid = body["metadata"]["name"], body["metadata"]["uid"]
            state = body.get("status") or {}
            want = int(state.get("seq") or 0)
            if (phase, seq) != (state.get("phase"), str(want)):
                found.append(f"{name}: status {state.get('phase')}/{want}, Valkey {phase}/{seq}")
            elif ids.get(uid, set()) != set(range(1, want + 1)):
                found.append(f"{name}: stream seqs {sorted(ids.get(uid, set()))}, status {want}")
        return found
    finally:
        client.close()


# --- the runs ---


@dataclass
class Figures:
    rows: list[tuple[str, float, float]] = field(default_factory=list)  # (measure, op, floor)
    notes: list[str] = field(default_factory=list)


async def kill_run(
    api: kube.Kube, env: dict[str, str], valkey_url: str, size: int, tmp: Path, out: Figures
) -> None:
    grace = models.AgentSpec.model_fields["kill_grace_period_seconds"].default

    async def running_agents(prefix: str) -> tuple[str, Operator]:
        namespace = await new_namespace(api, prefix)
        operator = start_operator(env, valkey_url, namespace, tmp)

        async def all_running() -> bool:
            return (await phases(api, namespace)).count("Running") == size

        try:
            bodies = [agent(namespace, i) for i in range(size)]
            await create_all(api, bodies, f"{GROUP}/namespaces/{namespace}/agents")
            await until(all_running, 900, f"{size} running agents")
        except BaseException:
            operator.stop()
            await drop_namespace(api, namespace)
            raise
        return namespace, operator

    async def all_gone(watch: PodWatch, namespace: str) -> bool:
        if len(watch.gone) < size:
            return False
        return (await phases(api, namespace)).count("Killed") == size

    # The operator.
    namespace, operator = await running_agents("kill-op")
    watch = PodWatch(api, namespace)
    watch.start()
    switch = f"bench-{namespace}"
    try:
        began = time.monotonic()
        await api.request(
            "POST", f"{GROUP}/killswitches", killswitch_body(switch, {"b": namespace})
        )
        await until(lambda: all_gone(watch, namespace), 900, f"{size} kills")
        took = max(watch.gone.values()) - began
    finally:
        watch.stop()
        operator.stop()
        with contextlib.suppress(kube.ApiError):
            await api.request("DELETE", f"{GROUP}/killswitches/{switch}")
        await drop_namespace(api, namespace)

    # The floor: the same agents brought to Running by the operator, which then stops.
    namespace, operator = await running_agents("kill-floor")
    operator.stop()
    watch = PodWatch(api, namespace)
    watch.start()
    try:
        kill_all = await floor_kill(api, namespace, grace)
        began = time.monotonic()
        await kill_all()
        await until(lambda: all_gone(watch, namespace), 900, f"{size} bare kills")
        floor_took = max(watch.gone.values()) - began
    finally:
        watch.stop()
        await drop_namespace(api, namespace)
    out.rows.append((f"kill {size} (s, until every Pod is gone)", took, floor_took))


def segments(seen: dict[str, dict[str, dict[str, float]]]) -> dict[str, list[float]]:
    """Each Pod change's lag, whole and in two parts: seen here -> its status seen here (the
    operator's watch, queue, pass and status PATCH, and that write's watch event) -> heard
    on the channel (the mirror's queue and Valkey write). An event heard before the watch
    here saw its change counts as no lag, and so on for each part."""
    parts: dict[str, list[float]] = {"whole": [], "to status": [], "status to event": []}
    for uid, changes in seen["pods"].items():
        heard, status = seen["heard"].get(uid, {}), seen["status"].get(uid, {})
        for phase, at in changes.items():
            if phase in heard:
                parts["whole"].append(max(0.0, heard[phase] - at))
            if phase in status:
                parts["to status"].append(max(0.0, status[phase] - at))
                if phase in heard:
                    parts["status to event"].append(max(0.0, heard[phase] - max(status[phase], at)))
    return parts


def spread(values: list[float]) -> str:
    """p50, p99 and max, in milliseconds."""
    return (
        f"p50 {1000 * percentile(values, 0.5):.0f} ms, p99 {1000 * percentile(values, 0.99):.0f} "
        f"ms, max {1000 * max(values, default=float('nan')):.0f} ms"
    )


async def burst_run(
    api: kube.Kube,
    env: dict[str, str],
    valkey_url: str,
    size: int,
    tmp: Path,
    out: Figures,
    profile: bool = False,
) -> None:
    run_for = "2s"

    # The operator, with the mirror lag measured beside it.
    namespace = await new_namespace(api, "burst-op")
    operator = start_operator(env, valkey_url, namespace, tmp)
    observer: Observer | None = None
    seen: dict[str, dict[str, dict[str, float]]] = {}
    try:
        observer = Observer(env, namespace, size, valkey_url, tmp)
        profiler = Profile(operator.process.pid, tmp / "profile.txt") if profile else None
        cpu_before = operator.cpu_seconds()
        scraped = [api_metrics(env)]
        began = time.time()
        bodies = [agent(namespace, i, run_for) for i in range(size)]
        await create_all(api, bodies, f"{GROUP}/namespaces/{namespace}/agents")
        took = await observer.done() - began
        scraped.append(api_metrics(env))
        # The mirror's own part of the lag: its status write -> its Valkey write.
        mirror_part = histogram(operator.metrics(), "agent_operator_mirror_lag_seconds")
        cpu = operator.cpu_seconds() - cpu_before
        rss = operator.peak_rss_mib()
        # Nothing lost: once the mirror has caught up, status, Valkey and stream agree.
        listed = await items(api, f"{GROUP}/namespaces/{namespace}/agents")
        lost: list[str] = []

        async def mirrored() -> bool:
            lost[:] = await asyncio.to_thread(disagreements, listed, valkey_url, namespace)
            return not lost

        with contextlib.suppress(TimeoutError):
            await until(mirrored, 120, "the mirror to catch up")
        out.notes.append(
            f"burst {size}: status, Valkey and stream agree for all {len(listed)} agents"
            if not lost
            else f"burst {size}: {len(lost)} agents DISAGREE, first: {'; '.join(lost[:3])}"
        )
        if profiler is not None:
            samples = profiler.stop()
            out.notes.append(f"burst {size}: the operator's CPU by part (callees included):")
            out.notes.extend(f"    {line}" for line in Profile.parts(samples))
            out.notes.append(f"burst {size}: the operator's CPU by function (self time):")
            out.notes.extend(f"    {line}" for line in Profile.top(samples))
    finally:
        try:
            if observer is not None:
                seen = observer.stop()
        finally:
            operator.stop()
            await drop_namespace(api, namespace)
    parts = segments(seen)
    patches = [status_patch_histogram(text) for text in scraped]
    patch_p99 = interpolated(patches[0], patches[1], 0.99)
    out.notes.append(
        f"burst {size}: mirror lag (Pod change seen -> event on the channel) over "
        f"{len(parts['whole'])} changes: {spread(parts['whole'])}; the API server's own status "
        f"PATCH p99 in the same burst: <= "
        f"{1000 * quantile(patches[0], patches[1], 0.99):.0f} ms (bucket bound), about "
        f"{1000 * patch_p99:.0f} ms (interpolated in the bucket, as histogram_quantile); the "
        f"lag p99 is {percentile(parts['whole'], 0.99) / (patch_p99 or math.nan):.2f} times that"
    )
    out.notes.append(
        f"burst {size}: of the lag, change seen -> its status seen: {spread(parts['to status'])}"
        f"; status seen -> event: {spread(parts['status to event'])}"
        f"; the operator's status write -> Valkey write p50 <= "
        f"{1000 * quantile({}, mirror_part, 0.5):.0f} ms, p99 <= "
        f"{1000 * quantile({}, mirror_part, 0.99):.0f} ms (its mirror_lag_seconds)"
    )
    out.notes.append(
        f"burst {size}: the operator's peak RSS {rss:.0f} MiB, CPU {cpu:.1f} s "
        f"({1000 * cpu / size:.1f} s per 1000 lives)"
    )

    # The floor, its end seen the same way; its lag is its own Pod change -> status written.
    namespace = await new_namespace(api, "burst-floor")
    observer = None
    lives: asyncio.Task[None] | None = None
    floor_lag: list[float] = []
    try:
        observer = Observer(env, namespace, size, "", tmp)
        floor_scraped = [api_metrics(env)]
        began = time.time()
        lives = asyncio.create_task(floor_burst(api, namespace, size, run_for))
        ended = asyncio.create_task(observer.done())
        await asyncio.wait({lives, ended}, return_when=asyncio.FIRST_COMPLETED)
        if lives.done() and lives.exception() is not None:
            ended.cancel()
            await lives  # the floor failed: its error, not a wait for an end that never comes
        floor_took = await ended - began
        await lives
        floor_scraped.append(api_metrics(env))
    finally:
        try:
            if observer is not None:
                floor_lag = segments(observer.stop())["to status"]
        finally:
            if lives is not None and not lives.done():
                lives.cancel()
            await drop_namespace(api, namespace)
    out.rows.append((f"burst {size} (s, 2 s lives, until all Completed)", took, floor_took))
    ours, bare = per_agent(scraped, size), per_agent(floor_scraped, size)
    counts = [f"{w} {ours.get(w, 0):.2f} ({bare.get(w, 0):.2f})" for w in sorted({*ours, *bare})]
    out.notes.append(
        f"burst {size}: the API server's requests per agent, every client's, operator (floor): "
        + ", ".join(counts)
    )
    out.rows.append(
        (
            f"lag p99 {size} (ms; floor: change -> status, no Valkey)",
            1000 * percentile(parts["whole"], 0.99),
            1000 * percentile(floor_lag, 0.99),
        )
    )
    out.notes.append(f"burst {size}: the floor's own change -> status seen: {spread(floor_lag)}")


async def run(
    kills: list[int],
    bursts: list[int],
    kubeconfig: Path,
    valkey_url: str,
    profile: bool,
    keep: Path | None = None,
    rounds: int = 1,
) -> Figures:
    # The floor's 40 places and the creations' 50 POSTs at once, none waiting for a connection.
    api = kube.Kube(kube.load_config(str(kubeconfig)), connections=128)
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    out = Figures()
    try:
        with tempfile.TemporaryDirectory() as scratch:
            tmp = keep or Path(scratch)
            tmp.mkdir(parents=True, exist_ok=True)
            for round_ in range(1, rounds + 1):
                if rounds > 1:
                    out.notes.append(f"--- round {round_} of {rounds}")
                for size in kills:
                    await kill_run(api, env, valkey_url, size, tmp, out)
                for size in bursts:
                    await burst_run(api, env, valkey_url, size, tmp, out, profile)
    finally:
        await api.close()
    return out


def medians(
    rows: list[tuple[str, float, float]],
) -> list[tuple[str, float, float, list[float]]]:
    """Per measure, in first-seen order: the median operator and floor figures, and every
    round's ratio (whose median is the one to quote)."""
    runs: dict[str, list[tuple[float, float]]] = {}
    for measure, ours, floor in rows:
        runs.setdefault(measure, []).append((ours, floor))
    return [
        (
            measure,
            statistics.median(o for o, _ in pairs),
            statistics.median(f for _, f in pairs),
            [o / f for o, f in pairs],
        )
        for measure, pairs in runs.items()
    ]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--kill", default="10,100,1000", help="agent counts for the kill")
    parser.add_argument("--burst", default="200,1000", help="agent counts for the burst")
    parser.add_argument(
        "--profile", action="store_true", help="sample the operator with py-spy in each burst"
    )
    parser.add_argument(
        "--keep",
        type=Path,
        help="keep the operators' logs and the observers' JSON (benchmarks.observe) here",
    )
    parser.add_argument(
        "--rounds", type=int, default=1, help="run every measure this many times; print medians"
    )
    args = parser.parse_args()

    def sizes(text: str) -> list[int]:
        return [int(s) for s in text.split(",") if s]

    with tempfile.TemporaryDirectory() as tmp:
        shared = localcluster.endpoints(localcluster.default_layout())
        own = None if shared else localcluster.Layout(Path(tmp) / "cluster")
        valkey_proc, valkey_url = localvalkey.start(Path(tmp) / "valkey")
        try:
            endpoints = shared or localcluster.up(own, start_valkey=False)  # type: ignore[arg-type]
            subprocess.run(
                [KUBECTL, "apply", "--server-side", "-f", str(REPO / "crds")],
                env={**os.environ, "KUBECONFIG": str(endpoints.kubeconfig)},
                check=True,
                capture_output=True,
            )
            figures = asyncio.run(
                run(
                    sizes(args.kill),
                    sizes(args.burst),
                    endpoints.kubeconfig,
                    valkey_url,
                    args.profile,
                    args.keep,
                    args.rounds,
                )
            )
        finally:
            procs.stop(valkey_proc)
            if own is not None:
                localcluster.down(own)
    print(f"{'measure':<52}{'operator':>10}{'floor':>10}{'ratio':>8}")
    for measure, ours, floor in figures.rows:
        print(f"{measure:<52}{ours:>10.1f}{floor:>10.1f}{ours / floor:>8.2f}")
    if args.rounds > 1:
        print(f"medians of {args.rounds} rounds (each round's ratio in brackets):")
        for measure, ours, floor, ratios in medians(figures.rows):
            each = ", ".join(f"{r:.2f}" for r in ratios)
            ratio = statistics.median(ratios)
            print(f"{measure:<52}{ours:>10.1f}{floor:>10.1f}{ratio:>8.2f}  [{each}]")
    for note in figures.notes:
        print(note)


if __name__ == "__main__":
    main()
