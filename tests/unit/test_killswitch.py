"""Which agents a Killswitch stops: selector semantics and the effective kill, decided purely."""

from __future__ import annotations

from typing import Any

import pytest

from controller import killswitch, lifecycle, models


def selector(**raw: Any) -> models.LabelSelector:
    return models.LabelSelector.model_validate(raw)


def switch(
    name: str = "all-stop", engaged: bool = True, reason: str = "runaway spend", **spec: Any
) -> killswitch.Switch:
    return killswitch.Switch.of(
        {"metadata": {"name": name}, "spec": {"engaged": engaged, "reason": reason, **spec}}
    )


def agent(labels: dict[str, str] | None = None, **spec: Any) -> models.Agent:
    return models.Agent.model_validate(
        {
            "metadata": {"name": "w", "namespace": "team-a", "uid": "u", "labels": labels or {}},
            "spec": {
                "taskId": "T",
                "template": {"spec": {"containers": [{"name": "a", "image": "i"}]}},
                **spec,
            },
        }
    )


SELECTORS = {
    "an empty selector matches everything": ({}, {"any": "thing"}, True),
    "matchLabels must all hold": (
        {"matchLabels": {"team": "a", "tier": "x"}},
        {"team": "a"},
        False,
    ),
    "matchLabels that hold": ({"matchLabels": {"team": "a"}}, {"team": "a", "more": "y"}, True),
    "In with the value": (
        {"matchExpressions": [{"key": "t", "operator": "In", "values": ["a", "b"]}]},
        {"t": "b"},
        True,
    ),
    "In without the key": (
        {"matchExpressions": [{"key": "t", "operator": "In", "values": ["a"]}]},
        {},
        False,
    ),
    "NotIn with the value": (
        {"matchExpressions": [{"key": "t", "operator": "NotIn", "values": ["a"]}]},
        {"t": "a"},
        False,
    ),
    "NotIn without the key": (
        {"matchExpressions": [{"key": "t", "operator": "NotIn", "values": ["a"]}]},
        {},
        True,
    ),
    "Exists": ({"matchExpressions": [{"key": "t", "operator": "Exists"}]}, {"t": ""}, True),
    "Exists without the key": (
        {"matchExpressions": [{"key": "t", "operator": "Exists"}]},
        {},
        False,
    ),
    "DoesNotExist with the key": (
        {"matchExpressions": [{"key": "t", "operator": "DoesNotExist"}]},
        {"t": "1"},
        False,
    ),
}


@pytest.mark.parametrize(("raw", "labels", "expected"), SELECTORS.values(), ids=SELECTORS.keys())
def test_label_selectors(raw: dict[str, Any], labels: dict[str, str], expected: bool) -> None:
    assert killswitch.matches(selector(**raw), labels) is expected


def test_a_selector_becomes_the_api_servers_query() -> None:
    raw = {
        "matchLabels": {"team": "a", "env": "prod"},
        "matchExpressions": [
            {"key": "tier", "operator": "In", "values": ["x", "y"]},
            {"key": "tier", "operator": "NotIn", "values": ["z"]},
            {"key": "owner", "operator": "Exists"},
            {"key": "legacy", "operator": "DoesNotExist"},
        ],
    }
    assert killswitch.query(selector(**raw)) == (
        "env=prod,team=a,tier in (x,y),tier notin (z),owner,!legacy"
    )
    assert killswitch.query(selector()) == ""


def test_an_engaged_switch_kills_what_it_matches_with_its_reason() -> None:
    found = killswitch.kill(
        agent({"team": "a"}), [switch(agentSelector={"matchLabels": {"team": "a"}})], {}
    )
    assert found == lifecycle.Kill(
        lifecycle.Reason.KILLSWITCH_ENGAGED, "killswitch all-stop: runaway spend"
    )


def test_a_switch_that_does_not_match_or_is_disengaged_kills_nothing() -> None:
    assert (
        killswitch.kill(
            agent({"team": "b"}), [switch(agentSelector={"matchLabels": {"team": "a"}})], {}
        )
        is None
    )
    assert killswitch.kill(agent(), [switch(engaged=False)], {}) is None
    only_prod = switch(namespaceSelector={"matchLabels": {"env": "prod"}})
    assert killswitch.kill(agent(), [only_prod], {"env": "dev"}) is None
    assert killswitch.kill(agent(), [only_prod], {"env": "prod"}) is not None


def test_deletion_and_the_spec_come_before_any_switch() -> None:
    killed = agent(desiredPhase="Killed", killReason="by hand")
    assert killswitch.kill(killed, [switch()], {}) == lifecycle.Kill(
        lifecycle.Reason.KILLED, "by hand"
    )
    deleted = agent().model_copy(
        update={
            "metadata": agent().metadata.model_copy(
                update={"deletion_timestamp": models.parse_time("2026-01-01T00:00:00Z")}
            )
        }
    )
    assert killswitch.kill(deleted, [switch()], {}) == lifecycle.Kill(
        lifecycle.Reason.AGENT_DELETED, "the Agent was deleted"
    )


def test_several_switches_name_the_first_by_name_and_a_reasonless_one_says_so() -> None:
    found = killswitch.kill(agent(), [switch("zeta"), switch("alpha", reason="")], {})
    assert found is not None
    assert found.message == "killswitch alpha: no reason given"


def test_namespace_labels_are_needed_only_for_a_switch_that_selects_namespaces() -> None:
    assert not killswitch.needs_namespace_labels([switch()])
    assert not killswitch.needs_namespace_labels(
        [switch(engaged=False, namespaceSelector={"matchLabels": {"a": "b"}})]
    )
    assert killswitch.needs_namespace_labels(
        [switch(namespaceSelector={"matchLabels": {"a": "b"}})]
    )
