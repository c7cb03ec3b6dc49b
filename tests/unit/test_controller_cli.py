"""`python -m controller run` fails with one clear line, never a traceback."""

from __future__ import annotations

from asyncio import sslproto
from pathlib import Path

import pytest

from controller import __main__ as cli
from controller import mirror
from localcluster import procs


@pytest.fixture(autouse=True)
def _tls_read_size(monkeypatch: pytest.MonkeyPatch) -> None:
    """The command sets asyncio's TLS read size for its process: undone after each test here."""
    monkeypatch.setattr(sslproto.SSLProtocol, "max_size", sslproto.SSLProtocol.max_size)


def test_the_command_reads_tls_in_small_buffers(environment: dict[str, str]) -> None:
    environment["VALKEY_STREAM_MAXLEN"] = "zero"
    assert sslproto.SSLProtocol.max_size == 256 * 1024, "asyncio's default"
    assert cli.main(["run"]) == 2, "stopped at the bad setting, after the TLS read size"
    assert sslproto.SSLProtocol.max_size == cli.TLS_READ_SIZE == 64 * 1024


def test_a_bad_setting_stops_start_up_with_one_line(
    environment: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    environment["VALKEY_STREAM_MAXLEN"] = "zero"
    assert cli.main(["run"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == (
        "error: invalid setting VALKEY_STREAM_MAXLEN='zero': "
        "Input should be a valid integer, unable to parse string as an integer"
    )


def test_missing_kubernetes_credentials_are_named(
    environment: dict[str, str],
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    environment["KUBECONFIG"] = str(tmp_path / "absent")
    assert cli.main(["run"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no Kubernetes credentials: no usable kubeconfig")
    assert err.count("\n") == 1


def test_a_command_is_required(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        cli.main([])
    assert caught.value.code == 2
    assert "run" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("redis://:s3cret@valkey:6379/0", "redis://:***@valkey:6379/0"),
        ("rediss://agent:s3cret@valkey.example/1", "rediss://agent:***@valkey.example/1"),
    ],
    ids=["no password", "password only", "user, password and TLS"],
)
def test_passwords_never_reach_logs_or_errors(url: str, shown: str) -> None:
    assert mirror.redact(url) == shown


def test_an_api_server_that_does_not_answer_is_named(
    environment: dict[str, str], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    port = procs.free_port()
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        f"""
apiVersion: v1
kind: Config
clusters: [{{name: c, cluster: {{server: "https://127.0.0.1:{port}"}}}}]
users: [{{name: u, user: {{token: abc}}}}]
contexts: [{{name: x, context: {{cluster: c, user: u}}}}]
current-context: x
"""
    )
    environment["KUBECONFIG"] = str(kubeconfig)
    assert cli.main(["run"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot reach the Kubernetes API at https://127.0.0.1:{port}:")
