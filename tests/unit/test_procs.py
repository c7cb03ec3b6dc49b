"""The local cluster stops exactly the processes it started, and nothing else."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest

from localcluster import procs

SLEEPER = (sys.executable, "-c", "import time; time.sleep(60)")


def test_a_started_process_is_alive_until_stopped(tmp_path: Path) -> None:
    proc = procs.start("sleeper", SLEEPER, tmp_path / "logs", tmp_path / "pids")
    assert procs.is_alive(proc)
    assert procs.Proc.load(tmp_path / "pids" / "sleeper.json") == proc
    procs.stop(proc)
    assert not procs.is_alive(proc)
    assert not Path(f"/proc/{proc.pid}").exists(), "the stopped child was not reaped"


def test_a_process_that_ignores_sigterm_is_killed(tmp_path: Path) -> None:
    stubborn = (
        sys.executable,
        "-c",
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN);"
        "print('ready', flush=True); time.sleep(60)",
    )
    proc = procs.start("stubborn", stubborn, tmp_path / "logs", tmp_path / "pids")
    procs.wait_ready(proc, lambda: "ready" in Path(proc.log).read_text(), "ready", 10)
    procs.stop(proc, timeout=0.2)
    assert not procs.is_alive(proc)


def test_a_reused_pid_is_never_signalled(tmp_path: Path) -> None:
    """A record whose start time does not match is someone else's process now."""
    proc = procs.start("sleeper", SLEEPER, tmp_path / "logs", tmp_path / "pids")
    impostor = dataclasses.replace(proc, start_ticks=proc.start_ticks + 1)
    assert not procs.is_alive(impostor)
    procs.stop(impostor)
    assert procs.is_alive(proc), "stop() signalled a process whose start time did not match"
    procs.stop(proc)


def test_a_process_that_dies_while_awaited_fails_with_its_log(tmp_path: Path) -> None:
    dying = (sys.executable, "-c", "import sys; print('bad flag --nope'); sys.exit(3)")
    proc = procs.start("dying", dying, tmp_path / "logs", tmp_path / "pids")
    with pytest.raises(
        procs.ProcessError, match=r"dying exited before ready(.|\n)*bad flag --nope"
    ):
        procs.wait_ready(proc, lambda: False, "ready", 10)


def test_a_missing_binary_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(procs.ProcessError, match=r"could not start ghost \(/nonexistent/ghost\)"):
        procs.start("ghost", ["/nonexistent/ghost"], tmp_path / "logs", tmp_path / "pids")


def test_free_ports_are_on_loopback_and_bindable() -> None:
    import socket

    port = procs.free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
