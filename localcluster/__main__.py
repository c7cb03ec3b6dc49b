"""``python -m localcluster build|up|down|status|run``: what the Makefile's targets call."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Final

from localcluster import build, cluster, procs, versions

REPO: Final = Path(__file__).resolve().parent.parent
SAMPLE_AGENT: Final = REPO / "deploy" / "samples" / "agent.yaml"


def _layout(args: argparse.Namespace) -> cluster.Layout:
    return cluster.Layout(Path(args.state_dir).resolve())


def _up(args: argparse.Namespace) -> cluster.Endpoints:
    endpoints = cluster.up(_layout(args), valkey_url=os.environ.get("VALKEY_URL") or None)
    print(f"cluster up: {endpoints.server}  (Valkey {endpoints.valkey_url})")
    print(f"use it:     source {_layout(args).env_file}")
    return endpoints


def cmd_build(args: argparse.Namespace) -> int:
    build.ensure_built(versions.EVERYTHING)
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    _up(args)
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    stopped = cluster.down(_layout(args))
    print(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    layout = _layout(args)
    alive = cluster.running(layout)
    for proc in alive:
        print(f"{proc.name:<24} pid {proc.pid:<8} log {proc.log}")
    endpoints = cluster.endpoints(layout)
    if endpoints is None:
        print(
            "the cluster is not up" + (" (partly running: `make down` clears it)" if alive else "")
        )
        return 1
    print(f"up: {endpoints.server}; source {layout.env_file}")
    return 0


def _kubectl(env: dict[str, str], *args: str) -> None:
    subprocess.run(["kubectl", *args], env=env, check=True)


def cmd_run(args: argparse.Namespace) -> int:
    """Up (if needed), CRDs, the operator in the foreground, a sample agent; Ctrl-C undoes it."""
    layout = _layout(args)
    was_up = cluster.endpoints(layout) is not None
    endpoints = _up(args)
    env = {
        **os.environ,
        "KUBECONFIG": str(endpoints.kubeconfig),
        "VALKEY_URL": endpoints.valkey_url,
        # The operator's probes and metrics: loopback only, as everything `make up` starts.
        "HTTP_HOST": os.environ.get("HTTP_HOST", "127.0.0.1"),
    }
    operator: subprocess.Popen[bytes] | None = None
    try:
        crds = sorted((REPO / "crds").glob("*.yaml"))
        if crds:
            _kubectl(env, "apply", "--server-side", *(f"--filename={c}" for c in crds))
            _kubectl(env, "wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
        operator = subprocess.Popen([sys.executable, "-m", "controller", "run"], env=env)
        if crds and SAMPLE_AGENT.is_file():
            _kubectl(env, "apply", f"--filename={SAMPLE_AGENT}")
        print("operator running; Ctrl-C stops it" + ("" if was_up else " and the cluster"))
        print(
            "watch from another terminal:  source "
            f"{layout.env_file}  then  kubectl get agents -w  or  kubectl agents events -f",
            flush=True,
        )
        return operator.wait()
    except KeyboardInterrupt:
        # Ctrl-C reached the operator too (one process group): let it finish as it does.
        return _stopped(operator)
    finally:
        if operator is not None and operator.poll() is None:
            operator.send_signal(signal.SIGINT)
            try:
                operator.wait(timeout=15)
            except subprocess.TimeoutExpired:
                operator.kill()
                operator.wait()
        if not was_up:
            print(f"stopped: {', '.join(cluster.down(layout))}")


def _stopped(operator: subprocess.Popen[bytes] | None) -> int:
    """The operator's own exit code once it has stopped (asked once more, in case the
    interrupt reached only us)."""
    if operator is None:
        return 0
    if operator.poll() is None:
        operator.send_signal(signal.SIGINT)
    try:
        return operator.wait(timeout=15)
    except subprocess.TimeoutExpired:
        operator.kill()
        return operator.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m localcluster", description=__doc__)
    parser.add_argument(
        "--state-dir",
        default=os.environ.get("LOCAL_DIR", ".local"),
        help="where the cluster keeps its state (default: $LOCAL_DIR or .local)",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name, func, text in (
        (
            "build",
            cmd_build,
            "build the cluster's binaries, helm and promtool; fetch the prometheus-operator "
            "CRDs (once per version, into the cache)",
        ),
        ("up", cmd_up, "start the cluster and Valkey in the background; write STATE_DIR/env"),
        ("down", cmd_down, "stop every process `up` started, by pid"),
        ("status", cmd_status, "list the running processes; exit 1 when the cluster is not up"),
        ("run", cmd_run, "up, install CRDs, run the operator in the foreground; Ctrl-C undoes it"),
    ):
        sub.add_parser(name, help=text).set_defaults(func=func)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        result: int = args.func(args)
    except (build.BuildError, cluster.ClusterError, procs.ProcessError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return result


if __name__ == "__main__":
    sys.exit(main())
