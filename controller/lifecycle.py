"""The phase machine: which transitions to record, given what is observed.

::

     created ──► Spawning ──► Running ──► Completed
                    │            │
                    │            ├──────► Failed
                    ├────────────┼──────► Failed
                    └────────────┴──────► Killed

A purely computational module: no Kubernetes, Valkey or clock. ``decide`` takes
the agent's recorded life, its effective desired phase, an observation of its
workload and ``now``, and returns a ``Decision``: the transitions to record (in
order; two when the workload jumped, as Pending straight to Succeeded), what to
do to the workload, refusals (as values, each with a sentence), and when to
look again if nothing else happens (timeouts).

Rules, in order of precedence:
- nothing leaves a terminal phase; an observation that would is refused;
- nothing skips a phase: a started (or finished) workload of a Spawning agent
  records Running first, at the container's real start;
- a kill (effective desired phase Killed, or the Agent being deleted) stops the
  workload with the grace period; once the Pod is being deleted its ending is
  the kill's (a container that exits on SIGTERM is killed, not failed), and
  Killed is recorded when it has ended or is gone; once stopping has begun
  (``Life.stopping``) it ends as that kill even if the kill's cause goes away
  or another kill comes (its reason and who asked stay the first kill's);
- a workload that ended before the kill reached it ended on its own: that
  outcome is recorded, and the kill is refused (the first outcome wins);
- a Pod that vanished without being asked to is Failed/WorkloadLost;
- a Pod the API server refuses to make fails the agent (InvalidTemplate);
- the spawn timeout and the active deadline are checked against ``now``.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
from collections.abc import Mapping
from typing import Final


class Phase(enum.StrEnum):
    SPAWNING = "Spawning"
    RUNNING = "Running"
    COMPLETED = "Completed"
    FAILED = "Failed"
    KILLED = "Killed"


INITIAL: Final = Phase.SPAWNING
TERMINAL: Final = frozenset({Phase.COMPLETED, Phase.FAILED, Phase.KILLED})
EDGES: Final[Mapping[Phase, frozenset[Phase]]] = {
    Phase.SPAWNING: frozenset({Phase.RUNNING, Phase.FAILED, Phase.KILLED}),
    Phase.RUNNING: frozenset({Phase.COMPLETED, Phase.FAILED, Phase.KILLED}),
    Phase.COMPLETED: frozenset(),
    Phase.FAILED: frozenset(),
    Phase.KILLED: frozenset(),
}


class Reason(enum.StrEnum):
    """Machine reasons of transitions (``status.reason``), one place for all."""

    CREATED = "Created"
    STARTED = "Started"
    COMPLETED = "Completed"
    WORKLOAD_FAILED = "WorkloadFailed"
    WORKLOAD_LOST = "WorkloadLost"
    SPAWN_TIMEOUT = "SpawnTimeout"
    DEADLINE_EXCEEDED = "DeadlineExceeded"
    KILLED = "Killed"
    KILLSWITCH_ENGAGED = "KillswitchEngaged"
    AGENT_DELETED = "AgentDeleted"
    INVALID_TEMPLATE = "InvalidTemplate"
    QUEUED = "Queued"  # not a transition: Spawning, waiting for a slot (MAX_CONCURRENT_AGENTS)


def is_legal(current: Phase | None, to: Phase) -> bool:
    """True for an edge of the machine; from nothing, only to the initial phase."""
    if current is None:
        return to is INITIAL
    return to in EDGES[current]


@dataclasses.dataclass(frozen=True)
class Transition:
    """One recorded change of phase."""

    to: Phase
    at: datetime.datetime
    reason: str
    message: str = ""
    error: str = ""
    by: str = ""  # for Killed: who asked for the kill ("" when unknown)


@dataclasses.dataclass(frozen=True)
class Refusal:
    """A transition that was asked for (or observed) and not recorded, and why."""

    current: Phase | None
    wanted: Phase
    sentence: str


def check(current: Phase | None, transition: Transition) -> Transition | Refusal:
    """The transition itself if its edge is legal, else a refusal saying why."""
    if is_legal(current, transition.to):
        return transition
    if current is None:
        sentence = f"an agent's first phase is {INITIAL}, not {transition.to}"
    elif current in TERMINAL:
        sentence = f"the agent is already {current}, which is final; {transition.to} is dropped"
    elif current is transition.to:
        sentence = f"the agent is already {current}"
    else:
        allowed = " or ".join(sorted(EDGES[current]))
        sentence = f"{current} may only move to {allowed}, not to {transition.to}"
    return Refusal(current, transition.to, sentence)


@dataclasses.dataclass(frozen=True)
class Life:
    """What has been recorded of an agent so far (from its status)."""

    phase: Phase | None = None
    seq: int = 0
    started_at: datetime.datetime | None = None
    completed_at: datetime.datetime | None = None
    spawning_since: datetime.datetime | None = None
    stopping: Kill | None = None  # a kill whose workload the operator has begun to stop
    reason: str = ""
    message: str = ""
    error: str = ""

    def advance(self, transition: Transition) -> Life:
        """This life with ``transition`` recorded (the caller has checked the edge).

        A Running transition is dated at the container's real start, so it is
        also ``started_at``.
        """
        to = transition.to
        return dataclasses.replace(
            self,
            phase=to,
            seq=self.seq + 1,
            spawning_since=transition.at if to is Phase.SPAWNING else self.spawning_since,
            started_at=transition.at if to is Phase.RUNNING else self.started_at,
            completed_at=transition.at if to in TERMINAL else self.completed_at,
            reason=transition.reason,
            message=transition.message,
            error=transition.error,
        )


class WorkloadState(enum.StrEnum):
    """What is observed of the agent's Pod."""

    ABSENT = "Absent"  # no Pod exists (never made, or gone)
    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


