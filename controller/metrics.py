"""The operator's Prometheus metrics: one registry per process, served on ``/metrics``.

Counters and histograms are updated where things happen (the reconciler); the
fleet's gauges (agents by phase, mirror behind, queue depth) are read from the
reconciler's own view at scrape time, so they cost nothing between scrapes.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

PREFIX: Final = "agent_operator"
# Seconds: a write takes milliseconds; a Pod's own timestamps have one-second resolution.
LATENCY_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


@dataclass(frozen=True)
class Fleet:
    """What the reconciler knows of the agents at this moment."""

    phases: Mapping[str, int] = field(default_factory=dict)
    mirror_behind: int = 0  # agents whose Valkey record lacks transitions of their status
    mirror_backlog: int = 0  # those transitions, all agents together
    queue_depth: int = 0  # keys waiting on the agents' and switches' queues
    queue_busy: int = 0  # keys of those queues with a worker now
    mirror_queue_depth: int = 0


class _FleetCollector(Collector):
    def __init__(self, read: Callable[[], Fleet]) -> None:
        self.read = read

    def collect(self) -> Iterator[GaugeMetricFamily]:
        fleet = self.read()
        phases = GaugeMetricFamily(
            f"{PREFIX}_agents",
            "Agents this operator watches, by status phase (Pending: not recorded yet).",
            labels=["phase"],
        )
        for phase, count in sorted(fleet.phases.items()):
            phases.add_metric([phase], count)
        yield phases
        yield GaugeMetricFamily(
            f"{PREFIX}_mirror_behind_agents",
            "Agents whose Valkey record is behind their status (replayed when Valkey answers).",
            value=fleet.mirror_behind,
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_mirror_backlog_transitions",
            "Transitions recorded in status and not yet in Valkey, all agents together.",
            value=fleet.mirror_backlog,
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_queue_depth", "Agents and switches waiting for a worker.", fleet.queue_depth
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_queue_busy",
            "Agents and switches with a worker now (0 with an empty queue: all caught up).",
            fleet.queue_busy,
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_mirror_queue_depth",
            "Agents and switches waiting for a mirror worker.",
            fleet.mirror_queue_depth,
        )


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.transitions = Counter(
            f"{PREFIX}_transitions",
            "Phase transitions written to Agents' status.",
            ["from_phase", "to_phase"],
            registry=r,
        )
        self.latency = Histogram(
            f"{PREFIX}_transition_latency_seconds",
            "From the moment a transition records (the Pod's own start or finish time, else "
            "when it was decided) to its status written (stage=status) and mirrored "
            "(stage=mirrored), by the phase it entered (to_phase=Killed: kill latency).",
            ["stage", "to_phase"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.mirror_lag = Histogram(
            f"{PREFIX}_mirror_lag_seconds",
            "From a transition's status written to its Valkey record written.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.mirror_errors = Counter(
            f"{PREFIX}_mirror_errors", "Valkey writes that failed (Valkey unreachable).", registry=r
        )
        self.mirror_replays = Counter(
            f"{PREFIX}_mirror_replays",
            "Transitions written to Valkey by a resync, after Valkey missed them.",
            registry=r,
        )
        self.killswitch_kills = Counter(
            f"{PREFIX}_killswitch_kills",
            "Agents Killed because a killswitch matched them.",
            registry=r,
        )
        self.watch_events = Counter(
            f"{PREFIX}_watch_events",
            "Watch events received, by kind (agent, pod, killswitch, namespace) and type "
            "(changed, deleted).",
            ["kind", "type"],
            registry=r,
        )
        self.leader = Gauge(
            f"{PREFIX}_leader", "1 while this process holds the lease and acts, else 0.", registry=r
        )

    def watch_fleet(self, read: Callable[[], Fleet]) -> None:
        """Serve the fleet's gauges from ``read``, called at each scrape."""
        self.registry.register(_FleetCollector(read))

    def written(
        self, from_phase: str | None, to_phase: str, at: datetime.datetime, now: datetime.datetime
    ) -> None:
        self.transitions.labels(from_phase or "Pending", to_phase).inc()
        self.latency.labels("status", to_phase).observe(max(0.0, (now - at).total_seconds()))

    def mirrored(self, to_phase: str, at: datetime.datetime, now: datetime.datetime) -> None:
        self.latency.labels("mirrored", to_phase).observe(max(0.0, (now - at).total_seconds()))
