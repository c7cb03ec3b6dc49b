"""Build the cluster's binaries and tools from our Go modules, once per version.

A component whose binaries are all in its cache directory is not rebuilt, so
only the first ``make up`` on a machine pays for the compile. Binaries are
built into a ``.partial`` directory and renamed into place whole, so an interrupted
build never leaves a half-written cache behind. Files taken from a published
module (the prometheus-operator CRDs) are fetched through the Go module proxy,
checked against their pinned checksum, and cached the same way.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

from localcluster import versions

log = logging.getLogger(__name__)


class BuildError(RuntimeError):
    """A component could not be built; the message says which and why."""


def bin_dir(component: versions.Component) -> Path:
    return component.cache_dir() / "bin"


def binary(component: versions.Component, name: str) -> Path:
    return bin_dir(component) / name


def module_files(pinned: versions.ModuleFiles) -> tuple[Path, ...]:
    """Where the pinned files are cached, in the order of ``pinned.files``."""
    return tuple(pinned.cache_dir() / PurePosixPath(f).name for f in pinned.files)


def is_built(pinned: versions.Pinned) -> bool:
    if isinstance(pinned, versions.ModuleFiles):
        return all(path.is_file() for path in module_files(pinned))
    return all(binary(pinned, name).is_file() for name in pinned.binaries)


def ensure_built(pinned: Iterable[versions.Pinned] = versions.COMPONENTS) -> None:
    """Build (or fetch) everything that is not cached yet."""
    for each in pinned:
        if not is_built(each):
            if isinstance(each, versions.ModuleFiles):
                fetch(each)
            else:
                build(each)


def _go() -> str:
    go = shutil.which("go")
    if go is None:
        raise BuildError(
            "the Go toolchain is not on PATH; install Go 1.21 or newer "
            "(a newer toolchain is then fetched from the Go module proxy as needed)"
        )
    return go


def _go_env() -> dict[str, str]:
    return {
        **os.environ,
        "CGO_ENABLED": "0",
        # Use a newer toolchain from the module proxy if the local one is too old.
        "GOTOOLCHAIN": os.environ.get("GOTOOLCHAIN", "auto"),
    }


def _staging(target: Path) -> Path:
    """An empty directory beside ``target`` to fill before it is renamed into place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    return staging


def _publish(staging: Path, target: Path) -> None:
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)


def build(component: versions.Component) -> None:
    go = _go()
    target = component.cache_dir()
    log.info("building %s %s (first time only) into %s", component.name, component.version, target)
    started = time.monotonic()
    staging = _staging(target)
    out = staging / "bin"
    out.mkdir()
    ldflags = " ".join(("-s", "-w", *component.ldflags))
    # One package: name the binary ourselves; several: `-o DIR/` names each after its directory.
    output = out / component.binaries[0] if len(component.packages) == 1 else f"{out}/"
    cmd = [go, "build", "-trimpath", "-o", str(output), "-ldflags", ldflags, *component.packages]
    result = subprocess.run(cmd, cwd=component.module_dir, env=_go_env(), check=False)
    if result.returncode != 0:
        raise BuildError(
            f"building {component.name} {component.version} failed (go build exit "
            f"{result.returncode}); its output is above"
        )
    missing = [name for name in component.binaries if not (out / name).is_file()]
    if missing:
        raise BuildError(f"building {component.name} produced no {', '.join(missing)}")
    _publish(staging, target)
    log.info("built %s in %.0f s", component.name, time.monotonic() - started)


def fetch(wanted: versions.ModuleFiles) -> None:
    target = wanted.cache_dir()
    pinned = f"{wanted.module}@{wanted.version}"
    log.info("fetching %s from %s (first time only) into %s", wanted.name, pinned, target)
    staging = _staging(target)
    try:
        _fetch_into(staging, wanted)
        _publish(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _fetch_into(staging: Path, wanted: versions.ModuleFiles) -> None:
    go = _go()
    pinned = f"{wanted.module}@{wanted.version}"
    # Run outside any module (the empty staging directory), so only the proxy is asked.
    result = subprocess.run(
        [go, "mod", "download", "-json", pinned],
        cwd=staging,
        env={**_go_env(), "GOWORK": "off", "GOFLAGS": ""},
        capture_output=True,
        text=True,
        check=False,
    )
    try:
        info = json.loads(result.stdout)
    except json.JSONDecodeError:
        info = {}
    if result.returncode != 0 or "Error" in info or "Dir" not in info:
        reason = info.get("Error") or result.stderr.strip() or f"exit {result.returncode}"
        raise BuildError(f"fetching {pinned} failed: {reason}")
    if info.get("Sum") != wanted.sum:
        raise BuildError(f"{pinned} has checksum {info.get('Sum')}, not the pinned {wanted.sum}")
    source = Path(info["Dir"])
    for name, path in zip(wanted.files, module_files(wanted), strict=True):
        if not (source / name).is_file():
            raise BuildError(f"{pinned} has no {name}")
        # copyfile, not copy: the module cache is read-only and the copy need not be.
        shutil.copyfile(source / name, staging / path.name)
