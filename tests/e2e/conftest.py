"""Fixtures of the e2e tier."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.conftest import Cluster
from tests.e2e.views import Feed


@pytest.fixture
def feed(valkey_url: str) -> Iterator[Feed]:
    """A subscriber on the events channel from before the test acts until after it."""
    subscriber = Feed(valkey_url)
    try:
        yield subscriber
    finally:
        subscriber.close()


@pytest.fixture
def switch_name(cluster: Cluster) -> Iterator[str]:
    """A cluster-scoped Killswitch name of this test's own, deleted at its end."""
    name = f"switch-{uuid.uuid4().hex[:8]}"
    yield name
    cluster.kubectl("delete", "killswitch", name, "--ignore-not-found", check=False)
