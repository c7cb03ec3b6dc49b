"""The phase machine: its edges, its decisions, and properties over any sequence of observations."""

from __future__ import annotations

import dataclasses
import datetime
import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controller import lifecycle
from controller.lifecycle import (
    Action,
    Kill,
    Life,
    Limits,
    Phase,
    Reason,
    Workload,
    WorkloadState,
)

T0 = datetime.datetime(2026, 1, 1, 10, 0, 0, tzinfo=datetime.UTC)


def at(seconds: float) -> datetime.datetime:
    return T0 + datetime.timedelta(seconds=seconds)


# Written out independently of lifecycle.EDGES: DESIGN.md's table.
LEGAL = {
    (None, Phase.SPAWNING),
    (Phase.SPAWNING, Phase.RUNNING),
    (Phase.SPAWNING, Phase.FAILED),
    (Phase.SPAWNING, Phase.KILLED),
    (Phase.RUNNING, Phase.COMPLETED),
    (Phase.RUNNING, Phase.FAILED),
    (Phase.RUNNING, Phase.KILLED),
}
FROM = [None, *Phase]


@pytest.mark.parametrize(
    ("current", "to"),
    list(itertools.product(FROM, Phase)),
    ids=[f"{c or 'nothing'} to {t}" for c, t in itertools.product(FROM, Phase)],
)
def test_every_phase_pair_against_the_table(current: Phase | None, to: Phase) -> None:
    transition = lifecycle.Transition(to, T0, "Test")
    checked = lifecycle.check(current, transition)
    assert lifecycle.is_legal(current, to) is ((current, to) in LEGAL)
    if (current, to) in LEGAL:
        assert checked is transition
    else:
        assert isinstance(checked, lifecycle.Refusal)
        assert (checked.current, checked.wanted) == (current, to)
        assert checked.sentence


@pytest.mark.parametrize(
    ("current", "to", "sentence"),
    [
        (None, Phase.RUNNING, "an agent's first phase is Spawning, not Running"),
        (
            Phase.COMPLETED,
            Phase.FAILED,
            "the agent is already Completed, which is final; Failed is dropped",
        ),
        (Phase.RUNNING, Phase.RUNNING, "the agent is already Running"),
        (
            Phase.RUNNING,
            Phase.SPAWNING,
            "Running may only move to Completed or Failed or Killed, not to Spawning",
        ),
    ],
    ids=[
        "a first phase other than Spawning",
        "out of a terminal phase",
        "to the same phase",
        "backwards",
    ],
)
def test_a_refusal_says_why(current: Phase | None, to: Phase, sentence: str) -> None:
    refusal = lifecycle.check(current, lifecycle.Transition(to, T0, "Test"))
    assert isinstance(refusal, lifecycle.Refusal)
    assert refusal.sentence == sentence


def test_the_terminal_phases_have_no_way_out() -> None:
    assert {Phase.COMPLETED, Phase.FAILED, Phase.KILLED} == lifecycle.TERMINAL
    assert all(not lifecycle.EDGES[p] for p in lifecycle.TERMINAL)


# --- decide: a table of situations ---

SPAWNING = Life(phase=Phase.SPAWNING, seq=1, spawning_since=T0, reason=Reason.CREATED)
RUNNING = Life(
    phase=Phase.RUNNING, seq=2, spawning_since=T0, started_at=at(2), reason=Reason.STARTED
)
COMPLETED = dataclasses.replace(RUNNING, phase=Phase.COMPLETED, seq=3, completed_at=at(9))
KILLED = dataclasses.replace(SPAWNING, phase=Phase.KILLED, seq=2, completed_at=at(3))

PENDING_POD = Workload(WorkloadState.PENDING)
RUNNING_POD = Workload(WorkloadState.RUNNING, started_at=at(2))
SUCCEEDED_POD = Workload(WorkloadState.SUCCEEDED, started_at=at(2), finished_at=at(7), exit_code=0)
FAILED_POD = Workload(
    WorkloadState.FAILED,
    started_at=at(2),
    finished_at=at(7),
    exit_code=3,
    termination_message="tests failed: 4 of 120",
    termination_reason="Error",
)
KILL = Kill(Reason.KILLED, "runaway spend")


@dataclasses.dataclass(frozen=True)
class Case:
    life: Life
    workload: Workload
    now: datetime.datetime
    phases: list[tuple[Phase, datetime.datetime, str]]  # (to, at, reason) recorded
    action: Action
    kill: Kill | None = None
    pod_made: bool = True
    limits: Limits = dataclasses.field(default_factory=Limits)
    error: str = ""
    refused: list[Phase] = dataclasses.field(default_factory=list)
    pod_refused: str | None = None
    recheck_at: datetime.datetime | None = None


