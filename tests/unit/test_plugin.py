"""The plugin's pure parts: kubectl's selector syntax, --since, and how events read."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from controller import plugin

SELECTORS = {
    "equality": ("team=a,tier==x", {"matchLabels": {"team": "a", "tier": "x"}}),
    "inequality": (
        "team!=a",
        {"matchExpressions": [{"key": "team", "operator": "NotIn", "values": ["a"]}]},
    ),
    "set membership": (
        "tier in (x, y),env notin (prod)",
        {
            "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["x", "y"]},
                {"key": "env", "operator": "NotIn", "values": ["prod"]},
            ]
        },
    ),
    "existence": (
        "owner,!legacy",
        {
            "matchExpressions": [
                {"key": "owner", "operator": "Exists"},
                {"key": "legacy", "operator": "DoesNotExist"},
            ]
        },
    ),
    "a prefixed key": ("example.com/team=a", {"matchLabels": {"example.com/team": "a"}}),
    "nothing": ("", {}),
}


@pytest.mark.parametrize(("text", "expected"), SELECTORS.values(), ids=SELECTORS.keys())
def test_selectors_parse_as_kubectl_reads_them(text: str, expected: dict[str, Any]) -> None:
    assert plugin.parse_selector(text) == expected


@pytest.mark.parametrize(
    "text",
    ["a in (x", "=b", "!a=b", "a b"],
    ids=["unclosed", "no key", "negated value", "two words"],
)
def test_a_bad_selector_is_refused_naming_the_term(text: str) -> None:
    with pytest.raises(ValueError, match="cannot parse the selector term"):
        plugin.parse_selector(text)


def test_since_takes_an_id_or_a_time() -> None:
    assert plugin._since(None) == "-"
    assert plugin._since("1700000000000-3") == "1700000000000-3"
    assert plugin._since("2026-01-01T10:00:00Z") == "1767261600000"
    assert plugin._since("2026-01-01T10:00:00") == "1767261600000"  # no zone: UTC
    with pytest.raises(plugin.Failed) as caught:
        plugin._since("last tuesday")
    assert caught.value.code == plugin.USAGE


AGENT_EVENT = {
    "type": "agent.failed",
    "time": "2026-01-01T10:00:05.000Z",
    "data": {
        "namespace": "team-a",
        "name": "w",
        "from": "Running",
        "to": "Failed",
        "reason": "WorkloadFailed",
        "seq": 3,
        "taskId": "T-1",
        "message": "",
        "error": "tests failed",
    },
}


def test_status_says_who_asked_for_a_kill() -> None:
    assert plugin.who_asked({"phase": "Killed", "killedBy": "alice"}) == "killed by alice"
    stopping = {"phase": "Running", "stopping": {"reason": "Killed", "by": "bob"}}
    assert plugin.who_asked(stopping) == "being killed, asked by bob"
    assert plugin.who_asked({"phase": "Killed", "stopping": {"reason": "AgentDeleted"}}) == ""


def test_events_read_well() -> None:
    assert plugin.render(AGENT_EVENT, "text") == (
        "2026-01-01T10:00:05.000Z  team-a/w  Running → Failed  WorkloadFailed  error: tests failed"
    )
    assert "seq=3  task=T-1" in plugin.render(AGENT_EVENT, "wide")
    assert plugin.render(AGENT_EVENT, "json").startswith('{"type":"agent.failed"')
    first = {**AGENT_EVENT, "data": {**AGENT_EVENT["data"], "from": None, "error": ""}}  # type: ignore[dict-item]
    assert "  - → Failed  " in plugin.render(first, "text")
    switch = {
        "type": "killswitch.engaged",
        "time": "t",
        "data": {"name": "all-stop", "reason": "spend"},
    }
    assert plugin.render(switch, "text") == "t  killswitch/all-stop  engaged  spend"
    by = {**switch, "data": {"name": "all-stop", "reason": "spend", "engagedBy": "bob"}}
    assert plugin.render(by, "text") == "t  killswitch/all-stop  engaged  by bob  spend"
    off = {
        "type": "killswitch.disengaged",
        "time": "t",
        "data": {"name": "all-stop", "reason": "", "engagedBy": "bob", "disengagedBy": "carol"},
    }
    assert plugin.render(off, "text") == "t  killswitch/all-stop  disengaged  by carol"
    data: dict[str, Any] = {**AGENT_EVENT["data"]}  # type: ignore[dict-item]
    data.update(to="Killed", reason="Killed", error="", killedBy="alice")
    killed = {**AGENT_EVENT, "type": "agent.killed", "data": data}
    assert plugin.render(killed, "text").endswith("Running → Killed  Killed  by alice")


def test_a_kubeconfig_named_on_the_command_line_must_exist(
    tmp_path: Path, environment: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    # Not quietly the in-cluster ServiceAccount, nor KUBECONFIG: kubectl refuses it too.
    environment["KUBECONFIG"] = str(tmp_path / "elsewhere")
    absent = tmp_path / "typo"
    assert plugin.main(["status", "a1", "--kubeconfig", str(absent)]) == plugin.NO_CLUSTER
    assert capsys.readouterr().err == f"error: --kubeconfig {absent}: no such file\n"
