"""How the mirror's client is built, without a server: the URL's scheme decides TLS."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio.cluster
import redis.asyncio.connection

from controller import mirror, settings


def test_a_rediss_url_verifies_the_server_against_the_given_ca() -> None:
    conn = mirror.client(
        "rediss://agent-operator:secret@valkey.example:6380/2",
        timeout=3,
        ca_file="/etc/ca.pem",
        cert_file="/etc/client.pem",
        key_file="/etc/client.key",
    )
    try:
        pool = conn.connection_pool
        assert pool.connection_class is redis.asyncio.connection.SSLConnection
        kwargs = pool.connection_kwargs
        assert {k: kwargs[k] for k in ("host", "port", "db", "username", "password")} == {
            "host": "valkey.example",
            "port": 6380,
            "db": 2,
            "username": "agent-operator",
            "password": "secret",
        }
        assert {
            k: kwargs[k]
            for k in (
                "ssl_cert_reqs",
                "ssl_check_hostname",
                "ssl_ca_certs",
                "ssl_certfile",
                "ssl_keyfile",
            )
        } == {
            "ssl_cert_reqs": "required",
            "ssl_check_hostname": True,
            "ssl_ca_certs": "/etc/ca.pem",
            "ssl_certfile": "/etc/client.pem",
            "ssl_keyfile": "/etc/client.key",
        }
        assert (kwargs["socket_timeout"], kwargs["socket_connect_timeout"]) == (3, 3)
    finally:
        asyncio.run(conn.aclose())


def test_a_rediss_url_without_files_uses_the_system_trust_store() -> None:
    conn = mirror.client("rediss://valkey.example:6380/0")
    try:
        kwargs = conn.connection_pool.connection_kwargs
        assert kwargs["ssl_cert_reqs"] == "required"
        assert kwargs["ssl_check_hostname"] is True
        assert kwargs["ssl_ca_certs"] is None
    finally:
        asyncio.run(conn.aclose())


def test_a_redis_url_is_plain_and_refuses_tls_files() -> None:
    conn = mirror.client("redis://127.0.0.1:6379/0")
    try:
        pool = conn.connection_pool
        assert pool.connection_class is redis.asyncio.connection.Connection
        assert "ssl_cert_reqs" not in pool.connection_kwargs
    finally:
        asyncio.run(conn.aclose())
    with pytest.raises(
        ValueError, match=r"TLS files are for rediss:// URLs, not redis://u:\*\*\*@h"
    ):
        mirror.client("redis://u:secret@h:6379/0", ca_file="/etc/ca.pem")


def test_the_settings_pick_the_topology_of_the_client() -> None:
    cluster = mirror.connect(
        settings.load(
            {
                "VALKEY_CLUSTER": "true",
                "VALKEY_URL": "rediss://op:pw@seed.example:7000/0",
                "VALKEY_KEY_PREFIX": "{orchestrator}:",
                "VALKEY_TIMEOUT_SECONDS": "3",
            }
        )
    )
    assert isinstance(cluster, redis.asyncio.cluster.RedisCluster)
    seed = cluster.nodes_manager.startup_nodes["seed.example:7000"]
    assert seed.connection_kwargs["ssl_cert_reqs"] == "required"
    assert seed.connection_kwargs["socket_timeout"] == 3
    asyncio.run(mirror.close(cluster))

    sentinel = mirror.connect(
        settings.load(
            {
                "VALKEY_URL": "redis://op:p%40ss@ignored:1/4",
                "VALKEY_SENTINELS": ":sentinel-pw@s1:26379,s2:26380",
                "VALKEY_SENTINEL_MASTER": "agents",
            }
        )
    )
    assert isinstance(sentinel, redis.asyncio.Redis)
    kwargs = sentinel.connection_pool.connection_kwargs
    assert (kwargs["username"], kwargs["password"], kwargs["db"]) == ("op", "p@ss", 4)
    manager = sentinel.connection_pool.sentinel_manager  # type: ignore[attr-defined]
    found = [(s.connection_pool.connection_kwargs, s) for s in manager.sentinels]
    assert [(k["host"], k["port"], k["password"]) for k, _ in found] == [
        ("s1", 26379, "sentinel-pw"),
        ("s2", 26380, "sentinel-pw"),
    ]
    asyncio.run(mirror.close(sentinel))
