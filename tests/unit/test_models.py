"""The models parse what users write and serialize what the operator writes."""

from __future__ import annotations

import datetime
from pathlib import Path

import pydantic
import pytest
import yaml

from controller import lifecycle, models

SAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "samples" / "agent.yaml"


def test_the_sample_agent_parses_with_defaults() -> None:
    agent = models.Agent.model_validate(yaml.safe_load(SAMPLE.read_text()))
    assert agent.spec.task_id == "TASK-1"
    assert agent.spec.desired_phase is models.DesiredPhase.RUNNING
    assert agent.spec.kill_grace_period_seconds == 10
    assert agent.spec.spawn_timeout_seconds == 300
    assert agent.spec.active_deadline_seconds is None
    assert agent.spec.ttl_seconds_after_finished is None  # the operator's default applies
    assert agent.spec.template.spec.containers[0].image == "registry.example/agent-worker:1.4"
    assert agent.ref == "default/sample-worker"
    assert agent.status.phase is None


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"taskId": ""}, "taskId"),
        ({"agentType": "Worker_1"}, "agentType"),
        ({"desiredPhase": "Paused"}, "desiredPhase"),
        ({"killGracePeriodSeconds": -1}, "killGracePeriodSeconds"),
        ({"ttlSecondsAfterFinished": -1}, "ttlSecondsAfterFinished"),
        ({"template": {"spec": {"containers": []}}}, "template"),
    ],
    ids=[
        "empty taskId",
        "agentType not a DNS label",
        "unknown desired phase",
        "negative grace",
        "negative TTL after finishing",
        "no containers",
    ],
)
def test_bad_specs_are_refused_naming_the_field(change: dict[str, object], field: str) -> None:
    spec = {"taskId": "T-1", "template": {"spec": {"containers": [{"name": "a", "image": "i"}]}}}
    with pytest.raises(pydantic.ValidationError) as caught:
        models.AgentSpec.model_validate({**spec, **change})
    assert caught.value.errors()[0]["loc"][0] == field


def test_times_are_utc_with_milliseconds() -> None:
    moment = datetime.datetime(
        2026, 1, 1, 11, 0, 1, 123456, tzinfo=datetime.timezone(datetime.timedelta(hours=1))
    )
    assert models.format_time(moment) == "2026-01-01T10:00:01.123Z"
    assert models.parse_time("2026-01-01T10:00:01.123Z") == moment.replace(microsecond=123000)


def test_status_gives_the_machine_its_life() -> None:
    status = models.AgentStatus.model_validate(
        {
            "phase": "Running",
            "seq": 2,
            "startedAt": "2026-01-01T10:00:02.000Z",
            "history": [
                {"phase": "Spawning", "at": "2026-01-01T10:00:00.000Z", "reason": "Created"},
                {"phase": "Running", "at": "2026-01-01T10:00:02.000Z", "reason": "Started"},
            ],
        }
    )
    life = status.life()
    assert life.phase is lifecycle.Phase.RUNNING
    assert life.seq == 2
    assert life.spawning_since == models.parse_time("2026-01-01T10:00:00Z")
    dumped = status.model_dump(by_alias=True, mode="json", exclude_none=True)
    assert dumped["startedAt"] == "2026-01-01T10:00:02.000Z"
    assert dumped["history"][0] == {
        "phase": "Spawning",
        "at": "2026-01-01T10:00:00.000Z",
        "reason": "Created",
    }


def test_event_types_follow_phases() -> None:
    assert [models.event_type(p).value for p in lifecycle.Phase] == [
        "agent.spawning",
        "agent.running",
        "agent.completed",
        "agent.failed",
        "agent.killed",
    ]


def test_api_version_is_group_and_version() -> None:
    assert f"{models.GROUP}/{models.VERSION}" == models.API_VERSION


def test_an_agent_names_itself_to_the_mirror() -> None:
    from controller import mirror

    agent = models.Agent.model_validate(
        {
            **yaml.safe_load(SAMPLE.read_text()),
            "metadata": {"name": "w", "namespace": "team-a", "uid": "u-1"},
        }
    )
    assert mirror.AgentRef.of(agent) == mirror.AgentRef("team-a", "w", "u-1", "TASK-1", "worker")
