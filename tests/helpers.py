"""Helpers shared by every test tier."""

from __future__ import annotations

import asyncio
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from typing import TypeVar

import pytest

from controller import mirror

T = TypeVar("T")

_NOTHING = object()


class WaitTimeout(AssertionError):
    """``wait_for`` ran out of time; the message says what it last saw."""


def wait_for(
    predicate: Callable[[], T | None],
    timeout: float,
    what: str = "condition",
    interval: float = 0.05,
) -> T:
    """Call ``predicate`` until it returns something truthy, and return that.

    Bounded: after ``timeout`` seconds it fails with the last value the
    predicate returned (or the last exception it raised), so a failing test
    says what it was looking at instead of only that it waited.
    """
    deadline = time.monotonic() + timeout
    last: object = _NOTHING
    while True:
        try:
            value = predicate()
        except Exception as exc:  # reported below if it never comes right
            last = exc
        else:
            if value:
                return value
            last = value
        if time.monotonic() >= deadline:
            seen = "nothing (never called)" if last is _NOTHING else repr(last)
            raise WaitTimeout(f"timed out after {timeout:g} s waiting for {what}; last saw: {seen}")
        time.sleep(interval)


def valkey_refusal(url: str, attempts: int = 1, files: Mapping[str, str] | None = None) -> str:
    """The sentence ``mirror.server_info`` refuses ``url`` with (``files``: the TLS files).

    Fails unless it is refused with ``ValkeyUnavailable``, naming the URL with its
    password hidden.
    """

    async def probe() -> None:
        tls = files or {}
        conn = mirror.client(
            url,
            attempts,
            ca_file=tls.get("ca_file", ""),
            cert_file=tls.get("cert_file", ""),
            key_file=tls.get("key_file", ""),
        )
        try:
            await mirror.server_info(conn, url)
        finally:
            await conn.aclose()

    with pytest.raises(mirror.ValkeyUnavailable) as caught:
        asyncio.run(probe())
    message = str(caught.value)
    assert message.startswith(f"cannot reach Valkey at {mirror.redact(url)}: ")
    return message


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - our own loopback
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def metric(text: str, name: str) -> float:
    """The value of one sample line (``name`` with its labels, exactly), 0 if absent."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0
