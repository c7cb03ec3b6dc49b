"""crds/*.yaml are rendered from the models, structural, and carry the API server's rules."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from controller import crd, lifecycle

CRDS = Path(__file__).resolve().parents[2] / "crds"


def test_committed_crds_match_the_models() -> None:
    for name, text in crd.render().items():
        committed = (CRDS / name).read_text()
        assert committed == text, f"crds/{name} is stale: run `make crds` and commit the result"


def test_main_writes_every_crd(tmp_path: Path) -> None:
    assert crd.main(["crd", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["agents.yaml", "killswitches.yaml"]


def walk(node: Any) -> list[str]:
    """Every key anywhere in the schema."""
    if isinstance(node, dict):
        return list(node) + [k for v in node.values() for k in walk(v)]
    if isinstance(node, list):
        return [k for v in node for k in walk(v)]
    return []


def test_schemas_are_structural() -> None:
    for document in (crd.agent_crd(), crd.killswitch_crd()):
        keys = set(walk(document))
        assert not keys & {"$ref", "$defs", "anyOf", "oneOf", "allOf", "title", "const"}
        schema = document["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        assert schema["type"] == "object"
        assert "additionalProperties" not in json.dumps(schema).replace(
            '"additionalProperties": {"type": "string"}', ""
        )


def test_the_phase_rule_follows_the_machine() -> None:
    rules = crd.AGENT_RULES[("status", "phase")]
    edge_rule = rules[0]["rule"]
    for phase, targets in lifecycle.EDGES.items():
        if targets:
            listed = ", ".join(f"'{t}'" for t in lifecycle.Phase if t in targets)
            assert f"(oldSelf == '{phase}' && self in [{listed}])" in edge_rule


def test_agent_printer_columns_and_short_name() -> None:
    version = crd.agent_crd()["spec"]["versions"][0]
    shown = [c["name"] for c in version["additionalPrinterColumns"] if "priority" not in c]
    assert shown == ["Phase", "Task", "Type", "Started", "Age"]
    assert crd.agent_crd()["spec"]["names"]["shortNames"] == ["ag"]
    assert version["subresources"] == {"status": {}}


def test_killswitch_is_cluster_scoped() -> None:
    assert crd.killswitch_crd()["spec"]["scope"] == "Cluster"
    assert (
        yaml.safe_load(crd.render()["killswitches.yaml"])["spec"]["names"]["plural"]
        == "killswitches"
    )
