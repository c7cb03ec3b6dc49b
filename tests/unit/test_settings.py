from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from controller import settings
from localcluster import pki


def test_defaults_match_the_design() -> None:
    config = settings.load({})
    assert config.valkey_url == settings.DEFAULT_VALKEY_URL
    assert config.valkey_key_prefix == "orchestrator:"
    assert config.valkey_stream_maxlen == 100_000
    assert config.valkey_deleted_ttl_seconds == 86_400
    assert config.watch_namespaces == ()
    assert config.max_concurrent_agents == 0
    assert config.agent_ttl_seconds_after_finished == 0  # finished agents are kept
    assert (config.valkey_ca_file, config.valkey_cert_file, config.valkey_key_file) == ("", "", "")
    assert (config.http_host, config.http_port) == ("0.0.0.0", 8080)
    assert config.leader_election_namespace == ""  # no election: the process acts at once
    assert (config.lease_name, config.lease_duration_seconds) == ("agent-lifecycle-operator", 15)
    assert config.pod_name  # host name and process id: unique among replicas


def test_values_are_read_from_the_environment(environment: dict[str, str]) -> None:
    environment["VALKEY_URL"] = "rediss://user:secret@valkey.example:6380/2"
    environment["WATCH_NAMESPACES"] = "team-a, team-b,,"
    environment["max_concurrent_agents"] = "25"  # as case-insensitive as before
    config = settings.load()
    assert config.valkey_url == "rediss://user:secret@valkey.example:6380/2"
    assert config.watch_namespaces == ("team-a", "team-b")
    assert config.max_concurrent_agents == 25


def test_the_ttl_after_finishing_is_read_from_the_environment(
    environment: dict[str, str],
) -> None:
    environment["AGENT_TTL_SECONDS_AFTER_FINISHED"] = "3600"
    assert settings.load().agent_ttl_seconds_after_finished == 3600


def test_who_asked_is_read_unless_the_audit_policies_are_missing() -> None:
    assert settings.load({}).audit_annotations is True
    assert settings.load({"AUDIT_ANNOTATIONS": "false"}).audit_annotations is False


@pytest.mark.parametrize(
    ("variable", "value", "complaint"),
    [
        ("VALKEY_STREAM_MAXLEN", "lots", "valid integer"),
        ("VALKEY_STREAM_MAXLEN", "0", "greater than or equal to 1"),
        ("VALKEY_DELETED_TTL_SECONDS", "-5", "greater than or equal to 1"),
        ("MAX_CONCURRENT_AGENTS", "-1", "greater than or equal to 0"),
        ("AGENT_TTL_SECONDS_AFTER_FINISHED", "-1", "greater than or equal to 0"),
        ("AGENT_TTL_SECONDS_AFTER_FINISHED", "1h", "valid integer"),
        ("VALKEY_URL", "http://valkey:6379", "must start with redis://"),
        ("HTTP_PORT", "70000", "less than or equal to 65535"),
        ("LEASE_DURATION_SECONDS", "1", "greater than or equal to 2"),
        ("AUDIT_ANNOTATIONS", "maybe", "valid boolean"),
        ("WATCH_NAMESPACES", "team-a,team-*", "'team-*' is not a namespace name"),
        ("WATCH_NAMESPACES", "Team-A", "'Team-A' is not a namespace name"),
    ],
    ids=[
        "a stream length that is not a number",
        "a stream length of zero",
        "a negative deletion TTL",
        "a negative concurrency limit",
        "a negative TTL after finishing",
        "a TTL after finishing as a duration, not seconds",
        "a Valkey URL with a web scheme",
        "a port that does not exist",
        "a lease too short to renew",
        "an audit switch that is neither true nor false",
        "a namespace pattern, which the API server cannot list",
        "a namespace name in capitals",
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
    environment: dict[str, str],
) -> None:
    environment["MAX_CONCURRENT_AGENTS"] = "many"
    with pytest.raises(
        settings.SettingsError, match=r"^invalid setting MAX_CONCURRENT_AGENTS='many'"
    ):
        settings.load()


def test_unrelated_variables_are_ignored() -> None:
    assert settings.load({"HOME": "/root", "PATH": "/bin"}) == settings.load({})


# --- TLS files: loaded at start-up as the client would load them ---

TLS_URL = "rediss://agent-operator:secret@valkey.example:6380/0"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> pki.Pki:
    """A CA, a client certificate and key (EC keys: milliseconds), and some bad files."""
    found = pki.Pki(tmp_path_factory.mktemp("pki"))
    pki.generate(found)
    key = serialization.load_pem_private_key(found.client_key(pki.ADMIN).read_bytes(), None)
    (found.dir / "encrypted.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"passphrase"),
        )
    )
    (found.dir / "combined.pem").write_bytes(
        found.client_cert(pki.ADMIN).read_bytes() + found.client_key(pki.ADMIN).read_bytes()
    )
    (found.dir / "notes.txt").write_text("not a certificate\n")
    return found