@dataclasses.dataclass(frozen=True)
class Workload:
    state: WorkloadState
    started_at: datetime.datetime | None = None  # when its container started
    finished_at: datetime.datetime | None = None
    exit_code: int | None = None
    termination_message: str = ""
    termination_reason: str = ""
    stopping: bool = False  # deletion has begun (deletionTimestamp set)

    def failure(self) -> str:
        """The ``error`` of a failed workload: its message, or its reason and exit code."""
        if self.termination_message:
            return self.termination_message
        reason = self.termination_reason or "Error"
        return f"{reason} (exit code {self.exit_code})" if self.exit_code is not None else reason


NO_POD: Final = Workload(WorkloadState.ABSENT)


@dataclasses.dataclass(frozen=True)
class Kill:
    """Why the agent must die: a reason of ``Reason`` and a sentence for the record."""

    reason: str
    message: str = ""
    by: str = ""  # who asked, as the API server knew them; "" when unknown


@dataclasses.dataclass(frozen=True)
class Limits:
    """The agent's timing rules (from its spec)."""

    spawn_timeout: datetime.timedelta = datetime.timedelta(seconds=300)
    active_deadline: datetime.timedelta | None = None


class Action(enum.StrEnum):
    NONE = "None"
    CREATE = "Create"  # make the Pod
    STOP = "Stop"  # delete the Pod with the kill grace period
    REMOVE = "Remove"  # delete the Pod at once: it has no business running any more


@dataclasses.dataclass(frozen=True)
class Decision:
    transitions: tuple[Transition, ...] = ()
    action: Action = Action.NONE
    refusals: tuple[Refusal, ...] = ()
    recheck_at: datetime.datetime | None = None  # look again then, if nothing else happens
    life: Life = Life()  # the life after the transitions


_STARTED: Final = frozenset({WorkloadState.RUNNING, WorkloadState.SUCCEEDED, WorkloadState.FAILED})
_ENDED: Final = {WorkloadState.SUCCEEDED: Phase.COMPLETED, WorkloadState.FAILED: Phase.FAILED}
_LIVE: Final = frozenset({WorkloadState.PENDING, WorkloadState.RUNNING})


