"""The conditions each phase shows, as kstatus, Argo CD, Flux and `kubectl wait` read them."""

from __future__ import annotations

import datetime

import pytest

from controller import lifecycle, models, status

NOW = datetime.datetime(2026, 1, 1, 10, 0, tzinfo=datetime.UTC)
EARLIER = NOW - datetime.timedelta(minutes=5)

TABLE = {
    "Spawning": (
        "Created",
        {"Ready": "False", "Reconciling": "True", "Stalled": "False", "Finished": "False"},
    ),
    "Running": (
        "Started",
        {"Ready": "True", "Reconciling": "False", "Stalled": "False", "Finished": "False"},
    ),
    "Completed": (
        "Completed",
        {"Ready": "True", "Reconciling": "False", "Stalled": "False", "Finished": "True"},
    ),
    "Failed": (
        "WorkloadFailed",
        {"Ready": "False", "Reconciling": "False", "Stalled": "True", "Finished": "True"},
    ),
    "Killed": (
        "KillswitchEngaged",
        {"Ready": "False", "Reconciling": "False", "Stalled": "False", "Finished": "True"},
    ),
}


@pytest.mark.parametrize(
    ("phase", "reason", "expected"),
    [(phase, reason, expected) for phase, (reason, expected) in TABLE.items()],
    ids=[f"a {phase.lower()} agent" for phase in TABLE],
)
def test_each_phase_shows_its_conditions(phase: str, reason: str, expected: dict[str, str]) -> None:
    life = lifecycle.Life(phase=lifecycle.Phase(phase), seq=1, reason=reason)
    found = status.conditions(life, 3, NOW, [])
    assert {c.type: c.status for c in found} == expected
    assert all(c.observed_generation == 3 for c in found)


@pytest.mark.parametrize("ending", ["Completed", "Failed", "Killed"])
def test_finished_names_the_ending_whatever_the_reason(ending: str) -> None:
    life = lifecycle.Life(phase=lifecycle.Phase(ending), seq=3, reason="SpawnTimeout")
    finished = next(c for c in status.conditions(life, 1, NOW, []) if c.type == status.FINISHED)
    assert (finished.status, finished.reason) == ("True", ending)


def test_a_condition_keeps_its_time_while_its_status_holds() -> None:
    before = [
        models.Condition(type="Finished", status="False", last_transition_time=EARLIER),
        models.Condition(type="Ready", status="False", last_transition_time=EARLIER),
    ]
    life = lifecycle.Life(phase=lifecycle.Phase.RUNNING, seq=2, reason="Started")
    found = {c.type: c for c in status.conditions(life, 1, NOW, before)}
    assert found["Finished"].last_transition_time == EARLIER, "still False: the time stays"
    assert found["Ready"].last_transition_time == NOW, "False to True: it changed now"