CASES = {
    "a new agent is Spawning and gets its Pod": Case(
        Life(),
        lifecycle.NO_POD,
        T0,
        [(Phase.SPAWNING, T0, "Created")],
        Action.CREATE,
        pod_made=False,
        recheck_at=at(300),
    ),
    "a Spawning agent whose Pod is not made yet gets it": Case(
        SPAWNING, lifecycle.NO_POD, at(1), [], Action.CREATE, pod_made=False, recheck_at=at(300)
    ),
    "a pending Pod waits, until the spawn timeout": Case(
        SPAWNING, PENDING_POD, at(1), [], Action.NONE, recheck_at=at(300)
    ),
    "a started Pod makes the agent Running at the container's start": Case(
        SPAWNING, RUNNING_POD, at(3), [(Phase.RUNNING, at(2), "Started")], Action.NONE
    ),
    "a Running agent with an active deadline is checked again then": Case(
        RUNNING,
        RUNNING_POD,
        at(3),
        [],
        Action.NONE,
        limits=Limits(active_deadline=datetime.timedelta(seconds=60)),
        recheck_at=at(62),
    ),
    "a Running agent without a deadline needs no timer": Case(
        RUNNING, RUNNING_POD, at(3), [], Action.NONE
    ),
    "a Pod that succeeded completes the agent": Case(
        RUNNING, SUCCEEDED_POD, at(8), [(Phase.COMPLETED, at(7), "Completed")], Action.NONE
    ),
    "a Pod that failed fails the agent with its termination message": Case(
        RUNNING,
        FAILED_POD,
        at(8),
        [(Phase.FAILED, at(7), "WorkloadFailed")],
        Action.NONE,
        error="tests failed: 4 of 120",
    ),
    "a Pod that failed without a message fails with its reason and exit code": Case(
        RUNNING,
        dataclasses.replace(FAILED_POD, termination_message=""),
        at(8),
        [(Phase.FAILED, at(7), "WorkloadFailed")],
        Action.NONE,
        error="Error (exit code 3)",
    ),
    "a Pod that jumped from Pending to Succeeded records Running, then Completed": Case(
        SPAWNING,
        SUCCEEDED_POD,
        at(8),
        [(Phase.RUNNING, at(2), "Started"), (Phase.COMPLETED, at(7), "Completed")],
        Action.NONE,
    ),
    "an agent first seen with its Pod running records Spawning, then Running": Case(
        Life(),
        RUNNING_POD,
        at(3),
        [(Phase.SPAWNING, at(3), "Created"), (Phase.RUNNING, at(2), "Started")],
        Action.NONE,
    ),
    "a kill before any Pod exists records Killed and makes none": Case(
        SPAWNING,
        lifecycle.NO_POD,
        at(1),
        [(Phase.KILLED, at(1), "Killed")],
        Action.NONE,
        kill=KILL,
        pod_made=False,
    ),
    "a kill of a new agent never makes a Pod": Case(
        Life(),
        lifecycle.NO_POD,
        T0,
        [(Phase.SPAWNING, T0, "Created"), (Phase.KILLED, T0, "Killed")],
        Action.NONE,
        kill=KILL,
        pod_made=False,
    ),
    "a kill of a running agent stops its Pod first": Case(
        RUNNING, RUNNING_POD, at(4), [], Action.STOP, kill=KILL
    ),
    "a kill waits while the Pod is stopping": Case(
        RUNNING, dataclasses.replace(RUNNING_POD, stopping=True), at(5), [], Action.NONE, kill=KILL
    ),
    "a Pod that exits on SIGTERM is killed, not failed": Case(
        RUNNING,
        dataclasses.replace(FAILED_POD, exit_code=143, stopping=True),
        at(6),
        [(Phase.KILLED, at(6), "Killed")],
        Action.NONE,
        kill=KILL,
    ),
    "a killed agent whose Pod is gone is Killed": Case(
        RUNNING, lifecycle.NO_POD, at(6), [(Phase.KILLED, at(6), "Killed")], Action.NONE, kill=KILL
    ),
    "a kill of a Spawning agent whose Pod started records Running first": Case(
        SPAWNING,
        dataclasses.replace(RUNNING_POD, stopping=True, state=WorkloadState.SUCCEEDED),
        at(6),
        [(Phase.RUNNING, at(2), "Started"), (Phase.KILLED, at(6), "Killed")],
        Action.NONE,
        kill=KILL,
    ),
    "a Pod that completed before the kill reached it completes; the kill is refused": Case(
        RUNNING,
        SUCCEEDED_POD,
        at(8),
        [(Phase.COMPLETED, at(7), "Completed")],
        Action.NONE,
        kill=KILL,
        refused=[Phase.KILLED],
    ),
    "a Pod that vanished while Running is WorkloadLost": Case(
        RUNNING,
        lifecycle.NO_POD,
        at(5),
        [(Phase.FAILED, at(5), "WorkloadLost")],
        Action.NONE,
        error="the Pod disappeared while the agent was Running",
    ),
    "a Pod that vanished while Spawning is WorkloadLost": Case(
        SPAWNING,
        lifecycle.NO_POD,
        at(1),
        [(Phase.FAILED, at(1), "WorkloadLost")],
        Action.NONE,
        error="the Pod disappeared while the agent was Spawning",
    ),
    "the spawn timeout fails the agent and removes its Pod": Case(
        SPAWNING,
        PENDING_POD,
        at(300),
        [(Phase.FAILED, at(300), "SpawnTimeout")],
        Action.REMOVE,
        error="not running after the spawn timeout of 300s",
    ),
    "the spawn timeout of an agent without a Pod fails it": Case(
        SPAWNING,
        lifecycle.NO_POD,
        at(301),
        [(Phase.FAILED, at(301), "SpawnTimeout")],
        Action.NONE,
        pod_made=False,
        error="not running after the spawn timeout of 300s",
    ),
    "the active deadline fails the agent and removes its Pod": Case(
        RUNNING,
        RUNNING_POD,
        at(62),
        [(Phase.FAILED, at(62), "DeadlineExceeded")],
        Action.REMOVE,
        limits=Limits(active_deadline=datetime.timedelta(seconds=60)),
        error="still running at the active deadline of 60s",
    ),
    "a finished agent's Pod that still runs is removed": Case(
        COMPLETED, RUNNING_POD, at(10), [], Action.REMOVE
    ),
    "a finished agent's stopping Pod is left to go": Case(
        COMPLETED, dataclasses.replace(RUNNING_POD, stopping=True), at(10), [], Action.NONE
    ),
    "a Killed agent's Pod that then succeeded is refused": Case(
        KILLED, SUCCEEDED_POD, at(10), [], Action.NONE, refused=[Phase.COMPLETED]
    ),
    "a Completed agent cannot be killed": Case(
        COMPLETED, SUCCEEDED_POD, at(10), [], Action.NONE, kill=KILL, refused=[Phase.KILLED]
    ),
    "a template the API server refuses fails the agent": Case(
        SPAWNING,
        lifecycle.NO_POD,
        at(1),
        [(Phase.FAILED, at(1), "InvalidTemplate")],
        Action.NONE,
        pod_made=False,
        pod_refused="Pod is invalid: spec.containers[0].image: Required value",
        error="Pod is invalid: spec.containers[0].image: Required value",
    ),
    "a refused template of an agent being killed is moot": Case(
        SPAWNING,
        lifecycle.NO_POD,
        at(1),
        [(Phase.KILLED, at(1), "Killed")],
        Action.NONE,
        pod_made=False,
        kill=KILL,
        pod_refused="Pod is invalid",
    ),
    "deleting a finished agent refuses nothing": Case(
        COMPLETED, SUCCEEDED_POD, at(10), [], Action.NONE, kill=Kill(Reason.AGENT_DELETED)
    ),
    "a kill under way ends as that kill after its cause is gone": Case(
        dataclasses.replace(
            RUNNING, stopping=Kill(Reason.KILLSWITCH_ENGAGED, "killswitch all-stop")
        ),
        lifecycle.NO_POD,
        at(6),
        [(Phase.KILLED, at(6), "KillswitchEngaged")],
        Action.NONE,
    ),
    "a kill under way waits for its Pod to go": Case(
        dataclasses.replace(RUNNING, stopping=KILL),
        dataclasses.replace(RUNNING_POD, stopping=True),
        at(6),
        [],
        Action.NONE,
    ),
    "a Killed agent asked to die again has nothing to refuse": Case(
        KILLED, lifecycle.NO_POD, at(10), [], Action.NONE, kill=KILL
    ),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_decide(case: Case) -> None:
    decision = lifecycle.decide(
        case.life, case.workload, case.now, case.limits, case.kill, case.pod_made, case.pod_refused
    )
    assert [(t.to, t.at, t.reason) for t in decision.transitions] == case.phases
    assert decision.action is case.action
    assert [r.wanted for r in decision.refusals] == case.refused
    assert all(r.sentence for r in decision.refusals)
    assert decision.recheck_at == case.recheck_at
    if case.error:
        assert decision.transitions[-1].error == case.error
    assert decision.life.seq == case.life.seq + len(case.phases)
    if case.phases:
        assert decision.life.phase is case.phases[-1][0]


def test_a_kill_keeps_its_reason_and_message() -> None:
    kill = Kill(Reason.KILLSWITCH_ENGAGED, "killswitch all-stop: runaway spend")
    decision = lifecycle.decide(RUNNING, lifecycle.NO_POD, at(5), kill=kill)
    (killed,) = decision.transitions
    assert (killed.reason, killed.message) == (
        "KillswitchEngaged",
        "killswitch all-stop: runaway spend",
    )
    assert decision.life.completed_at == at(5)


def test_the_kill_on_record_wins_over_a_later_one() -> None:
    first = Kill(Reason.KILLED, "over budget", "alice")
    stopping = dataclasses.replace(RUNNING, stopping=first)
    later = Kill(Reason.KILLSWITCH_ENGAGED, "killswitch all-stop: spend", "bob")
    decision = lifecycle.decide(stopping, lifecycle.NO_POD, at(5), kill=later)
    (killed,) = decision.transitions
    assert (killed.reason, killed.message, killed.by) == ("Killed", "over budget", "alice")


def test_the_life_keeps_start_and_completion_times() -> None:
    decision = lifecycle.decide(SPAWNING, SUCCEEDED_POD, at(8))
    assert decision.life.started_at == at(2)
    assert decision.life.completed_at == at(7)
    assert decision.life.reason == "Completed"


def test_a_failure_without_exit_code_says_its_reason() -> None:
    assert Workload(WorkloadState.FAILED, termination_reason="OOMKilled").failure() == "OOMKilled"
    assert Workload(WorkloadState.FAILED).failure() == "Error"


# --- properties: any sequence of observations and kill requests ---

workloads = st.builds(
    Workload,
    state=st.sampled_from(WorkloadState),
    started_at=st.none() | st.integers(0, 50).map(at),
    finished_at=st.none() | st.integers(0, 50).map(at),
    exit_code=st.none() | st.integers(0, 255),
    stopping=st.booleans(),
)
steps = st.lists(
    st.tuples(
        workloads,
        st.integers(0, 400),  # seconds that pass before this observation
        st.none() | st.sampled_from([KILL, Kill(Reason.AGENT_DELETED)]),
        st.booleans(),  # whether a Pod was made
    ),
    max_size=12,
)
limits = st.builds(
    Limits,
    spawn_timeout=st.integers(1, 600).map(lambda s: datetime.timedelta(seconds=s)),
    active_deadline=st.none() | st.integers(1, 600).map(lambda s: datetime.timedelta(seconds=s)),
)


@settings(max_examples=400, deadline=None)
@given(steps=steps, rules=limits)
def test_any_sequence_records_only_legal_transitions(
    steps: list[tuple[Workload, int, Kill | None, bool]], rules: Limits
) -> None:
    life, now, recorded = Life(), T0, 0
    for workload, elapsed, kill, pod_made in steps:
        now += datetime.timedelta(seconds=elapsed)
        decision = lifecycle.decide(life, workload, now, rules, kill, pod_made)
        phase = life.phase
        for transition in decision.transitions:
            assert lifecycle.is_legal(phase, transition.to), (phase, transition)
            phase = transition.to
        if life.phase in lifecycle.TERMINAL:
            assert decision.transitions == ()
            assert decision.life == life
        recorded += len(decision.transitions)
        assert decision.life.seq == recorded
        assert decision.life.phase is phase
        if decision.life.phase in lifecycle.TERMINAL:
            assert decision.action in (Action.NONE, Action.REMOVE)
            assert decision.life.completed_at is not None
        life = decision.life


@settings(max_examples=300, deadline=None)
@given(steps=steps, rules=limits)
def test_a_decision_once_recorded_is_stable(
    steps: list[tuple[Workload, int, Kill | None, bool]], rules: Limits
) -> None:
    """Deciding again on the same observation records nothing more: retries never duplicate."""
    life, now = Life(), T0
    for workload, elapsed, kill, pod_made in steps:
        now += datetime.timedelta(seconds=elapsed)
        first = lifecycle.decide(life, workload, now, rules, kill, pod_made)
        again = lifecycle.decide(first.life, workload, now, rules, kill, pod_made)
        assert again.transitions == ()
        life = first.life


EXPIRIES = {
    "an agent that has not finished is kept": (None, 30, 60, None),
    "its own TTL counts from its ending": (at(0), 30, 0, at(30)),
    "its own TTL of 0 deletes it at once": (at(0), 0, 0, at(0)),
    "its own TTL wins over the operator's": (at(0), 10, 60, at(10)),
    "its own TTL of 0 wins over the operator's too": (at(0), 0, 60, at(0)),
    "without one, the operator's applies": (at(0), None, 60, at(60)),
    "without either, it is kept": (at(0), None, 0, None),
}


@pytest.mark.parametrize(
    ("completed_at", "spec_ttl", "default_ttl", "expected"),
    EXPIRIES.values(),
    ids=EXPIRIES.keys(),
)
def test_when_a_finished_agent_expires(
    completed_at: datetime.datetime | None,
    spec_ttl: int | None,
    default_ttl: int,
    expected: datetime.datetime | None,
) -> None:
    assert lifecycle.expiry(completed_at, spec_ttl, default_ttl) == expected
