from __future__ import annotations

import pytest

from controller import settings


def test_defaults_match_the_design() -> None:
    config = settings.load({})
    assert config.valkey_url == settings.DEFAULT_VALKEY_URL
    assert config.valkey_key_prefix == "orchestrator:"
    assert config.valkey_stream_maxlen == 100_000
    assert config.valkey_deleted_ttl_seconds == 86_400
    assert config.watch_namespaces == ()
    assert config.max_concurrent_agents == 0


def test_values_are_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VALKEY_URL", "rediss://user:secret@valkey.example:6380/2")
    monkeypatch.setenv("WATCH_NAMESPACES", "team-a, team-b,,")
    monkeypatch.setenv("MAX_CONCURRENT_AGENTS", "25")
    config = settings.load()
    assert config.valkey_url == "rediss://user:secret@valkey.example:6380/2"
    assert config.watch_namespaces == ("team-a", "team-b")
    assert config.max_concurrent_agents == 25


@pytest.mark.parametrize(
    ("variable", "value", "complaint"),
    [
        ("VALKEY_STREAM_MAXLEN", "lots", "valid integer"),
        ("VALKEY_STREAM_MAXLEN", "0", "greater than or equal to 1"),
        ("VALKEY_DELETED_TTL_SECONDS", "-5", "greater than or equal to 1"),
        ("MAX_CONCURRENT_AGENTS", "-1", "greater than or equal to 0"),
        ("VALKEY_URL", "http://valkey:6379", "must start with redis://"),
    ],
    ids=[
        "a stream length that is not a number",
        "a stream length of zero",
        "a negative deletion TTL",
        "a negative concurrency limit",
        "a Valkey URL with a web scheme",
    ],
)
def test_a_bad_value_is_one_line_naming_variable_and_value(
    variable: str, value: str, complaint: str
) -> None:
    with pytest.raises(settings.SettingsError) as caught:
        settings.load({variable: value})
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"invalid setting {variable}={value!r}")
    assert complaint in message


def test_a_bad_value_in_the_process_environment_is_reported_the_same_way(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MAX_CONCURRENT_AGENTS", "many")
    with pytest.raises(
        settings.SettingsError, match=r"^invalid setting MAX_CONCURRENT_AGENTS='many'"
    ):
        settings.load()


def test_unrelated_variables_are_ignored() -> None:
    assert settings.load({"HOME": "/root", "PATH": "/bin"}) == settings.load({})
