"""The Valkey mirror of every agent's status (connection for now).

Kubernetes is the source of truth; Valkey mirrors it for consumers outside the
cluster. This module owns the connection: from ``VALKEY_URL`` (user and
password allowed, ``rediss://`` for TLS), with bounded retries, and a clear
error naming the server (never its password) when it cannot be reached.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass
from typing import Final

import redis.asyncio
import redis.backoff
import redis.exceptions
import redis.retry

CONNECT_ATTEMPTS: Final = 5


class ValkeyUnavailable(RuntimeError):
    """Valkey could not be reached; the message names the server and the cause."""


@dataclass(frozen=True)
class ServerInfo:
    address: str
    server: str
    version: str


def redact(url: str) -> str:
    """The URL with any password replaced by ``***``, fit for logs and errors."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def client(url: str, attempts: int = CONNECT_ATTEMPTS) -> redis.asyncio.Redis:
    """A client that retries a failed command ``attempts`` times with exponential backoff."""
    return redis.asyncio.Redis.from_url(
        url,
        socket_connect_timeout=5,
        socket_timeout=10,
        retry=redis.retry.Retry(redis.backoff.ExponentialBackoff(cap=2.0, base=0.1), attempts),
        retry_on_error=[redis.exceptions.ConnectionError, redis.exceptions.TimeoutError],
    )


async def server_info(conn: redis.asyncio.Redis, url: str) -> ServerInfo:
    """PING and INFO the server: proves the address and credentials work."""
    try:
        await conn.ping()
        info = await conn.info("server")
    except redis.exceptions.RedisError as exc:
        raise ValkeyUnavailable(f"cannot reach Valkey at {redact(url)}: {exc}") from None
    # Valkey reports itself as server_name:valkey; Redis has no such field.
    return ServerInfo(
        address=redact(url),
        server=str(info.get("server_name", "redis")),
        version=str(info.get("valkey_version", info.get("redis_version", "?"))),
    )
