"""Fetching files of a pinned Go module into the cache, with `go mod download` faked."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from localcluster import build, cluster, versions

CRDS = versions.PROMETHEUS_OPERATOR_CRDS


@dataclasses.dataclass
class FakeGo:
    """Answers `go mod download -json` as the real one does, from a directory of ours."""

    module_dir: Path
    answer: dict[str, Any]
    returncode: int = 0
    calls: list[list[str]] = dataclasses.field(default_factory=list)

    def run(self, cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        self.calls.append(cmd)
        return subprocess.CompletedProcess(cmd, self.returncode, json.dumps(self.answer), "")


@pytest.fixture
def go(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeGo:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    module_dir = tmp_path / "module"
    for name in CRDS.files:
        (module_dir / name).parent.mkdir(parents=True, exist_ok=True)
        (module_dir / name).write_text(f"# {name}\n")
    fake = FakeGo(module_dir, {"Dir": str(module_dir), "Sum": CRDS.sum})
    monkeypatch.setattr(shutil, "which", lambda name: f"/fake/bin/{name}")
    monkeypatch.setattr(subprocess, "run", fake.run)
    return fake


def test_fetch_copies_the_pinned_files_into_the_cache(go: FakeGo) -> None:
    build.ensure_built((CRDS,))
    paths = build.module_files(CRDS)
    assert [p.read_text() for p in paths] == [f"# {name}\n" for name in CRDS.files]
    assert all(p.parent == CRDS.cache_dir() for p in paths)
    pinned = f"{CRDS.module}@{CRDS.version}"
    assert go.calls == [["/fake/bin/go", "mod", "download", "-json", pinned]]
    assert build.is_built(CRDS)


def test_cached_files_are_not_fetched_again(go: FakeGo) -> None:
    build.ensure_built((CRDS,))
    build.ensure_built((CRDS,))
    assert len(go.calls) == 1


@pytest.mark.parametrize(
    ("answer", "returncode", "message"),
    [
        ({"Sum": "h1:other"}, 0, "not the pinned"),
        ({"Error": "403 Forbidden"}, 1, "403 Forbidden"),
        ({"Sum": CRDS.sum, "Dir": "/nonexistent"}, 0, "has no example/"),
    ],
    ids=[
        "a download whose checksum differs from the pin is refused",
        "the proxy's error is reported",
        "a module without the file is reported",
    ],
)
def test_a_failed_fetch_caches_nothing(
    go: FakeGo, answer: dict[str, Any], returncode: int, message: str
) -> None:
    go.answer = {"Dir": str(go.module_dir), **answer}
    go.returncode = returncode
    with pytest.raises(build.BuildError, match=message):
        build.fetch(CRDS)
    assert not CRDS.cache_dir().exists()
    assert not build.is_built(CRDS)


def test_the_env_file_puts_helm_and_promtool_on_the_path() -> None:
    lines = cluster.Endpoints(Path("/k"), "https://127.0.0.1:1", "").env_lines()
    path_line = lines.splitlines()[-1]
    for tool, name in ((versions.HELM, "helm"), (versions.PROMTOOL, "promtool")):
        assert str(build.binary(tool, name).parent) in path_line
    assert path_line.endswith(':$PATH"')
