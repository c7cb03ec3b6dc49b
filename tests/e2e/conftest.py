"""Fixtures of the e2e tier."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.views import Feed


@pytest.fixture
def feed(valkey_url: str) -> Iterator[Feed]:
    """A subscriber on the events channel from before the test acts until after it."""
    subscriber = Feed(valkey_url)
    try:
        yield subscriber
    finally:
        subscriber.close()