def files(certs: pki.Pki, **names: str) -> dict[str, str]:
    """The environment: VALKEY_URL rediss:// and the named files (``ca``, ``cert``, ``key``)."""
    paths = {
        "ca": certs.ca_cert,
        "cert": certs.client_cert(pki.ADMIN),
        "key": certs.client_key(pki.ADMIN),
        "other-key": certs.client_key(pki.KWOK),
        "encrypted-key": certs.dir / "encrypted.key",
        "combined": certs.dir / "combined.pem",
        "notes": certs.dir / "notes.txt",
        "missing": certs.dir / "missing.pem",
    }
    environ = {"VALKEY_URL": TLS_URL}
    for setting, name in names.items():
        environ[f"VALKEY_{setting.upper()}_FILE"] = str(paths[name])
    return environ


@pytest.mark.parametrize(
    "names",
    [{"ca": "ca"}, {"ca": "ca", "cert": "cert", "key": "key"}, {"cert": "combined"}],
    ids=[
        "a CA bundle",
        "a CA bundle, a client certificate and its key",
        "a client certificate holding its key",
    ],
)
def test_tls_files_that_load_are_taken(certs: pki.Pki, names: dict[str, str]) -> None:
    environ = files(certs, **names)
    config = settings.load(environ)
    assert config.valkey_ca_file == environ.get("VALKEY_CA_FILE", "")
    assert config.valkey_cert_file == environ.get("VALKEY_CERT_FILE", "")
    assert config.valkey_key_file == environ.get("VALKEY_KEY_FILE", "")


BAD_TLS = {
    "a CA file that does not exist": (
        {"ca": "missing"},
        "VALKEY_CA_FILE",
        "cannot read it as a PEM CA bundle: No such file or directory",
    ),
    "a CA file without a certificate": (
        {"ca": "notes"},
        "VALKEY_CA_FILE",
        "cannot read it as a PEM CA bundle: [X509: NO_CERTIFICATE_OR_CRL_FOUND]",
    ),
    "a key that does not exist": (
        {"cert": "cert", "key": "missing"},
        "VALKEY_KEY_FILE",
        "cannot read it: No such file or directory",
    ),
    "a key without its certificate": (
        {"key": "key"},
        "VALKEY_CERT_FILE",
        "VALKEY_KEY_FILE is set: the certificate it belongs to is needed",
    ),
    "a key of another certificate": (
        {"cert": "cert", "key": "other-key"},
        "VALKEY_CERT_FILE",
        "cannot read it as a PEM client certificate with its key "
        "(VALKEY_KEY_FILE, or in it): [X509: KEY_VALUES_MISMATCH]",
    ),
    "an encrypted key (it would prompt for a passphrase)": (
        {"cert": "cert", "key": "encrypted-key"},
        "VALKEY_CERT_FILE",
        "cannot read it as a PEM client certificate with its key",
    ),
    "a certificate without a key": (
        {"cert": "cert"},
        "VALKEY_CERT_FILE",
        "cannot read it as a PEM client certificate with its key",
    ),
}


@pytest.mark.parametrize(("names", "variable", "complaint"), BAD_TLS.values(), ids=BAD_TLS.keys())
def test_a_bad_tls_file_is_one_line_naming_the_variable(
    certs: pki.Pki, names: dict[str, str], variable: str, complaint: str
) -> None:
    environ = files(certs, **names)
    with pytest.raises(settings.SettingsError) as caught:
        settings.load(environ)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"invalid setting {variable}={environ.get(variable, '')!r}: ")
    assert complaint in message
    assert "secret" not in message


@pytest.mark.parametrize("setting", ["ca", "cert", "key"])
@pytest.mark.parametrize(
    "url", ["redis://127.0.0.1:6379/0", "unix:///run/valkey.sock"], ids=["redis://", "unix://"]
)
def test_a_tls_file_without_a_rediss_url_is_refused_rather_than_ignored(
    certs: pki.Pki, setting: str, url: str
) -> None:
    environ = {**files(certs, **{setting: setting}), "VALKEY_URL": url}
    with pytest.raises(settings.SettingsError) as caught:
        settings.load(environ)
    variable = f"VALKEY_{setting.upper()}_FILE"
    assert str(caught.value) == (
        f"invalid setting {variable}={environ[variable]!r}: "
        "Value error, VALKEY_URL is not rediss://, so no TLS would be used"
    )


def test_tls_files_come_from_the_process_environment_too(
    certs: pki.Pki, environment: dict[str, str]
) -> None:
    environment.update(files(certs, ca="ca"))
    assert settings.load().valkey_ca_file == str(certs.ca_cert)
    environment["VALKEY_CA_FILE"] = str(Path(certs.dir, "missing.pem"))
    with pytest.raises(settings.SettingsError, match=r"^invalid setting VALKEY_CA_FILE="):
        settings.load()


