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
    """An API server that answers GET and PUT as given, then stops answering."""

    def __init__(self, clock: list[float], answers: int) -> None:
        self.clock = clock
        self.answers = answers
        self.record: dict[str, Any] | None = None

    async def request(
        self, method: str, path: str, body: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        self.clock[0] += 1.0  # every request takes a second of the holder's time
        if self.answers <= 0:
            raise kube.KubernetesUnavailable("cannot reach the Kubernetes API")
        self.answers -= 1
        if method == "GET":
            if self.record is None:
                raise kube.NotFound(404, "not found")
            return self.record
        assert body is not None
        self.record = {**body, "metadata": {**body["metadata"], "resourceVersion": "1"}}
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
    assert clock[0] >= 4  # it kept trying until the deadline, not longer


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
