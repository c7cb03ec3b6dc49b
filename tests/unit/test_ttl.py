"""A finished Agent deletes itself after its TTL (spec.ttlSecondsAfterFinished, else the
operator's AGENT_TTL_SECONDS_AFTER_FINISHED), against the fakes of our Kube and Mirror.

When is ``lifecycle.expiry``'s, tested with the phase machine; here: the pass that
finds the time come deletes this very Agent (by uid) and says why with an Event, a pass
before it asks to look again then, and a restarted operator finds the same time.
"""

from __future__ import annotations

import asyncio
import datetime
from typing import Any

import pytest

from controller import app, credentials, kube, models, workqueue
from tests.unit.fakes import KEY, NOW, FakeKube, operator, recorded_agent, running_pod

PHASES_TO = {
    "Completed": ("Spawning", "Running", "Completed"),
    "Failed": ("Spawning", "Running", "Failed"),
    "Killed": ("Spawning", "Killed"),
}


def finished(phase: str, ago: float, **spec: Any) -> FakeKube:
    """An API server holding one Agent that ended ``phase`` ``ago`` seconds before NOW."""
    api = recorded_agent(*PHASES_TO[phase], **spec)
    assert api.body is not None
    ended = NOW - datetime.timedelta(seconds=ago)
    api.body["status"]["completedAt"] = models.format_time(ended)
    api.body["status"]["history"][-1]["at"] = models.format_time(ended)
    return api


def one_pass(op: app.Operator) -> workqueue.Result:
    return asyncio.run(op.agents.reconcile(KEY))


def ttl_events(api: FakeKube) -> list[tuple[str, str, str]]:
    return [e for e in api.events if e[1] == "TTLExpired"]


@pytest.mark.parametrize("phase", PHASES_TO.keys())
def test_a_finished_agent_is_deleted_once_its_ttl_has_run_out(phase: str) -> None:
    api = finished(phase, ago=30, ttlSecondsAfterFinished=30)
    op, _ = operator(api)
    result = one_pass(op)
    assert api.agents_deleted == ["uid-1"]
    assert ttl_events(api) == [
        ("Normal", "TTLExpired", "deleted 30 s after it finished (ttlSecondsAfterFinished=30)")
    ]
    assert result == workqueue.Result(), "its deletion comes back through the watch"


@pytest.mark.parametrize("phase", PHASES_TO.keys())
def test_before_its_ttl_runs_out_it_is_looked_at_again_then(phase: str) -> None:
    api = finished(phase, ago=10, ttlSecondsAfterFinished=30)
    op, _ = operator(api)
    result = one_pass(op)
    assert (api.agents_deleted, ttl_events(api)) == ([], [])
    assert result.requeue_after == pytest.approx(20.0)


def test_the_operators_default_applies_when_the_spec_names_none() -> None:
    api = finished("Completed", ago=90)
    op, _ = operator(api, ttl_after_finished=60)
    one_pass(op)
    assert api.agents_deleted == ["uid-1"]
    assert ttl_events(api) == [
        (
            "Normal",
            "TTLExpired",
            "deleted 90 s after it finished (the operator's AGENT_TTL_SECONDS_AFTER_FINISHED=60)",
        )
    ]


def test_the_operators_default_is_looked_at_again_when_it_comes_due() -> None:
    api = finished("Failed", ago=15)
    op, _ = operator(api, ttl_after_finished=60)
    assert one_pass(op).requeue_after == pytest.approx(45.0)
    assert api.agents_deleted == []


def test_an_agent_with_neither_ttl_is_kept_and_never_looked_at_again() -> None:
    api = finished("Completed", ago=86_400 * 365)
    op, _ = operator(api)
    assert one_pass(op) == workqueue.Result()
    assert (api.agents_deleted, ttl_events(api)) == ([], [])


def test_its_own_ttl_of_zero_wins_over_the_operators_and_deletes_it_as_it_finishes() -> None:
    api = recorded_agent("Spawning", "Running", ttlSecondsAfterFinished=0)
    api.pod = running_pod()
    api.pod["status"]["phase"] = "Succeeded"
    op, _ = operator(api, ttl_after_finished=3600)
    one_pass(op)
    assert api.body is not None
    assert api.body["status"]["phase"] == "Completed"
    assert api.agents_deleted == ["uid-1"]
    assert [(k, r) for k, r, _ in api.events] == [
        ("Normal", "Completed"),
        ("Normal", "TTLExpired"),
    ], "the ending is on record before the Agent goes"


