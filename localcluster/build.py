"""Build the cluster's binaries from our Go modules, once per version.

A component whose binaries are all in its cache directory is not rebuilt, so
only the first ``make up`` on a machine pays for the compile. Binaries are
built into a ``.partial`` directory and renamed into place whole, so an interrupted
build never leaves a half-written cache behind.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import time
from pathlib import Path

from localcluster import versions

log = logging.getLogger(__name__)


class BuildError(RuntimeError):
    """A component could not be built; the message says which and why."""


def binary(component: versions.Component, name: str) -> Path:
    return component.cache_dir() / "bin" / name


def is_built(component: versions.Component) -> bool:
    return all(binary(component, name).is_file() for name in component.binaries)


def ensure_built(components: tuple[versions.Component, ...] = versions.COMPONENTS) -> None:
    """Build every component that is not cached yet."""
    for component in components:
        if not is_built(component):
            build(component)


def build(component: versions.Component) -> None:
    go = shutil.which("go")
    if go is None:
        raise BuildError(
            "the Go toolchain is not on PATH; install Go 1.21 or newer "
            "(a newer toolchain is then fetched from the Go module proxy as needed)"
        )
    target = component.cache_dir()
    target.parent.mkdir(parents=True, exist_ok=True)
    log.info("building %s %s (first time only) into %s", component.name, component.version, target)
    started = time.monotonic()
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    out = staging / "bin"
    out.mkdir(parents=True)
    ldflags = " ".join(("-s", "-w", *component.ldflags))
    env = {
        **os.environ,
        "CGO_ENABLED": "0",
        # Use a newer toolchain from the module proxy if the local one is too old.
        "GOTOOLCHAIN": os.environ.get("GOTOOLCHAIN", "auto"),
    }
    # One package: name the binary ourselves; several: `-o DIR/` names each after its directory.
    output = out / component.binaries[0] if len(component.packages) == 1 else f"{out}/"
    cmd = [go, "build", "-trimpath", "-o", str(output), "-ldflags", ldflags, *component.packages]
    result = subprocess.run(cmd, cwd=component.module_dir, env=env, check=False)
    if result.returncode != 0:
        raise BuildError(
            f"building {component.name} {component.version} failed (go build exit "
            f"{result.returncode}); its output is above"
        )
    missing = [name for name in component.binaries if not (out / name).is_file()]
    if missing:
        raise BuildError(f"building {component.name} produced no {', '.join(missing)}")
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    log.info("built %s in %.0f s", component.name, time.monotonic() - started)
