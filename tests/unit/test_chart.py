"""The Helm chart, read as files: its CRDs are crds/, its versions are the project's.

tests/e2e/test_chart.py renders and installs it with the real helm.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Final

import yaml

from controller import crd

REPO: Final = Path(__file__).resolve().parents[2]
CHART: Final = REPO / "charts" / "agent-lifecycle-operator"


def test_the_charts_crds_are_what_make_crds_renders() -> None:
    rendered = crd.render()
    assert sorted(p.name for p in (CHART / "crds").iterdir()) == sorted(rendered)
    for name, text in rendered.items():
        assert (CHART / "crds" / name).read_text() == text, f"run `make crds`: {name} differs"


def test_the_charts_policies_and_roles_are_deploys_files() -> None:
    copies = {
        "audit.yaml": REPO / "deploy" / "base" / "audit.yaml",
        "kill-only.yaml": REPO / "deploy" / "base" / "kill-only.yaml",
        "roles.yaml": REPO / "deploy" / "base" / "roles.yaml",
        "template-guard-policy.yaml": REPO / "deploy" / "template-guard" / "policy.yaml",
    }
    for name, source in copies.items():
        copy = (CHART / "files" / name).read_text()
        assert copy == source.read_text(), f"run `make crds`: files/{name} differs"


def test_the_chart_is_versioned_as_the_project() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["appVersion"] == project
    # SemVer for the chart: 0.1.0.dev0 becomes 0.1.0-dev0.
    release, _, dev = project.partition(".dev")
    assert chart["version"] == (f"{release}-dev{dev}" if dev else release)


def test_the_monitoring_files_parse() -> None:
    rules = yaml.safe_load((CHART / "files" / "prometheus-rules.yaml").read_text())
    assert [group["name"] for group in rules["groups"]] == ["agent-lifecycle-operator"]
    dashboard = json.loads((CHART / "files" / "grafana-dashboard.json").read_text())
    assert dashboard["uid"] == "agent-lifecycle-operator"
