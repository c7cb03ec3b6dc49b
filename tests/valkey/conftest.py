"""Fixtures of the Valkey tier."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import pytest
import redis
import redis.cluster

from controller import mirror
from localcluster import topologies

VALKEY_VARIABLES: Final = (
    "VALKEY_URL",
    "VALKEY_KEY_PREFIX",
    "VALKEY_CA_FILE",
    "VALKEY_CERT_FILE",
    "VALKEY_KEY_FILE",
)


@pytest.fixture
def no_valkey_environment(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """None of the shell's VALKEY_* settings reaches `kubectl agents`; returns the patcher."""
    for name in VALKEY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@dataclass(frozen=True)
class Target:
    """A Valkey the mirror's tests run against, and the prefix its keys must carry there."""

    url: str
    cluster: bool = False
    prefix: str = mirror.DEFAULT_PREFIX


@pytest.fixture(scope="session")
def valkey_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[topologies.ValkeyCluster]:
    """A real Valkey Cluster: three primaries, a replica each."""
    started = topologies.start_cluster(Path(tmp_path_factory.mktemp("valkey-cluster")))
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture(params=["standalone", "cluster"])
def target(request: pytest.FixtureRequest, valkey_url: str) -> Target:
    """The mirror's tests, on one server and on a Cluster (emptied first, like valkey_url)."""
    if request.param == "standalone":
        return Target(valkey_url)
    cluster: topologies.ValkeyCluster = request.getfixturevalue("valkey_cluster")
    with redis.cluster.RedisCluster.from_url(cluster.seed_url) as client:
        client.flushall(target_nodes=redis.cluster.RedisCluster.PRIMARIES)
    return Target(cluster.seed_url, cluster=True, prefix="{orchestrator}:")
