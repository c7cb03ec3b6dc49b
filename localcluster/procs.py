"""Start background processes and stop exactly those, by pid.

A pid alone can be reused by an unrelated process once ours has exited, so each
started process is recorded with its kernel start time (``/proc/PID/stat``
field 22); ``stop`` signals a pid only while that start time still matches.
Processes get their own session, so a Ctrl-C in the terminal that ran
``make up`` does not reach them; only ``make down`` (or a test's finalizer) does.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Final

_POLL_SECONDS: Final = 0.05


class ProcessError(RuntimeError):
    """A process could not be started or did not become ready."""


@dataclass(frozen=True)
class Proc:
    """A process we started: enough to find it again and to prove it is still ours."""

    name: str
    pid: int
    start_ticks: int
    argv: tuple[str, ...]
    log: str

    def save(self, pid_dir: Path) -> None:
        pid_dir.mkdir(parents=True, exist_ok=True)
        (pid_dir / f"{self.name}.json").write_text(json.dumps(asdict(self)))

    @classmethod
    def load(cls, path: Path) -> Proc:
        raw = json.loads(path.read_text())
        return cls(
            name=str(raw["name"]),
            pid=int(raw["pid"]),
            start_ticks=int(raw["start_ticks"]),
            argv=tuple(str(a) for a in raw["argv"]),
            log=str(raw["log"]),
        )


def _stat(pid: int) -> tuple[str, int] | None:
    """(state letter, start time in clock ticks) of a pid, or None when it does not exist."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name (field 2) is in parentheses and may itself hold spaces or ')'.
    fields = raw[raw.rindex(")") + 2 :].split()
    return fields[0], int(fields[19])


def _reap(pid: int) -> None:
    """Collect the exit status of a child of ours, so it does not linger as a zombie."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def is_alive(proc: Proc) -> bool:
    """True while the very process we started is running (not a zombie, not a reused pid)."""
    stat = _stat(proc.pid)
    if stat is None or stat[1] != proc.start_ticks:
        return False
    if stat[0] in ("Z", "X"):
        _reap(proc.pid)
        return False
    return True


def start(
    name: str,
    argv: Sequence[str],
    log_dir: Path,
    pid_dir: Path,
    env: Mapping[str, str] | None = None,
) -> Proc:
    """Start ``argv`` in its own session, output appended to ``log_dir/NAME.log``."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        pid = os.posix_spawn(
            argv[0],
            list(argv),
            dict(env if env is not None else os.environ),
            file_actions=[
                (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                (os.POSIX_SPAWN_DUP2, log_fd, 1),
                (os.POSIX_SPAWN_DUP2, log_fd, 2),
            ],
            setsid=True,
        )
    except OSError as exc:
        raise ProcessError(f"could not start {name} ({argv[0]}): {exc}") from exc
    finally:
        os.close(log_fd)
    stat = _stat(pid)
    proc = Proc(name, pid, stat[1] if stat else -1, tuple(argv), str(log_path))
    proc.save(pid_dir)
    return proc


def stop(proc: Proc, timeout: float = 15.0) -> None:
    """SIGTERM the process if it is still ours, then SIGKILL after ``timeout`` seconds."""
    for sig, grace in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        if not is_alive(proc):
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, sig)
        deadline = time.monotonic() + grace
        while is_alive(proc) and time.monotonic() < deadline:
            time.sleep(_POLL_SECONDS)
    if is_alive(proc):
        raise ProcessError(f"{proc.name} (pid {proc.pid}) survived SIGKILL")


def log_tail(proc: Proc, lines: int = 25) -> str:
    try:
        text = Path(proc.log).read_text(errors="replace")
    except FileNotFoundError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def wait_ready(proc: Proc, check: Callable[[], bool], what: str, timeout: float) -> None:
    """Poll ``check`` until it is true; fail at once, with the log, if the process dies."""
    deadline = time.monotonic() + timeout
    while True:
        if not is_alive(proc):
            raise ProcessError(
                f"{proc.name} exited before {what}; last log lines:\n{log_tail(proc)}"
            )
        if check():
            return
        if time.monotonic() > deadline:
            raise ProcessError(
                f"{proc.name} not {what} after {timeout:.0f} s; last log lines:\n{log_tail(proc)}"
            )
        time.sleep(_POLL_SECONDS)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
