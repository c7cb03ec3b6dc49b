"""Real Valkey in cluster mode and in sentinel mode (``localcluster.topologies``).

The cluster: three primaries with a replica each cover every slot, a cluster
client reaches keys on every primary, a hash tag keeps keys on one node, and a
client whose slot map is stale follows MOVED after a slot migrates. The
sentinels: they agree on the primary, and after it is killed they name a
replica in its place, which a sentinel-aware client then writes to.

Both topologies need passwords, so MIGRATE's AUTH and the sentinels' auth-pass
are exercised; the password has a space, for the URL and the config file.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final, cast

import pytest
import redis
from redis.cluster import RedisCluster
from redis.crc import key_slot
from redis.sentinel import Sentinel

from localcluster import procs, topologies
from localcluster.topologies import Node, ValkeyCluster, ValkeySentinel
from tests.helpers import wait_for

PASSWORD: Final = "topology secret"
TAG: Final = "{orchestrator}"
FAILOVER_TIMEOUT: Final = 30.0


def _plain(port: int) -> redis.Redis:
    return redis.Redis(
        host="127.0.0.1", port=port, password=PASSWORD, decode_responses=True, socket_timeout=5
    )


def _owner_port(client: RedisCluster, key: str) -> int:
    """The port of the primary the client's cached slot map sends ``key`` to."""
    port: int = cast(Any, client).get_node_from_key(key).port
    return port


def _left_behind(state_dir: Path) -> list[str]:
    """The processes a start recorded under ``state_dir`` that still exist, zombies too."""
    recorded = [procs.Proc.load(path) for path in (state_dir / "pids").glob("*.json")]
    assert recorded, f"nothing was started under {state_dir}"
    return [proc.name for proc in recorded if _exists(proc)]


def _exists(proc: procs.Proc) -> bool:
    """True while the pid is this very process, running or a zombie not yet collected."""
    try:
        raw = Path(f"/proc/{proc.pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return int(raw[raw.rindex(")") + 2 :].split()[19]) == proc.start_ticks


# --- cluster mode ---


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ValkeyCluster]:
    state_dir = tmp_path_factory.mktemp("cluster")
    started = topologies.start_cluster(state_dir, primaries=3, replicas=1, password=PASSWORD)
    try:
        yield started
    finally:
        started.stop()
    assert _left_behind(state_dir) == []


@pytest.fixture
def cluster_client(cluster: ValkeyCluster) -> Iterator[RedisCluster]:
    client = RedisCluster.from_url(cluster.seed_url, decode_responses=True)
    try:
        yield client
    finally:
        client.close()


def _cluster_info(node: Node) -> dict[str, str]:
    with _plain(node.port) as client:
        text: str = cast(Any, client).execute_command("CLUSTER", "INFO")
    return dict(line.strip().split(":", 1) for line in text.splitlines() if ":" in line)


def test_a_cluster_of_three_primaries_with_a_replica_each_covers_every_slot(
    cluster: ValkeyCluster, cluster_client: RedisCluster
) -> None:
    assert len(cluster.nodes) == 6
    for node in cluster.nodes:
        info = _cluster_info(node)
        assert info["cluster_state"] == "ok", node
        assert info["cluster_slots_assigned"] == info["cluster_slots_ok"] == "16384", node
        assert info["cluster_known_nodes"] == "6", node
        assert info["cluster_size"] == "3", node
    assert set(cluster_client.nodes_manager.slots_cache) == set(range(topologies.SLOTS))
    primaries = cluster.primaries()
    assert {n.port for n in cast(Any, cluster_client).get_primaries()} == {
        n.port for n in primaries
    }
    for primary in primaries:
        (replica,) = cluster.replicas_of(primary)
        with _plain(primary.port) as client:
            replication = client.info("replication")
        assert replication["role"] == "master"
        assert replication["connected_slaves"] == 1
        assert replication["slave0"]["port"] == replica.port
        assert replication["slave0"]["state"] == "online"


def test_a_cluster_client_reaches_keys_on_every_primary(
    cluster: ValkeyCluster, cluster_client: RedisCluster
) -> None:
    by_owner: dict[int, str] = {}
    for index in range(1000):
        key = f"agent:{index}"
        by_owner.setdefault(cluster.node_for_slot(key_slot(key.encode())).port, key)
        if len(by_owner) == len(cluster.primaries()):
            break
    assert set(by_owner) == {n.port for n in cluster.primaries()}
    for port, key in by_owner.items():
        assert cluster_client.set(key, f"on {port}")
    for port, key in by_owner.items():
        assert cluster_client.get(key) == f"on {port}"
        with _plain(port) as owner:  # really stored on that primary, no redirection
            assert owner.get(key) == f"on {port}"


def test_keys_of_one_hash_tag_live_on_one_node(
    cluster: ValkeyCluster, cluster_client: RedisCluster
) -> None:
    first, second = f"{TAG}:a", f"{TAG}:b"
    assert key_slot(first.encode()) == key_slot(second.encode()) == key_slot(TAG.encode())
    cluster_client.set(first, "1")
    cluster_client.set(second, "2")
    owner = cluster.node_for_slot(key_slot(TAG.encode()))
    assert _owner_port(cluster_client, first) == owner.port
    with _plain(owner.port) as client:
        # One multi-key command on one node: it fails with CROSSSLOT unless they share a slot.
        assert client.mget(first, second) == ["1", "2"]


