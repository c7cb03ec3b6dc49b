"""The three views of an agent, and the check that they agree.

An agent's truth is in Kubernetes (``.status``, read with kubectl); the
mirror must say the same (the Valkey hash and phase sets); and its events
must be exactly its history: the same bytes on the pub/sub channel (as a
subscriber received them) and in the stream, in order, no gap, no duplicate.
``kubectl describe`` must tell the story with Kubernetes Events.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import threading
from collections.abc import Callable, Iterator
from typing import Any

import redis

from controller import lifecycle
from tests.conftest import KUBECTL, Cluster

CHANNEL = "orchestrator:events"
STREAM = "orchestrator:events:stream"


class Feed:
    """A subscriber on the events channel, collecting messages in a thread: of the server at
    ``url``, or through ``client`` (a Cluster's or Sentinel's, which the caller closes)."""

    def __init__(self, url: str = "", client: Any = None, channel: str = CHANNEL) -> None:
        self.messages: list[str] = []
        self._own = client is None
        self._client = redis.Redis.from_url(url) if client is None else client
        self._pubsub = self._client.pubsub()
        self._pubsub.subscribe(channel)
        confirmed = self._pubsub.get_message(timeout=5)
        assert confirmed is not None
        assert confirmed["type"] == "subscribe"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._listen, daemon=True)
        self._thread.start()

    def _listen(self) -> None:
        while not self._stop.is_set():
            try:
                message = self._pubsub.get_message(ignore_subscribe_messages=True, timeout=0.1)
            except redis.RedisError:
                return  # the server went away (a test stopped it): stop listening
            if message is not None and message["type"] == "message":
                self.messages.append(message["data"].decode())

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._pubsub.close()
        if self._own:
            self._client.close()


def agent(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(
        cluster.kubectl("get", "agent", name, "-n", namespace, "-o", "json")
    )
    return found


def all_events(url: str) -> list[str]:
    """Every event in the stream, oldest first."""
    with redis.Redis.from_url(url) as client:
        entries = client.xrange(STREAM)
    return [fields[b"event"].decode() for _, fields in entries]


def stream(url: str, uid: str) -> list[str]:
    """This agent's events in the stream, oldest first."""
    return [e for e in all_events(url) if json.loads(e)["data"].get("uid") == uid]


def received(feed: Feed, uid: str) -> list[str]:
    return [e for e in list(feed.messages) if json.loads(e)["data"].get("uid") == uid]


def record(url: str, namespace: str, name: str) -> dict[str, str]:
    with redis.Redis.from_url(url, decode_responses=True) as client:
        found: dict[str, str] = client.hgetall(f"orchestrator:agent:{namespace}/{name}")
        return found


def phase_sets(url: str, ref: str) -> list[str]:
    """The phases whose index holds ``ref``."""
    with redis.Redis.from_url(url, decode_responses=True) as client:
        return [
            p.value for p in lifecycle.Phase if client.sismember(f"orchestrator:phase:{p}", ref)
        ]


def check(
    cluster: Cluster,
    url: str,
    feed: Feed,
    namespace: str,
    name: str,
    phase: str | None = None,
    describe: bool = True,
) -> dict[str, Any]:
    """Assert the three views agree (and, if given, on ``phase``); return the Agent.

    ``describe=False`` leaves out the Kubernetes Events, which are best-effort: an
    operator killed between a transition's mirror write and its Event never posts it.
    """
    body = agent(cluster, namespace, name)
    status, uid = body.get("status", {}), body["metadata"]["uid"]
    history = status.get("history", [])
    if phase is not None:
        assert status.get("phase") == phase, f"phase is {status.get('phase')}, not {phase}"
    assert status.get("seq") == len(history) > 0, status

    mirrored = record(url, namespace, name)
    expected = {
        "uid": uid,
        "phase": status["phase"],
        "seq": str(status["seq"]),
        "reason": status["reason"],
        "error": status.get("error", ""),
        "startedAt": status.get("startedAt", ""),
        "completedAt": status.get("completedAt", ""),
        "deleted": "0",
    }
    assert {k: mirrored.get(k) for k in expected} == expected, f"Valkey record {mirrored}"
    assert phase_sets(url, f"{namespace}/{name}") == [status["phase"]]

    events = stream(url, uid)
    decoded = [json.loads(e) for e in events]
    assert [e["id"] for e in decoded] == [f"{uid}-{i}" for i in range(1, len(history) + 1)], (
        f"stream ids {[e['id'] for e in decoded]}"
    )
    assert [e["data"]["to"] for e in decoded] == [h["phase"] for h in history]
    assert [e["time"] for e in decoded] == [h["at"] for h in history]
    assert [e["type"] for e in decoded] == [f"agent.{h['phase'].lower()}" for h in history]
    assert received(feed, uid) == events, "the subscriber and the stream disagree"
    if not describe:
        return body

    described = cluster.kubectl("describe", "agent", name, "-n", namespace)
    events_section = described.split("Events:", 1)[1]
    for entry in history:
        assert entry["phase"] in events_section, f"no {entry['phase']} event in describe"
    return body


@contextlib.contextmanager
def kubectl_watch(
    cluster: Cluster, seen: Callable[[dict[str, Any]], None], *args: str
) -> Iterator[None]:
    """`kubectl get ARGS --watch`: each event, in the API server's order, handed to ``seen``
    from a thread as it arrives; the kubectl is stopped (by its pid) at the end."""
    process = subprocess.Popen(
        [KUBECTL, "get", *args, "--watch", "--output-watch-events", "-o", "json"],
        env=cluster.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )

    def follow() -> None:
        assert process.stdout is not None
        decoder, buffer = json.JSONDecoder(), ""
        for line in process.stdout:
            buffer += line
            while buffer.strip():
                try:
                    event, end = decoder.raw_decode(buffer.lstrip())
                except ValueError:
                    break  # an object not complete yet
                buffer = buffer.lstrip()[end:]
                seen(event)

    thread = threading.Thread(target=follow, daemon=True)
    thread.start()
    try:
        yield
    finally:
        process.terminate()
        process.wait(timeout=10)
        thread.join(timeout=10)
        if process.stdout is not None:
            process.stdout.close()