def test_overrides_win_over_the_environment_and_empty_ones_do_not_count(
    environment: dict[str, str],
) -> None:
    environment["VALKEY_URL"] = "redis://from-the-environment:6379/0"
    assert settings.load(overrides={"VALKEY_URL": ""}).valkey_url == environment["VALKEY_URL"]
    flag = "redis://from-a-flag:6379/0"
    assert settings.load(overrides={"VALKEY_URL": flag}).valkey_url == flag
    assert settings.given("VALKEY_URL") == environment["VALKEY_URL"]
    assert settings.given("VALKEY_KEY_PREFIX") == ""


def test_a_unit_test_that_reads_the_callers_environment_fails() -> None:
    with pytest.raises(AssertionError, match="a unit test read the caller's environment"):
        settings.load()
    with pytest.raises(AssertionError, match="a unit test read the caller's environment"):
        settings.given("VALKEY_URL")


@pytest.mark.parametrize(
    ("environ", "line"),
    [
        (
            {"VALKEY_CLUSTER": "true"},
            "invalid setting VALKEY_KEY_PREFIX='orchestrator:': Value error, in cluster mode "
            "every key of the prefix must share one slot, so the prefix needs a hash tag, "
            "as {orchestrator}:",
        ),
        (
            {"VALKEY_CLUSTER": "true", "VALKEY_KEY_PREFIX": "{}:"},
            "invalid setting VALKEY_KEY_PREFIX='{}:': Value error, in cluster mode every key of "
            "the prefix must share one slot, so the prefix needs a hash tag, as {orchestrator}:",
        ),
        (
            {"VALKEY_CLUSTER": "true", "VALKEY_URL": "redis://:pw@seed:7000/3"},
            "invalid setting VALKEY_URL='redis://:***@seed:7000/3': Value error, a Valkey "
            "Cluster has only db 0, and this URL names db 3",
        ),
        (
            {"VALKEY_SENTINELS": "s1:26379,s2"},
            "invalid setting VALKEY_SENTINELS='s1:26379,s2': Value error, 's2' is not "
            "host:port (as 10.0.0.5:26379)",
        ),
        (
            {"VALKEY_SENTINELS": "s1:26379"},
            "invalid setting VALKEY_SENTINEL_MASTER='': Value error, VALKEY_SENTINELS is set: "
            "the master's name is needed too",
        ),
        (
            {"VALKEY_SENTINEL_MASTER": "agents"},
            "invalid setting VALKEY_SENTINEL_MASTER='agents': Value error, it names a master, "
            "but VALKEY_SENTINELS lists no sentinel",
        ),
        (
            {
                "VALKEY_CLUSTER": "1",
                "VALKEY_KEY_PREFIX": "{o}:",
                "VALKEY_SENTINELS": "s:1",
                "VALKEY_SENTINEL_MASTER": "m",
            },
            "invalid setting VALKEY_SENTINEL_MASTER='m': Value error, Sentinel and "
            "VALKEY_CLUSTER=true exclude each other",
        ),
        (
            {"VALKEY_SENTINELS": "admin:s3cret@sentinel"},
            "invalid setting VALKEY_SENTINELS='admin:***@sentinel': Value error, "
            "'***@sentinel' is not host:port (as 10.0.0.5:26379)",
        ),
        (
            {
                "VALKEY_SENTINELS": "s:1",
                "VALKEY_SENTINEL_MASTER": "m",
                "VALKEY_URL": "unix:///run/valkey.sock",
            },
            "invalid setting VALKEY_URL='unix:///run/valkey.sock': Value error, with Sentinel "
            "it gives redis:// or rediss://, credentials, db",
        ),
    ],
    ids=[
        "a cluster with the untagged default prefix",
        "a cluster with an empty hash tag",
        "a cluster with a non-zero db (the password hidden)",
        "a sentinel list that does not parse",
        "sentinels without a master name",
        "a master name without sentinels",
        "cluster and sentinel at once",
        "a bad sentinel entry, its credentials hidden",
        "sentinel with a socket URL",
    ],
)
def test_a_topology_that_cannot_work_is_one_line(environ: dict[str, str], line: str) -> None:
    with pytest.raises(settings.SettingsError) as caught:
        settings.load(environ)
    assert str(caught.value) == line


def test_topologies_are_read_as_documented() -> None:
    cluster = settings.load(
        {
            "VALKEY_CLUSTER": "true",
            "VALKEY_KEY_PREFIX": "{orchestrator}:",
            "VALKEY_URL": "redis://seed:7000",
        }
    )
    assert (cluster.valkey_cluster, cluster.valkey_key_prefix) == (True, "{orchestrator}:")
    sentinel = settings.load(
        {"VALKEY_SENTINELS": " :s3%40cret@s1:26379 , s2:26380,", "VALKEY_SENTINEL_MASTER": "agents"}
    )
    assert sentinel.valkey_sentinels == (
        settings.Sentinel("s1", 26379, None, "s3@cret"),
        settings.Sentinel("s2", 26380),
    )
    assert settings.hash_tagged("pre{fix}:")
    assert not settings.hash_tagged("pre}{fix:")