def decide(
    life: Life,
    workload: Workload,
    now: datetime.datetime,
    limits: Limits = Limits(),
    kill: Kill | None = None,
    pod_made: bool = False,
    pod_refused: str | None = None,
) -> Decision:
    """The transitions to record and the action to take; see the module docstring.

    ``pod_made`` says whether a Pod was ever made for this life (``status.podName``):
    an absent workload then means it was lost, not that it is yet to be made.
    ``pod_refused`` is the API server's sentence when it refused to make the Pod:
    the agent fails with InvalidTemplate instead of trying again.
    """
    transitions: list[Transition] = []
    state = workload.state
    if life.stopping is not None and life.phase not in TERMINAL:
        # A kill under way finishes as that kill, the one on record, even if its cause has
        # gone since (a killswitch disengaged while the Pod was stopping: it is no lost
        # workload) or another has come (its reason and who asked stay the first kill's).
        kill = life.stopping

    def record(transition: Transition) -> Life:
        # Every call below follows an edge of EDGES; the property tests hold it to that.
        transitions.append(transition)
        return life.advance(transition)

    def done(action: Action = Action.NONE, *refusals: Refusal, recheck: bool = False) -> Decision:
        if life.phase in TERMINAL and state in _LIVE and not workload.stopping:
            action = Action.REMOVE  # a finished agent's Pod has no business running
        timer = _timer(life, limits) if recheck else None
        recheck_at = timer.at if timer is not None else None
        return Decision(tuple(transitions), action, refusals, recheck_at, life)

    if life.phase is None:
        life = record(Transition(Phase.SPAWNING, now, Reason.CREATED))
    if life.phase in TERMINAL:
        return done(Action.NONE, *_terminal_refusals(life.phase, workload, kill))

    if state in _STARTED and life.phase is Phase.SPAWNING:
        life = record(Transition(Phase.RUNNING, workload.started_at or now, Reason.STARTED))

    if kill is not None and (workload.stopping or state is WorkloadState.ABSENT):
        if state in _LIVE:
            return done()  # stopping: Killed is recorded once it has ended or is gone
        life = record(Transition(Phase.KILLED, now, kill.reason, kill.message, by=kill.by))
        return done()

    outcome = _ENDED.get(state)
    if outcome is not None:
        at = workload.finished_at or now
        if outcome is Phase.COMPLETED:
            life = record(Transition(outcome, at, Reason.COMPLETED))
        else:
            life = record(Transition(outcome, at, Reason.WORKLOAD_FAILED, error=workload.failure()))
        lost = () if kill is None else (Refusal(outcome, Phase.KILLED, _kill_lost(outcome, kill)),)
        return done(Action.NONE, *lost)

    if kill is not None:
        return done(Action.STOP)

    if state is WorkloadState.ABSENT and (pod_made or life.phase is Phase.RUNNING):
        error = f"the Pod disappeared while the agent was {life.phase}"
        life = record(Transition(Phase.FAILED, now, Reason.WORKLOAD_LOST, error=error))
        return done()

    if pod_refused is not None and state is WorkloadState.ABSENT:
        life = record(Transition(Phase.FAILED, now, Reason.INVALID_TEMPLATE, error=pod_refused))
        return done()

    timer = _timer(life, limits)
    if timer is not None and now >= timer.at:
        life = record(Transition(Phase.FAILED, now, timer.reason, error=timer.error))
        return done()

    return done(Action.CREATE if state is WorkloadState.ABSENT else Action.NONE, recheck=True)


@dataclasses.dataclass(frozen=True)
class _Timer:
    at: datetime.datetime
    reason: Reason
    error: str


def _timer(life: Life, limits: Limits) -> _Timer | None:
    """The timeout that applies to the current phase, if any."""
    if life.phase is Phase.SPAWNING and life.spawning_since is not None:
        limit = _seconds(limits.spawn_timeout)
        return _Timer(
            life.spawning_since + limits.spawn_timeout,
            Reason.SPAWN_TIMEOUT,
            f"not running after the spawn timeout of {limit}",
        )
    if life.phase is Phase.RUNNING and limits.active_deadline is not None and life.started_at:
        limit = _seconds(limits.active_deadline)
        return _Timer(
            life.started_at + limits.active_deadline,
            Reason.DEADLINE_EXCEEDED,
            f"still running at the active deadline of {limit}",
        )
    return None


def expiry(
    completed_at: datetime.datetime | None, spec_ttl: int | None, default_ttl: int
) -> datetime.datetime | None:
    """When a finished agent is to be deleted: ``completed_at`` plus its own TTL after
    finishing (``spec.ttlSecondsAfterFinished``, where 0 is at once) or, if it names none,
    the operator's (``AGENT_TTL_SECONDS_AFTER_FINISHED``, where 0 is never). None: kept."""
    ttl = default_ttl if spec_ttl is None else spec_ttl
    if completed_at is None or (spec_ttl is None and not default_ttl):
        return None
    return completed_at + datetime.timedelta(seconds=ttl)


def _terminal_refusals(phase: Phase, workload: Workload, kill: Kill | None) -> tuple[Refusal, ...]:
    """What a finished agent is asked, or shown, that would change it: all refused."""
    refusals = []
    outcome = _ENDED.get(workload.state)
    if outcome is not None and outcome is not phase and not workload.stopping:
        refusals.append(
            Refusal(
                phase,
                outcome,
                f"the workload ended {outcome} but the agent is already {phase}, "
                "which is final; the outcome is dropped",
            )
        )
    # Deleting a finished agent is routine, not a kill that lost a race.
    if kill is not None and phase is not Phase.KILLED and kill.reason != Reason.AGENT_DELETED:
        refusals.append(Refusal(phase, Phase.KILLED, _kill_lost(phase, kill)))
    return tuple(refusals)


def _kill_lost(phase: Phase, kill: Kill) -> str:
    return f"the agent was already {phase} when the kill ({kill.reason}) came; it is dropped"


def _seconds(delta: datetime.timedelta) -> str:
    return f"{delta.total_seconds():g}s"
