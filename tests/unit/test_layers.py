"""The pure modules never read the clock: ``now`` is passed in.

What they may import is import-linter's job (``[tool.importlinter]`` in
pyproject.toml, run by ``make lint``); a clock read is a call, which it cannot see.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

CONTROLLER = Path(__file__).resolve().parents[2] / "controller"
PURE = [
    "lifecycle.py",
    "models.py",
    "crd.py",
    "status.py",
    "workload.py",
    "killswitch.py",
    "admission.py",
]


@pytest.mark.parametrize("module", PURE)
def test_pure_modules_never_read_the_clock(module: str) -> None:
    tree = ast.parse((CONTROLLER / module).read_text())
    calls = {
        node.func.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
    }
    assert calls & {"now", "utcnow", "today", "time", "monotonic"} == set()
