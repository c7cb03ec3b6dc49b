"""The Lease holder's fault paths, against a fake of our own Kube interface.

The e2e tier (tests/e2e/test_ha.py) runs the Lease against the real API server;
these reach what it rarely does on cue: an API server that stops answering
while the Lease is held.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest

from controller import kube, leader


class Unreachable:
    """An API server that answers reads and writes of the Lease as given, then stops answering."""

    def __init__(self, clock: list[float], answers: int) -> None:
        self.clock = clock
        self.answers = answers
        self.record: dict[str, Any] | None = None

    def _answer(self) -> None:
        self.clock[0] += 1.0  # every request takes a second of the holder's time
        if self.answers <= 0:
            raise kube.KubernetesUnavailable("cannot reach the Kubernetes API")
        self.answers -= 1

    async def get_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        self._answer()
        return self.record

    async def create_lease(self, lease: dict[str, Any]) -> dict[str, Any]:
        self._answer()
        if self.record is not None:
            raise kube.Conflict(409, "already exists")
        self.record = {**lease, "metadata": {**lease["metadata"], "resourceVersion": "1"}}
        return self.record

    async def replace_lease(self, lease: dict[str, Any]) -> dict[str, Any]:
        self._answer()
        assert self.record is not None
        if lease["metadata"].get("resourceVersion") != self.record["metadata"]["resourceVersion"]:
            raise kube.Conflict(409, "the object has been modified")
        version = str(int(self.record["metadata"]["resourceVersion"]) + 1)
        self.record = {**lease, "metadata": {**lease["metadata"], "resourceVersion": version}}
        return self.record


def lease(api: Unreachable, clock: list[float]) -> leader.Lease:
    return leader.Lease(
        cast(kube.Kube, api), "ops", "lease", "me", deadline=4, retry=0, monotonic=lambda: clock[0]
    )


def test_a_holder_that_cannot_renew_stops_by_its_deadline() -> None:
    clock = [0.0]
    api = Unreachable(clock, answers=2)  # the GET (404) and the create
    held = lease(api, clock)

    async def scenario() -> None:
        await held.acquire()
        with pytest.raises(leader.LostLease, match="not renewed for 4 s"):
            await held.hold()

    asyncio.run(scenario())
    # It kept trying until the deadline (4 s after the renewal began at 0), and not one
    # request longer: the last try began at 3 and took its second.
    assert clock[0] == 4


def test_releasing_a_lease_that_cannot_be_reached_is_only_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = [0.0]
    api = Unreachable(clock, answers=0)
    asyncio.run(lease(api, clock).release())
    assert "could not release lease lease" in caplog.text


def test_a_lease_held_by_someone_else_is_not_released() -> None:
    clock = [0.0]
    api = Unreachable(clock, answers=5)
    api.record = {
        "metadata": {"name": "lease", "resourceVersion": "7"},
        "spec": {"holderIdentity": "other"},
    }
    asyncio.run(lease(api, clock).release())
    assert api.record["spec"]["holderIdentity"] == "other"