def test_a_migrated_slot_takes_its_keys_and_a_stale_client_follows_moved(
    cluster: ValkeyCluster, cluster_client: RedisCluster
) -> None:
    slot = key_slot(TAG.encode())
    keys = [f"{TAG}:migrating:{i}" for i in range(250)]  # more than one MIGRATE batch
    for key in keys:
        cluster_client.set(key, key[::-1])
    source = cluster.node_for_slot(slot)
    assert _owner_port(cluster_client, keys[0]) == source.port  # the cached map
    target = next(node for node in cluster.primaries() if node != source)

    cluster.migrate_slot(slot, target)

    assert cluster.node_for_slot(slot) == target
    with _plain(source.port) as old, _plain(target.port) as new:
        count = "CLUSTER", "COUNTKEYSINSLOT", slot
        assert cast(Any, old).execute_command(*count) == 0
        assert cast(Any, new).execute_command(*count) >= len(keys)
    # The client still maps the slot to the source; the source answers MOVED.
    assert _owner_port(cluster_client, keys[0]) == source.port
    assert [cluster_client.get(key) for key in keys] == [key[::-1] for key in keys]
    assert _owner_port(cluster_client, keys[0]) == target.port
    assert cluster_client.set(f"{TAG}:after", "written")
    with _plain(target.port) as new:
        assert new.get(f"{TAG}:after") == "written"


def test_a_cluster_that_fails_to_settle_leaves_no_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def never_ok(self: ValkeyCluster, timeout: float = 0) -> None:
        raise topologies.TopologyError("the cluster never settled (injected)")

    # The last step fails, after every node was started and the cluster formed.
    monkeypatch.setattr(ValkeyCluster, "wait_ok", never_ok)
    with pytest.raises(topologies.TopologyError, match="injected"):
        topologies.start_cluster(tmp_path, primaries=3, replicas=0)
    assert _left_behind(tmp_path) == []


# --- sentinel mode ---


@pytest.fixture(scope="module")
def sentinel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ValkeySentinel]:
    state_dir = tmp_path_factory.mktemp("sentinel")
    started = topologies.start_sentinel(state_dir, replicas=1, sentinels=3, password=PASSWORD)
    try:
        yield started
    finally:
        started.stop()
    assert _left_behind(state_dir) == []


def _named_primaries(sentinel: ValkeySentinel) -> set[int]:
    """The primary port each sentinel names."""
    ports: set[int] = set()
    for watcher in sentinel.sentinels:
        with redis.Redis(host="127.0.0.1", port=watcher.port, socket_timeout=5) as client:
            address = client.sentinel_get_master_addr_by_name(sentinel.master_name)
        assert address is not None
        ports.add(int(address[1]))
    return ports


def test_the_sentinels_agree_on_the_primary(sentinel: ValkeySentinel) -> None:
    assert sentinel.sentinels_arg == ",".join(f"127.0.0.1:{s.port}" for s in sentinel.sentinels)
    assert len(sentinel.sentinels) == 3
    (port,) = _named_primaries(sentinel)
    assert port == sentinel.current_primary_port()
    with _plain(port) as primary:
        assert primary.info("replication")["role"] == "master"


def test_after_the_primary_is_killed_a_replica_takes_its_place(
    sentinel: ValkeySentinel,
) -> None:
    old = sentinel.current_primary_port()
    killed = sentinel.kill_primary()
    assert killed.port == old
    assert not _exists(killed.proc)

    def another_primary() -> int | None:
        port = sentinel.current_primary_port()
        return port if port != old else None

    new = wait_for(
        another_primary,
        FAILOVER_TIMEOUT,
        f"a sentinel to name a primary other than 127.0.0.1:{old}",
    )
    assert new in {s.port for s in sentinel.replicas}
    wait_for(
        lambda: _named_primaries(sentinel) == {new},
        FAILOVER_TIMEOUT,
        f"every sentinel to name 127.0.0.1:{new}",
    )

    with Sentinel(  # type: ignore[no-untyped-call]
        sentinel.sentinel_addresses, socket_timeout=2, password=PASSWORD
    ) as watchers:
        primary: redis.Redis = watchers.master_for(sentinel.master_name, decode_responses=True)
        try:
            assert primary.set("orchestrator:after-failover", "written")
        finally:
            primary.close()
    with _plain(new) as client:
        assert client.info("replication")["role"] == "master"
        assert client.get("orchestrator:after-failover") == "written"


def test_a_sentinel_that_refuses_its_config_leaves_no_process(tmp_path: Path) -> None:
    # Valkey refuses down-after-milliseconds 0, after the primary and replica have started.
    with pytest.raises(topologies.TopologyError, match="negative or zero time parameter"):
        topologies.start_sentinel(tmp_path, down_after_ms=0)
    assert _left_behind(tmp_path) == []
