"""Helpers shared by every test tier."""

from __future__ import annotations

import asyncio
import time
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
        conn = mirror.client(url, attempts, **(files or {}))
        try:
            await mirror.server_info(conn, url)
        finally:
            await conn.aclose()

    with pytest.raises(mirror.ValkeyUnavailable) as caught:
        asyncio.run(probe())
    message = str(caught.value)
    assert message.startswith(f"cannot reach Valkey at {mirror.redact(url)}: ")
    return message
