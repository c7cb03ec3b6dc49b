"""A benchmark's eyes, in a process of its own: when each agent's Pod changed, when its status
showed each phase, and when its event was heard on the Valkey channel.

Run apart from the benchmark so that neither slows the other's clock: the
benchmark's own work (creating agents, driving the floor) holds its interpreter
while a change arrives here. It watches, and never LISTs more than once per kind:
the end of a burst is seen in the Agents' watch, not by listing every Agent
again and again (at 10,000 agents that listing was a load of its own on the API
server that both runs shared).

    python -m benchmarks.observe --kubeconfig FILE --namespace NS --count N \
        [--valkey URL] --out FILE

prints ``ready`` once its watches have their listing (and the channel is
subscribed), ``done SECONDS`` (``time.time()`` of the watch event) once ``N``
Agents show Completed, and writes what it saw to ``FILE`` as JSON when its
standard input closes: ``{"pods"|"status"|"heard": {uid: {phase: seconds}}}``,
every time on ``time.time()``.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import kubernetes
import redis
import urllib3

from controller import models, workload

CHANNEL = "orchestrator:events"
POD_PHASES = {"Running": "Running", "Succeeded": "Completed", "Failed": "Failed"}

Seen = dict[str, dict[str, float]]  # uid -> phase -> when first seen


def first(seen: Seen, uid: str, phase: str, at: float) -> None:
    seen.setdefault(uid, {}).setdefault(phase, at)


LISTED = "LISTED"  # the event type ``follow`` gives an object of its LIST


def follow(
    listing: Callable[..., Any],
    args: tuple[Any, ...],
    ready: threading.Event,
    on_event: Callable[[str, dict[str, Any]], None],
    stopped: Callable[[], bool] = lambda: False,
) -> None:
    """A LIST, then its watch from that version, each object handed on with its event's
    type (``LISTED`` for the LIST's), until ``stopped``. A watch that breaks is resumed
    from its last version, one whose version is too old (410 Gone) from a new LIST (objects
    seen again change nothing to a caller that counts first sightings)."""
    version = None
    while not stopped():
        if version is None:
            body = json.loads(listing(*args, _preload_content=False).data)
            for item in body["items"]:
                on_event(LISTED, item)
            version = body["metadata"]["resourceVersion"]
            ready.set()
        stream = kubernetes.watch.Watch()
        events: Iterator[dict[str, Any]] = stream.stream(
            listing, *args, resource_version=version, timeout_seconds=3600
        )
        try:
            for event in events:
                if stopped():
                    stream.stop()
                    return
                raw = event["raw_object"]
                version = raw["metadata"].get("resourceVersion", version)
                on_event(event["type"], raw)
        except kubernetes.client.exceptions.ApiException as exc:
            if exc.status != 410:
                raise
            version = None
        except urllib3.exceptions.HTTPError:
            continue


def kube_client(kubeconfig: str | None) -> kubernetes.client.ApiClient:
    """The kubernetes package's client (its watches) for the kubeconfig file(s)."""
    client: kubernetes.client.ApiClient = kubernetes.config.new_client_from_config(
        config_file=kubeconfig
    )
    return client


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--valkey", default="")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    client = kube_client(args.kubeconfig)
    core = kubernetes.client.CoreV1Api(client)
    custom = kubernetes.client.CustomObjectsApi(client)
    pods: Seen = {}
    status: Seen = {}
    heard: Seen = {}
    completed: set[str] = set()
    lock = threading.Lock()

    def pod_seen(kind: str, pod: dict[str, Any]) -> None:
        now = time.time()
        phase = POD_PHASES.get((pod.get("status") or {}).get("phase", ""))
        uid = (pod["metadata"].get("labels") or {}).get(workload.LABEL_AGENT_UID)
        if phase and uid and kind != "DELETED":
            with lock:
                first(pods, uid, phase, now)

    def agent_seen(kind: str, agent: dict[str, Any]) -> None:
        now = time.time()
        phase = (agent.get("status") or {}).get("phase")
        if not phase or kind == "DELETED":
            return
        uid = agent["metadata"]["uid"]
        with lock:
            first(status, uid, phase, now)
            if phase == "Completed" and uid not in completed:
                completed.add(uid)
                if len(completed) == args.count:
                    print(f"done {now}", flush=True)

    def listen(ready: threading.Event) -> None:
        pubsub = redis.Redis.from_url(args.valkey).pubsub()  # type: ignore[no-untyped-call]
        pubsub.subscribe(CHANNEL)
        ready.set()
        for message in pubsub.listen():
            now = time.time()
            if message["type"] != "message":
                continue
            event = json.loads(message["data"])
            data = event.get("data") or {}
            if data.get("namespace") != args.namespace:
                continue
            with lock:  # the first arrival, not a replay
                first(heard, str(data.get("uid")), str(data.get("to")), now)

    starts: list[tuple[Callable[[threading.Event], None], threading.Event]] = []
    pod_args = (args.namespace,)
    agent_args = (models.GROUP, models.VERSION, args.namespace, "agents")
    starts.append(
        (lambda r: follow(core.list_namespaced_pod, pod_args, r, pod_seen), threading.Event())
    )
    starts.append(
        (
            lambda r: follow(custom.list_namespaced_custom_object, agent_args, r, agent_seen),
            threading.Event(),
        )
    )
    if args.valkey:
        starts.append((listen, threading.Event()))

    def watching(target: Callable[[threading.Event], None], ready: threading.Event) -> None:
        try:
            target(ready)
        except Exception as exc:  # the benchmark reads it instead of "done", and stops
            print(f"failed: {exc!r}", flush=True)
            raise

    for target, ready in starts:
        threading.Thread(target=watching, args=(target, ready), daemon=True).start()
    for _, ready in starts:
        if not ready.wait(60):
            sys.exit("the observer's watches did not start within 60 s")
    print("ready", flush=True)
    sys.stdin.read()  # until the benchmark closes it
    with lock:
        seen = {"pods": pods, "status": status, "heard": heard}
        Path(args.out).write_text(json.dumps(seen))


if __name__ == "__main__":
    main()
