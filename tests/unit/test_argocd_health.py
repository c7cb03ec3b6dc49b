"""Argo CD's health checks for Agent and Killswitch, run by a real Lua interpreter."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lupa
import pytest
import yaml

CONFIGMAP = Path(__file__).resolve().parents[2] / "deploy" / "argocd" / "argocd-cm.yaml"
KEY = "resource.customizations.health.orchestrator.mosaicstack.dev_{}"


def health(kind: str, obj: dict[str, Any]) -> dict[str, str]:
    """Run the ConfigMap's script as Argo CD does: ``obj`` global in, ``hs`` table out."""
    script = yaml.safe_load(CONFIGMAP.read_text())["data"][KEY.format(kind)]
    lua = lupa.LuaRuntime(unpack_returned_tuples=True)
    lua.globals().obj = lua.table_from(obj, recursive=True)
    result = lua.execute(script)
    return {str(k): str(v) for k, v in result.items()}


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (None, ("Progressing", "Waiting for the operator to record the agent")),
        ({"phase": "Spawning", "reason": "Created"}, ("Progressing", "Spawning: Created")),
        ({"phase": "Running", "reason": "Started"}, ("Healthy", "Running: Started")),
        ({"phase": "Completed", "reason": "Completed"}, ("Healthy", "Completed: Completed")),
        (
            {"phase": "Failed", "reason": "WorkloadFailed", "error": "tests failed: 4 of 120"},
            ("Degraded", "Failed: tests failed: 4 of 120"),
        ),
        (
            {"phase": "Killed", "reason": "Killed", "message": "runaway spend"},
            ("Suspended", "Killed: runaway spend"),
        ),
    ],
    ids=["no status yet", "spawning", "running", "completed", "failed", "killed"],
)
def test_agent_health_follows_the_phase(
    status: dict[str, str] | None, expected: tuple[str, str]
) -> None:
    obj: dict[str, Any] = {
        "apiVersion": "orchestrator.mosaicstack.dev/v1alpha1",
        "kind": "Agent",
        "spec": {},
    }
    if status is not None:
        obj["status"] = status
    found = health("Agent", obj)
    assert (found["status"], found["message"]) == expected


@pytest.mark.parametrize(
    ("spec", "status", "expected"),
    [
        ({"engaged": False}, {}, ("Healthy", "Disengaged")),
        (
            {"engaged": True},
            {"matched": 150, "killed": 90},
            ("Progressing", "Engaged: 90 of 150 matched agents stopped"),
        ),
        (
            {"engaged": True},
            {"matched": 150, "killed": 150, "completedAt": "2026-01-01T10:00:09.000Z"},
            ("Suspended", "Engaged: all 150 matched agents are stopped"),
        ),
    ],
    ids=["disengaged", "engaged and killing", "engaged and done"],
)
def test_killswitch_health(
    spec: dict[str, Any], status: dict[str, Any], expected: tuple[str, str]
) -> None:
    found = health("Killswitch", {"kind": "Killswitch", "spec": spec, "status": status})
    assert (found["status"], found["message"]) == expected
