"""`make up`, `make down` and `make run` start what they say and leave nothing behind."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from localcluster import cluster as localcluster
from localcluster import procs
from tests.conftest import KUBECTL, REPO, Operator
from tests.helpers import wait_for

CLUSTER_PROCESSES = {
    "valkey",
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kwok",
}


def make(target: str, state_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", "-s", target, f"LOCAL_DIR={state_dir}"],
        cwd=REPO,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def clean_env() -> dict[str, str]:
    """This environment without a VALKEY_URL (so `make up` starts Valkey) or make's own flags."""
    return {k: v for k, v in os.environ.items() if k not in ("VALKEY_URL", "MAKEFLAGS", "MFLAGS")}


def processes_mentioning(text: str) -> list[str]:
    """Command lines of every process on the machine that mention ``text``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (
                    (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                )
            except OSError:
                continue
            if text in cmdline:
                found.append(f"{entry.name}: {cmdline}")
    return found


@pytest.fixture
def state_dir(tmp_path: Path) -> Iterator[Path]:
    state = tmp_path / "state"
    try:
        yield state
    finally:
        localcluster.down(localcluster.Layout(state))


def test_up_then_down_leaves_no_process_of_ours(state_dir: Path) -> None:
    up = make("up", state_dir)
    assert up.returncode == 0, up.stderr
    env_lines = (state_dir / "env").read_text().splitlines()
    assert env_lines[0] == f"export KUBECONFIG={state_dir / 'kubeconfig'}"
    assert env_lines[1].startswith("export VALKEY_URL=redis://127.0.0.1:")

    recorded = [procs.Proc.load(p) for p in (state_dir / "pids").glob("*.json")]
    assert {p.name for p in recorded} == CLUSTER_PROCESSES
    assert all(procs.is_alive(p) for p in recorded)
    nodes = subprocess.run(
        [KUBECTL, "--kubeconfig", str(state_dir / "kubeconfig"), "get", "nodes", "-o", "name"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert nodes.stdout.strip() == f"node/{localcluster.NODE_NAME}"

    again = make("up", state_dir)
    assert again.returncode == 0, again.stderr
    assert "already up" in again.stdout + again.stderr
    assert [procs.Proc.load(p) for p in (state_dir / "pids").glob("*.json")] == recorded

    down = make("down", state_dir)
    assert down.returncode == 0, down.stderr
    assert not any(procs.is_alive(p) for p in recorded)
    assert processes_mentioning(str(state_dir)) == []
    assert not (state_dir / "env").exists()
    assert make("down", state_dir).stdout.strip() == "nothing was running"


def descendants(root: int) -> dict[int, int]:
    """pid -> start time of every living descendant of ``root``."""
    children: dict[int, list[int]] = {}
    ticks: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                raw = (entry / "stat").read_text()
            except OSError:
                continue
            fields = raw[raw.rindex(")") + 2 :].split()
            children.setdefault(int(fields[1]), []).append(int(entry.name))
            ticks[int(entry.name)] = int(fields[19])
    found: dict[int, int] = {}
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found[child] = ticks[child]
            todo.append(child)
    return found


def test_run_starts_the_operator_and_ctrl_c_stops_everything(
    state_dir: Path, tmp_path: Path
) -> None:
    output = tmp_path / "run.log"
    with output.open("w") as out:
        run = subprocess.Popen(
            ["make", "-s", "run", f"LOCAL_DIR={state_dir}"],
            cwd=REPO,
            env=clean_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_for(
            lambda: "waiting for SIGINT" in output.read_text() or run.poll(),
            300,
            "the operator",
        )
        assert run.poll() is None, output.read_text()
        text = output.read_text()
        assert "connected to Kubernetes v1." in text
        assert "connected to valkey" in text
        started = descendants(run.pid)
        names = {procs.Proc.load(p).name for p in (state_dir / "pids").glob("*.json")}
        assert names == CLUSTER_PROCESSES

        os.killpg(run.pid, signal.SIGINT)  # what Ctrl-C in the terminal does
        run.wait(timeout=120)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
            run.wait()

    def still_alive() -> list[int]:
        return [
            pid for pid, t in started.items() if procs.is_alive(procs.Proc("?", pid, t, (), ""))
        ]

    assert (
        wait_for(lambda: not still_alive() or None, 30, "every process of `make run` to exit")
        is True
    )
    assert processes_mentioning(str(state_dir)) == []
    assert "stopped:" in output.read_text()


def test_the_operator_connects_to_both_and_stops_cleanly(operator: Operator) -> None:
    assert "connected to Kubernetes v1." in operator.log()
    assert "connected to valkey" in operator.log()
    assert operator.stop() == 0
    assert "stopping" in operator.log()
