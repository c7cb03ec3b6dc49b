"""The embedded Valkey is real Valkey, and our client rides out a server restart."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

import pytest
import redis

from controller import mirror, settings
from localcluster import procs
from localcluster import valkey as localvalkey
from tests.conftest import RestartableValkey
from tests.helpers import valkey_refusal
from tests.valkey.test_mirror import AGENT, LIFE


def test_the_server_is_real_valkey(valkey_url: str) -> None:
    with redis.Redis.from_url(valkey_url) as client:
        info = client.info("server")
    assert info["server_name"] == "valkey"
    assert str(info["valkey_version"]).split(".")[0].isdigit()


def test_the_operator_identifies_valkey_by_its_info(valkey_url: str) -> None:
    async def probe() -> mirror.ServerInfo:
        conn = mirror.client(valkey_url)
        try:
            return await mirror.server_info(conn, valkey_url)
        finally:
            await conn.aclose()

    found = asyncio.run(probe())
    assert found.server == "valkey"
    assert found.address == valkey_url


def test_the_mirror_works_over_a_unix_socket(tmp_path: Path) -> None:
    """VALKEY_URL=unix://...: the settings accept it, and the operator's client uses it."""
    # A socket's path has at most 107 bytes; pytest's tmp_path can be longer.
    with tempfile.TemporaryDirectory(prefix="vk-") as short:
        socket = Path(short) / "valkey.sock"
        proc, _ = localvalkey.start(tmp_path, unix_socket=socket)
        try:
            url = f"unix://{socket}?db=0"
            config = settings.load({"VALKEY_URL": url})

            async def scenario() -> tuple[mirror.ServerInfo, dict[str, str] | None]:
                conn = mirror.connect(config)
                try:
                    found = await mirror.server_info(conn, url, timeout=5)
                    m = mirror.Mirror(conn)
                    await m.record(AGENT, LIFE[0])
                    return found, await m.get(AGENT.namespace, AGENT.name)
                finally:
                    await mirror.close(conn)

            found, record = asyncio.run(scenario())
        finally:
            procs.stop(proc)
    assert found.server == "valkey"
    assert record is not None
    assert (record["uid"], record["phase"]) == (AGENT.uid, "Spawning")


def test_each_test_starts_with_an_empty_database(valkey_url: str) -> None:
    with redis.Redis.from_url(valkey_url) as client:
        assert client.dbsize() == 0
        client.set("left-behind", "by this test")


def test_also_the_next_one(valkey_url: str) -> None:
    with redis.Redis.from_url(valkey_url) as client:
        assert client.dbsize() == 0


def test_a_client_reconnects_after_the_server_restarts(
    restartable_valkey: RestartableValkey,
) -> None:
    async def scenario() -> tuple[object, object]:
        conn = mirror.client(restartable_valkey.url)
        try:
            await conn.set("before", "restart")
            restartable_valkey.stop()
            with pytest.raises(
                mirror.ValkeyUnavailable, match=r"cannot reach Valkey at redis://127\.0\.0\.1"
            ):
                await mirror.server_info(conn, restartable_valkey.url)
            restartable_valkey.start()
            # The same client object: its pool drops the dead connection and dials again.
            await conn.set("after", "restart")
            return await conn.get("before"), await conn.get("after")
        finally:
            await conn.aclose()

    before, after = asyncio.run(scenario())
    assert before is None, "persistence is off: a restarted mirror starts empty"
    assert after == b"restart"


def test_an_unreachable_server_is_a_clear_bounded_error() -> None:
    url = f"redis://:hunter2@127.0.0.1:{procs.free_port()}/0"
    message = valkey_refusal(url, attempts=2)
    assert message.startswith("cannot reach Valkey at redis://:***@127.0.0.1:")
    assert "hunter2" not in message


def test_a_password_in_the_url_authenticates_and_a_wrong_one_is_named(tmp_path: Path) -> None:
    proc, url = localvalkey.start(tmp_path, password="s3cret-pass")
    wrong = url.replace("s3cret-pass", "guess")

    async def probe(target: str) -> mirror.ServerInfo:
        conn = mirror.client(target, attempts=1)
        try:
            return await mirror.server_info(conn, target)
        finally:
            await conn.aclose()

    try:
        assert asyncio.run(probe(url)).server == "valkey"
        with pytest.raises(mirror.ValkeyUnavailable) as caught:
            asyncio.run(probe(wrong))
    finally:
        procs.stop(proc)
    message = str(caught.value)
    assert message.startswith("cannot reach Valkey at redis://:***@127.0.0.1:")
    assert "guess" not in message
    assert "invalid username-password" in message.lower() or "wrongpass" in message.lower()
