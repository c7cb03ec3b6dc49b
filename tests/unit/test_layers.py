"""The pure layers stay pure: no Kubernetes, Valkey, kopf or clock in the machine and the models."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

CONTROLLER = Path(__file__).resolve().parents[2] / "controller"
IO_MODULES = {
    "kopf",
    "kubernetes",
    "redis",
    "urllib3",
    "aiohttp",
    "socket",
    "subprocess",
    "os",
    "time",
}
PURE = ["lifecycle.py", "models.py", "crd.py"]


def imported(tree: ast.Module) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("module", PURE)
def test_pure_modules_import_no_io(module: str) -> None:
    tree = ast.parse((CONTROLLER / module).read_text())
    assert imported(tree) & IO_MODULES == set()


@pytest.mark.parametrize("module", PURE)
def test_pure_modules_never_read_the_clock(module: str) -> None:
    tree = ast.parse((CONTROLLER / module).read_text())
    calls = {
        node.func.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
    }
    assert calls & {"now", "utcnow", "today", "time", "monotonic"} == set()


def test_the_machine_depends_on_nothing_of_ours() -> None:
    tree = ast.parse((CONTROLLER / "lifecycle.py").read_text())
    assert imported(tree) <= {
        "__future__",
        "collections",
        "dataclasses",
        "datetime",
        "enum",
        "typing",
    }
