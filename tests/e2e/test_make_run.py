"""`make run` as a new user meets it: the sample agent's life in the terminal, and a clean Ctrl-C.

The test runs what `make run` runs (``python -m localcluster run``) with a state
directory of its own, so it starts a cluster and a Valkey of its own, as on a
fresh machine, and ends it as a terminal's Ctrl-C does: SIGINT to the whole
foreground process group (the command and the operator it started).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from localcluster import cluster as localcluster
from tests.conftest import REPO, Operators
from tests.e2e.test_operator import SIM, apply, manifest
from tests.helpers import wait_for

LIFE = [
    "default/sample-worker: nothing -> Spawning (Created)",
    "default/sample-worker: Spawning -> Running (Started)",
    "default/sample-worker: Running -> Completed (Completed)",
]


@pytest.fixture
def state_dir(tmp_path: Path) -> Iterator[Path]:
    where = tmp_path / "local"
    yield where
    localcluster.down(localcluster.Layout(where))  # only if the run failed to stop it


def test_make_run_shows_the_sample_agents_life_and_stops_cleanly_on_ctrl_c(
    state_dir: Path, tmp_path: Path
) -> None:
    output = tmp_path / "make-run.out"
    env = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG", "VALKEY_URL")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    with output.open("wb") as sink:
        run = subprocess.Popen(
            [sys.executable, "-m", "localcluster", "--state-dir", str(state_dir), "run"],
            cwd=REPO,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, as a terminal's foreground job
        )
    try:

        def printed() -> str:
            if run.poll() is not None:
                raise AssertionError(f"make run ended ({run.returncode}):\n{output.read_text()}")
            return output.read_text(errors="replace")

        wait_for(lambda: LIFE[-1] in printed(), 180, "the sample agent to complete")
        os.killpg(run.pid, signal.SIGINT)  # Ctrl-C
        assert run.wait(timeout=60) == 0
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
            run.wait()
    text = output.read_text(errors="replace")
    lines = text.splitlines()
    shown = [next(i for i, line in enumerate(lines) if step in line) for step in LIFE]
    assert shown == sorted(shown), f"the transitions out of order:\n{text}"
    assert "kubectl get agents -w" in text
    assert "kubectl agents events -f" in text
    assert "ERROR" not in text, text
    assert "Traceback" not in text, text
    assert localcluster.running(localcluster.Layout(state_dir)) == [], "Ctrl-C stops it all"


def test_json_log_lines_parse_and_carry_the_transition(
    operators: Operators, valkey_url: str, namespace: str
) -> None:
    operator = operators.start(valkey_url, namespace, LOG_FORMAT="json", ready=False)
    operator.wait_for_log('"message": "ready; watching agents')
    apply(operators.cluster, namespace, manifest("logged", {f"{SIM}/run-for": "1s"}))
    operator.wait_for_log("Running -> Completed (Completed)")
    assert operator.stop() == 0
    records = [json.loads(line) for line in operator.log().splitlines()]
    assert all({"time", "level", "logger", "message"} <= r.keys() for r in records)
    transitions = [r for r in records if "to" in r and r.get("name") == "logged"]
    assert [(r["from"], r["to"], r["reason"]) for r in transitions] == [
        (None, "Spawning", "Created"),
        ("Spawning", "Running", "Started"),
        ("Running", "Completed", "Completed"),
    ]
    first = transitions[0]
    assert (first["namespace"], first["level"], first["logger"]) == (
        namespace,
        "INFO",
        "controller.agents",
    )
    assert first["uid"]
    assert first["message"] == f"{namespace}/logged: nothing -> Spawning (Created)"