def test_an_unfinished_agent_is_never_deleted() -> None:
    api = recorded_agent("Spawning", "Running", ttlSecondsAfterFinished=0)
    api.pod = running_pod()
    op, _ = operator(api)
    assert one_pass(op) == workqueue.Result()
    assert api.agents_deleted == []


def test_an_agent_being_deleted_is_not_deleted_again() -> None:
    api = finished("Completed", ago=60, ttlSecondsAfterFinished=30)
    assert api.body is not None
    api.body["metadata"]["deletionTimestamp"] = models.format_time(NOW)
    op, _ = operator(api)
    one_pass(op)
    assert (api.agents_deleted, ttl_events(api)) == ([], [])


@pytest.mark.parametrize(
    ("ttl", "look_again"),
    [(100, 15.0), (13, 3.0)],
    ids=["a stopping Pod due before the TTL", "the TTL due before a stopping Pod"],
)
def test_it_is_looked_at_again_at_the_earlier_of_its_ttl_and_its_next_look(
    ttl: int, look_again: float
) -> None:
    api = finished("Killed", ago=10, ttlSecondsAfterFinished=ttl)
    api.pod = running_pod()
    # Still stopping: the operator looks again STOP_SLACK (10 s) after its deletion's due time.
    api.pod["metadata"]["deletionTimestamp"] = models.format_time(
        NOW + datetime.timedelta(seconds=5)
    )
    op, _ = operator(api)
    assert one_pass(op).requeue_after == pytest.approx(look_again)


def test_a_restarted_operator_finds_the_time_from_completed_at() -> None:
    """Nothing is remembered: priming queues every agent, finished ones too, and the first
    pass derives the time again."""
    api = finished("Completed", ago=45, ttlSecondsAfterFinished=30)
    op, _ = operator(api)

    async def restart() -> None:
        await op.prime()
        assert len(op.agents_queue) == 1, "the finished agent gets a pass"
        workers = asyncio.create_task(op.run())
        for _ in range(500):
            if api.agents_deleted:
                break
            await asyncio.sleep(0.01)
        workers.cancel()
        await asyncio.gather(workers, return_exceptions=True)

    asyncio.run(restart())
    assert api.agents_deleted == ["uid-1"]
    assert ttl_events(api)[0][2] == "deleted 45 s after it finished (ttlSecondsAfterFinished=30)"


# --- kube.delete_agent: the uid precondition ---


class Answering(kube.Kube):
    """A Kube whose API server answers every request with ``error`` (None: success)."""

    def __init__(self, error: kube.ApiError | None) -> None:
        super().__init__(credentials.Credentials(server="https://127.0.0.1:6443"))
        self.error = error
        self.sent: list[tuple[str, str, dict[str, Any] | None]] = []

    async def request(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        content_type: str = "application/json",
        params: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        self.sent.append((method, path, body))
        if self.error is not None:
            raise self.error
        return {}


def test_delete_agent_names_the_uid_it_means() -> None:
    api = Answering(None)
    asyncio.run(api.delete_agent("team-a", "worker", "uid-1"))
    assert api.sent == [
        (
            "DELETE",
            f"/apis/{models.API_VERSION}/namespaces/team-a/agents/worker",
            {"apiVersion": "v1", "kind": "DeleteOptions", "preconditions": {"uid": "uid-1"}},
        )
    ]


@pytest.mark.parametrize(
    "error",
    [
        kube.NotFound(404, 'agents "worker" not found'),
        kube.Conflict(409, "Precondition failed: UID in precondition: uid-1, UID in object: uid-2"),
    ],
    ids=["an Agent gone already", "an Agent of that name made again since"],
)
def test_delete_agent_treats_a_missing_or_newer_agent_as_gone(error: kube.ApiError) -> None:
    asyncio.run(Answering(error).delete_agent("team-a", "worker", "uid-1"))


def test_delete_agent_raises_any_other_refusal() -> None:
    refusal = kube.ApiError(403, "agents is forbidden")
    with pytest.raises(kube.ApiError, match="forbidden"):
        asyncio.run(Answering(refusal).delete_agent("team-a", "worker", "uid-1"))
