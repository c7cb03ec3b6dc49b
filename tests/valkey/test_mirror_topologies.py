"""The mirror where topology moves under it: a slot changing owner, a Sentinel failover.

Both are driven as the mirror controller drives the mirror: a failed operation
(``MirrorError``) is tried again, and the anti-entropy pass (``resync`` read
from the record) brings every record back to its source afterwards.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import redis.asyncio.cluster
import redis.crc

from controller import mirror, settings
from localcluster import topologies
from tests.valkey.test_mirror import LIFE, status_of

PREFIX = "{orchestrator}:"
SLOT = redis.crc.key_slot(PREFIX.encode())


def agents(count: int) -> list[mirror.AgentRef]:
    return [
        mirror.AgentRef("team-a", f"agent-{i}", f"uid-{i}", f"TASK-{i}", "worker")
        for i in range(count)
    ]


async def until_applied(m: mirror.Mirror, agent: mirror.AgentRef, upto: int) -> None:
    """Bring the record to step ``upto`` of LIFE, trying again while Valkey moves (bounded)."""
    status = status_of(LIFE[:upto])
    for _ in range(200):
        try:
            results = await m.resync(agent, status)
        except mirror.MirrorError:
            await asyncio.sleep(0.05)  # the controller's backoff, shortened
            continue
        if all(r.outcome is not mirror.Outcome.REFUSED for r in results):
            return
    raise AssertionError(f"{agent.ref} never reached step {upto}")


async def heal_and_read(m: mirror.Mirror, fleet: list[mirror.AgentRef]) -> list[dict[str, str]]:
    """The anti-entropy pass (read, then replay what is missing), then every record."""
    for agent in fleet:
        await until_applied(m, agent, len(LIFE))
    return [await m.get(a.namespace, a.name) or {} for a in fleet]


def assert_whole(records: list[dict[str, str]], events: list[dict[str, Any]], count: int) -> None:
    assert [(r["phase"], r["seq"]) for r in records] == [("Completed", "3")] * count
    ids = [e["id"] for e in events]
    assert len(ids) == len(set(ids)) == 3 * count, "every transition once in the stream"
    by_agent: dict[str, list[str]] = {}
    for event in events:
        by_agent.setdefault(event["data"]["uid"], []).append(event["data"]["to"])
    assert {tuple(phases) for phases in by_agent.values()} == {("Spawning", "Running", "Completed")}


# --- Cluster: a slot changes owner in the middle of a burst ---


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[topologies.ValkeyCluster]:
    started = topologies.start_cluster(tmp_path, primaries=3, replicas=1)
    try:
        yield started
    finally:
        started.stop()


def test_a_slot_moving_mid_burst_loses_and_repeats_nothing(
    cluster: topologies.ValkeyCluster,
) -> None:
    fleet = agents(150)
    owner = cluster.node_for_slot(SLOT)
    to = next(p for p in cluster.primaries() if p.node_id != owner.node_id)
    moved = threading.Event()

    def migrate() -> None:
        cluster.migrate_slot(SLOT, to)
        moved.set()

    async def scenario() -> tuple[list[dict[str, str]], list[dict[str, Any]]]:
        conn = redis.asyncio.cluster.RedisCluster.from_url(cluster.seed_url)
        m = mirror.Mirror(conn, prefix=PREFIX)
        try:
            for step in range(1, len(LIFE) + 1):
                for i, agent in enumerate(fleet):
                    if step == 2 and i == len(fleet) // 3:
                        threading.Thread(target=migrate, daemon=True).start()
                    await until_applied(m, agent, step)
            for _ in range(300):  # bounded: the migration ends within seconds
                if moved.is_set():
                    break
                await asyncio.sleep(0.05)
            records = await heal_and_read(m, fleet)
            raw = cast(list[tuple[bytes, dict[bytes, bytes]]], await conn.xrange(m.stream))
            return records, [json.loads(f[b"event"]) for _, f in raw]
        finally:
            await conn.aclose()

    records, events = asyncio.run(scenario())
    assert moved.is_set(), "the slot moved while the burst ran"
    assert cluster.node_for_slot(SLOT).node_id == to.node_id
    assert_whole(records, events, len(fleet))


# --- Sentinel: the primary is killed during 200 transitions ---


@pytest.fixture
def sentinel(tmp_path: Path) -> Iterator[topologies.ValkeySentinel]:
    started = topologies.start_sentinel(tmp_path, replicas=1, sentinels=3, password="s3cret")
    try:
        yield started
    finally:
        started.stop()


def test_a_failover_is_followed_and_anti_entropy_makes_every_record_whole(
    sentinel: topologies.ValkeySentinel,
) -> None:
    config = settings.load(
        {
            "VALKEY_URL": "redis://:s3cret@127.0.0.1:1/0",
            "VALKEY_SENTINELS": sentinel.sentinels_arg,
            "VALKEY_SENTINEL_MASTER": sentinel.master_name,
            "VALKEY_TIMEOUT_SECONDS": "2",
        }
    )
    fleet = agents(67)  # 201 transitions
    first = sentinel.current_primary_port()

    async def scenario() -> tuple[list[dict[str, str]], list[dict[str, Any]], float]:
        conn = mirror.connect(config)
        m = mirror.Mirror(conn, timeout=2)
        try:
            began = datetime.datetime.now(datetime.UTC)
            for step in range(1, len(LIFE) + 1):
                for i, agent in enumerate(fleet):
                    if step == 2 and i == len(fleet) // 2:
                        await asyncio.to_thread(sentinel.kill_primary)
                    await until_applied(m, agent, step)
            took = (datetime.datetime.now(datetime.UTC) - began).total_seconds()
            records = await heal_and_read(m, fleet)
            raw = cast(list[tuple[bytes, dict[bytes, bytes]]], await conn.xrange(m.stream))
            return records, [json.loads(f[b"event"]) for _, f in raw], took
        finally:
            await mirror.close(conn)

    records, events, took = asyncio.run(scenario())
    print(f"\n201 transitions across a Sentinel failover: {took:.1f} s")
    assert sentinel.current_primary_port() != first, "the client followed a new primary"
    assert [(r["phase"], r["seq"]) for r in records] == [("Completed", "3")] * len(fleet)
    # Events acknowledged by the old primary and not yet replicated are lost with it; the
    # replay brings them back with their ids, so each appears once and in order.
    ids = [e["id"] for e in events]
    assert len(ids) == len(set(ids))
    for agent in fleet:
        mine = [e["data"]["seq"] for e in events if e["data"]["uid"] == agent.uid]
        assert mine == [1, 2, 3], f"{agent.ref}: events {mine}"
