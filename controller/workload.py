"""The agent's workload: rendering its Pod, and reading a Pod back as an observation.

Pure: dictionaries in, dictionaries (or ``lifecycle.Workload``) out.

The Pod is named deterministically from the Agent's name and uid, so a retried
create can never make two, and a recreated Agent (new uid) never collides with
its predecessor's Pod that may still be terminating.
"""

from __future__ import annotations

import datetime
from typing import Any, Final

from controller import lifecycle, models

LABEL_AGENT: Final = f"{models.GROUP}/agent"
LABEL_AGENT_UID: Final = f"{models.GROUP}/agent-uid"
MAX_NAME: Final = 253


def pod_name(agent: models.Agent) -> str:
    suffix = agent.metadata.uid.replace("-", "")[:5]
    return f"{agent.metadata.name[: MAX_NAME - len(suffix) - 1]}-{suffix}"


def render(agent: models.Agent) -> dict[str, Any]:
    """The Pod of an agent: its template, plus what the operator guarantees."""
    template = agent.spec.template.model_dump(by_alias=True, exclude_none=True)
    metadata = template.get("metadata", {})
    spec = template["spec"]
    env = [
        {"name": "AGENT_NAME", "value": agent.metadata.name},
        {"name": "TASK_ID", "value": agent.spec.task_id},
    ]
    for container in spec["containers"]:
        ours = {e["name"] for e in env}
        container["env"] = [
            *env,
            *(e for e in container.get("env", []) if e.get("name") not in ours),
        ]
    spec["restartPolicy"] = "Never"
    spec["terminationGracePeriodSeconds"] = agent.spec.kill_grace_period_seconds
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": pod_name(agent),
            "namespace": agent.metadata.namespace,
            "labels": {
                **metadata.get("labels", {}),
                LABEL_AGENT: agent.metadata.name[:63],
                LABEL_AGENT_UID: agent.metadata.uid,
            },
            "annotations": metadata.get("annotations", {}),
            "ownerReferences": [
                {
                    "apiVersion": models.API_VERSION,
                    "kind": "Agent",
                    "name": agent.metadata.name,
                    "uid": agent.metadata.uid,
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": spec,
    }


def _time(text: Any) -> datetime.datetime | None:
    return models.parse_time(text) if isinstance(text, str) and text else None


def observe(pod: dict[str, Any] | None) -> lifecycle.Workload:
    """What the phase machine needs to know of a Pod (None: there is no Pod)."""
    if pod is None:
        return lifecycle.NO_POD
    status = pod.get("status") or {}
    stopping = bool((pod.get("metadata") or {}).get("deletionTimestamp"))
    containers = status.get("containerStatuses") or []
    states = [c.get("state") or {} for c in containers]
    running = [s["running"] for s in states if s.get("running")]
    terminated = [s["terminated"] for s in states if s.get("terminated")]
    started = [_time(t.get("startedAt")) for t in (*running, *terminated)]
    started_at = min((s for s in started if s), default=None) or _time(status.get("startTime"))
    phase = status.get("phase") or "Pending"
    if phase in ("Succeeded", "Failed"):
        # The container that failed tells the story; otherwise the first one.
        failed = [t for t in terminated if t.get("exitCode")]
        last = (failed or terminated or [{}])[0]
        finished = [_time(t.get("finishedAt")) for t in terminated]
        return lifecycle.Workload(
            lifecycle.WorkloadState.SUCCEEDED
            if phase == "Succeeded"
            else lifecycle.WorkloadState.FAILED,
            started_at=started_at,
            finished_at=max((f for f in finished if f), default=None),
            exit_code=last.get("exitCode"),
            termination_message=(last.get("message") or "").strip(),
            termination_reason=last.get("reason") or status.get("reason") or "",
            stopping=stopping,
        )
    if phase == "Running" or running:
        return lifecycle.Workload(
            lifecycle.WorkloadState.RUNNING, started_at=started_at, stopping=stopping
        )
    return lifecycle.Workload(lifecycle.WorkloadState.PENDING, stopping=stopping)
