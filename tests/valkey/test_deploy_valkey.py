"""deploy/valkey's start script, run as written against a real valkey-server.

The StatefulSet's container writes its config (the password among it) to a file
in memory and execs valkey-server on it. Here the same script runs with the
container's paths moved into a temporary directory and a port of the test's own:
the password is required, the append-only file is on, and data outlives a restart.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import pytest
import redis
import yaml

from localcluster import procs
from localcluster import valkey as localvalkey

STATEFULSET: Final = Path(__file__).resolve().parents[2] / "deploy/valkey/statefulset.yaml"
PASSWORD: Final = "0123456789abcdef"


@dataclass
class Server:
    script: str
    workdir: Path
    port: int
    proc: procs.Proc | None = None

    @property
    def conf(self) -> Path:
        return self.workdir / "run" / "valkey.conf"

    def url(self, password: str | None = PASSWORD) -> str:
        return f"redis://{f':{password}@' if password else ''}127.0.0.1:{self.port}/0"

    def start(self) -> None:
        env = {"PATH": os.environ["PATH"], "VALKEY_PASSWORD": PASSWORD}
        self.proc = procs.start(
            "valkey", ["/bin/sh", "-c", self.script], self.workdir, self.workdir, env=env
        )
        procs.wait_ready(self.proc, lambda: localvalkey.is_ready(self.url()), "ready", 30)

    def stop(self) -> None:
        if self.proc is not None:
            procs.stop(self.proc)
            self.proc = None


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    (container,) = yaml.safe_load(STATEFULSET.read_text())["spec"]["template"]["spec"]["containers"]
    script: str = container["args"][0]
    assert "exec valkey-server /run/valkey/valkey.conf" in script
    (tmp_path / "run").mkdir()
    (tmp_path / "data").mkdir()
    port = procs.free_port()
    script = (
        script.replace("/run/valkey", str(tmp_path / "run"))
        .replace("dir /data", f"dir {tmp_path / 'data'}")
        .replace("exec valkey-server", f"exec {localvalkey.binary()}")
        # Only the test's own loopback port; the container listens on 6379 of its Pod.
        .replace(".conf\n", f".conf --port {port} --bind 127.0.0.1\n")
    )
    running = Server(script, tmp_path, port)
    running.start()
    try:
        yield running
    finally:
        running.stop()


def test_the_password_is_required_and_kept_off_the_command_line(server: Server) -> None:
    with (
        redis.Redis.from_url(server.url(password=None)) as anonymous,
        pytest.raises(redis.AuthenticationError),
    ):
        anonymous.ping()
    with redis.Redis.from_url(server.url()) as client:
        assert client.ping()
    assert server.proc is not None
    assert PASSWORD not in Path(f"/proc/{server.proc.pid}/cmdline").read_text()
    assert stat.S_IMODE(server.conf.stat().st_mode) == 0o600


def test_appendonly_is_on_and_data_outlives_a_restart(server: Server) -> None:
    with redis.Redis.from_url(server.url(), decode_responses=True) as client:
        assert client.config_get("appendonly") == {"appendonly": "yes"}
        assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
        client.set("orchestrator:kept", "across a restart")
    server.stop()
    server.start()
    with redis.Redis.from_url(server.url(), decode_responses=True) as client:
        assert client.get("orchestrator:kept") == "across a restart"
