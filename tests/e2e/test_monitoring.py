"""The monitoring objects: the alerts behave as written, and every metric they and the Grafana
dashboard name is one the running operator exports.

promtool is the real one, built from Prometheus's Go module (localcluster/versions.py).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from typing import Final

import yaml

from localcluster import build, versions
from tests.conftest import REPO, Operator
from tests.helpers import get
from tests.promql import exported_series, metric_names

FILES: Final = REPO / "charts" / "agent-lifecycle-operator" / "files"
RULES: Final = FILES / "prometheus-rules.yaml"
DASHBOARD: Final = FILES / "grafana-dashboard.json"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(build.binary(versions.PROMTOOL, "promtool")), *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=FILES,
    )


def rule_expressions() -> Iterator[tuple[str, str]]:
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        for rule in group["rules"]:
            yield rule.get("alert") or rule["record"], rule["expr"]


def dashboard_expressions() -> Iterator[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            yield panel["title"], target["expr"]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]["query"]
            # label_values(METRIC, LABEL): the metric is the first argument.
            yield variable["name"], query.removeprefix("label_values(").split(",")[0]


def test_the_rules_are_valid_and_every_alert_has_its_tests() -> None:
    checked = promtool("check", "rules", RULES.name)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = promtool("test", "rules", "prometheus-rules.test.yaml")
    assert tested.returncode == 0, tested.stdout + tested.stderr
    alerts = {name for name, _ in rule_expressions()}
    tests = yaml.safe_load((FILES / "prometheus-rules.test.yaml").read_text())["tests"]
    exercised = {case["alertname"] for test in tests for case in test["alert_rule_test"]}
    assert alerts == exercised
    assert alerts == {
        "AgentOperatorDown",
        "AgentOperatorNoLeader",
        "AgentOperatorMirrorLagHigh",
        "AgentOperatorValkeyUnreachable",
        "AgentOperatorQueueGrowing",
        "AgentsStuckSpawning",
    }


def test_every_metric_the_rules_and_dashboard_name_is_exported(operator: Operator) -> None:
    status, page = get(f"http://127.0.0.1:{operator.port()}/metrics")
    assert status == 200
    exported = exported_series(page)
    named = {
        (where, name)
        for where, expr in (*rule_expressions(), *dashboard_expressions())
        for name in metric_names(expr)
    }
    assert named, "no metric found in the rules and the dashboard"
    missing = sorted(f"{where}: {name}" for where, name in named if name not in exported)
    assert not missing, missing


def test_the_dashboard_shows_what_operators_watch() -> None:
    titles = {panel["title"] for panel in json.loads(DASHBOARD.read_text())["panels"]}
    assert {
        "Agents by phase",
        "Transitions per second",
        "Kill latency",
        "Mirror lag",
        "Queue depth",
        "Leader",
    } <= titles
