"""Which agents a Killswitch stops, decided purely.

An agent's effective desired phase is Killed if its spec says so, or if any
engaged Killswitch matches it: its namespace's labels match the switch's
``namespaceSelector`` and its own labels the ``agentSelector`` (empty
selectors match everything). The operator never writes the agents' spec, so
GitOps tools see no drift; disengaging stops new kills and revives nothing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

from controller import lifecycle, models


@dataclasses.dataclass(frozen=True)
class Switch:
    name: str
    spec: models.KillswitchSpec
    engaged_by: str = ""  # who last engaged it, as the API server knew them
    disengaged_by: str = ""  # who last disengaged it

    @classmethod
    def of(cls, body: Mapping[str, Any]) -> Switch:
        spec = models.KillswitchSpec.model_validate(body.get("spec") or {})
        annotations = body["metadata"].get("annotations") or {}
        return cls(
            str(body["metadata"]["name"]),
            spec,
            models.who(annotations, models.ENGAGED_BY),
            models.who(annotations, models.DISENGAGED_BY),
        )


def matches(selector: models.LabelSelector, labels: Mapping[str, str]) -> bool:
    """Kubernetes label-selector semantics: every term must hold."""
    if any(labels.get(key) != value for key, value in selector.match_labels.items()):
        return False
    for term in selector.match_expressions:
        present = term.key in labels
        if term.operator == "In" and not (present and labels[term.key] in term.values):
            return False
        if term.operator == "NotIn" and present and labels[term.key] in term.values:
            return False
        if term.operator == "Exists" and not present:
            return False
        if term.operator == "DoesNotExist" and present:
            return False
    return True


def query(selector: models.LabelSelector) -> str:
    """The selector as a ``labelSelector`` query string for the API server."""
    terms = [f"{key}={value}" for key, value in sorted(selector.match_labels.items())]
    for term in selector.match_expressions:
        values = ",".join(term.values)
        terms.append(
            {
                "In": f"{term.key} in ({values})",
                "NotIn": f"{term.key} notin ({values})",
                "Exists": term.key,
                "DoesNotExist": f"!{term.key}",
            }[term.operator]
        )
    return ",".join(terms)


def catches(
    switch: Switch, namespace_labels: Mapping[str, str], agent_labels: Mapping[str, str]
) -> bool:
    spec = switch.spec
    return (
        spec.engaged
        and matches(spec.namespace_selector, namespace_labels)
        and matches(spec.agent_selector, agent_labels)
    )


def kill(
    agent: models.Agent,
    switches: Iterable[Switch],
    namespace_labels: Mapping[str, str],
) -> lifecycle.Kill | None:
    """Why the agent must die, if it must: deletion, its spec, or an engaged switch."""
    if agent.metadata.deletion_timestamp is not None:
        return lifecycle.Kill(lifecycle.Reason.AGENT_DELETED, "the Agent was deleted")
    if agent.spec.desired_phase is models.DesiredPhase.KILLED:
        by = models.who(agent.metadata.annotations, models.KILLED_BY)
        return lifecycle.Kill(lifecycle.Reason.KILLED, agent.spec.kill_reason, by)
    for switch in sorted(switches, key=lambda s: s.name):
        if catches(switch, namespace_labels, agent.metadata.labels):
            reason = switch.spec.reason or "no reason given"
            return lifecycle.Kill(
                lifecycle.Reason.KILLSWITCH_ENGAGED,
                f"killswitch {switch.name}: {reason}"[: models.KILL_MESSAGE_MAX],
                switch.engaged_by,
            )
    return None


def needs_namespace_labels(switches: Iterable[Switch]) -> bool:
    """Only a switch that selects namespaces needs their labels read."""
    return any(
        s.spec.engaged and (s.spec.namespace_selector != models.LabelSelector()) for s in switches
    )
