"""The Agent's status as the operator writes it: pure, from the phase machine's life.

Conditions follow the conventions kstatus, Argo CD and Flux read:

| phase      | Ready          | Reconciling  | Stalled      | Finished          |
|------------|----------------|--------------|--------------|-------------------|
| Spawning   | False          | True         | False        | False             |
| Running    | True           | False        | False        | False             |
| Completed  | True           | False        | False        | True (Completed)  |
| Failed     | False          | False        | True         | True (Failed)     |
| Killed     | False          | False        | False        | True (Killed)     |

``kubectl wait --for=condition=Finished`` returns on any ending (its reason is the
terminal phase); ``--for=condition=Ready`` waits for a running or completed agent;
``--for=condition=Stalled`` for a failed one.
"""

from __future__ import annotations

import datetime
from typing import Final, Literal

from controller import lifecycle, models

READY: Final = "Ready"
RECONCILING: Final = "Reconciling"
STALLED: Final = "Stalled"
FINISHED: Final = "Finished"

_TRUE: Final = {
    READY: {lifecycle.Phase.RUNNING, lifecycle.Phase.COMPLETED},
    RECONCILING: {lifecycle.Phase.SPAWNING},
    STALLED: {lifecycle.Phase.FAILED},
    FINISHED: set(lifecycle.TERMINAL),
}


def conditions(
    life: lifecycle.Life,
    generation: int,
    now: datetime.datetime,
    previous: list[models.Condition],
) -> list[models.Condition]:
    """The conditions for ``life``; a condition keeps its time while its status holds."""
    before = {c.type: c for c in previous}
    out = []
    for kind, phases in _TRUE.items():
        status: Literal["True", "False"] = "True" if life.phase in phases else "False"
        old = before.get(kind)
        since = old.last_transition_time if old is not None and old.status == status else now
        out.append(
            models.Condition(
                type=kind,
                status=status,
                # Finished names the ending itself, so one wait tells which it was.
                reason=(
                    str(life.phase)
                    if kind == FINISHED and status == "True"
                    else life.reason or "Unknown"
                ),
                message=life.error or life.message or f"the agent is {life.phase}",
                last_transition_time=since,
                observed_generation=generation,
            )
        )
    return out


def after(
    status: models.AgentStatus,
    transition: lifecycle.Transition,
    life: lifecycle.Life,
    generation: int,
    now: datetime.datetime,
) -> models.AgentStatus:
    """The status once ``transition`` is recorded; ``life`` is the machine's life after it."""
    return status.model_copy(
        update={
            "phase": life.phase,
            "reason": life.reason,
            "message": life.message,
            "error": life.error,
            "started_at": life.started_at,
            "completed_at": life.completed_at,
            "seq": life.seq,
            "killed_by": transition.by or status.killed_by,
            "observed_generation": generation,
            "history": [
                *status.history,
                models.HistoryEntry(
                    phase=transition.to, at=transition.at, reason=transition.reason
                ),
            ],
            "conditions": conditions(life, generation, now, status.conditions),
        }
    )
