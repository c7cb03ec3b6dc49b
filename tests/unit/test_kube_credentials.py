"""Credentials as kubectl resolves them: kubeconfig contexts, tokens (fixed, from a file,
from an exec plugin), certificates, the in-cluster ServiceAccount; each failure one line."""

from __future__ import annotations

import asyncio
import base64
import datetime
import json
import ssl
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web

from controller import credentials, handlers, kube
from localcluster import pki

SERVER = "https://127.0.0.1:6443"


def kubeconfig(
    path: Path,
    user: dict[str, Any],
    cluster: dict[str, Any] | None = None,
    contexts: dict[str, str] | None = None,
    current: str | None = "x",
    namespace: str = "work",
) -> Path:
    """A kubeconfig with cluster ``c``, user ``u`` and context ``x`` (in ``namespace``), plus
    ``contexts`` (name: namespace) over the same cluster and user."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": cluster or {"server": SERVER}}],
        "users": [{"name": "u", "user": user}],
        "contexts": [
            {"name": name, "context": {"cluster": "c", "user": "u", "namespace": ns}}
            for name, ns in {"x": namespace, **(contexts or {})}.items()
        ],
        "current-context": current,
    }
    path.write_text(yaml.safe_dump(config))
    return path


def authorization(config: credentials.Credentials) -> str | None:
    """The Authorization header the client sends now (the token read again if due)."""
    headers = asyncio.run(kube.Kube(config)._headers("application/json"))
    return headers.get("Authorization")


def test_a_kubeconfig_token_is_sent_as_a_bearer_token(tmp_path: Path) -> None:
    config = kube.load_config(str(kubeconfig(tmp_path / "config", {"token": "s3cr3t"})))
    assert config.server == SERVER
    assert config.namespace == "work"
    assert authorization(config) == "Bearer s3cr3t"


def test_without_a_token_no_authorization_header_is_sent(tmp_path: Path) -> None:
    assert authorization(kube.load_config(str(kubeconfig(tmp_path / "config", {})))) is None


def test_a_context_is_chosen_by_name_else_the_current_one(tmp_path: Path) -> None:
    path = str(kubeconfig(tmp_path / "config", {}, contexts={"other": "elsewhere"}))
    assert kube.load_config(path).namespace == "work"
    assert kube.load_config(path, "other").namespace == "elsewhere"


def test_a_path_list_is_merged_the_first_file_winning(tmp_path: Path) -> None:
    first = kubeconfig(tmp_path / "first", {"token": "first"}, current=None)
    second = kubeconfig(
        tmp_path / "second",
        {"token": "second"},
        current="y",
        namespace="not-this",
        contexts={"y": "why"},
    )
    config = kube.load_config(f"{first}:{tmp_path / 'absent'}:{second}")
    assert authorization(config) == "Bearer first"  # user u: the first file's
    assert config.namespace == "why"  # current-context: the second file's, the first to set it
    assert kube.load_config(f"{first}:{second}", "x").namespace == "work"  # x: the first's
    assert config.kubeconfig == f"{first}:{second}"  # the files read


def test_file_references_are_relative_to_the_kubeconfig(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "token").write_text("from-file\n")
    path = kubeconfig(
        tmp_path / "sub" / "config",
        {"tokenFile": "token"},
        cluster={"server": SERVER, "certificate-authority": "ca.crt"},
    )
    config = kube.load_config(str(path))
    assert config.ca_path == str(tmp_path / "sub" / "ca.crt")
    assert config.token.current() == "from-file"


def test_a_token_file_is_read_again_once_a_minute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = tmp_path / "token"
    token.write_text("one")
    config = kube.load_config(str(kubeconfig(tmp_path / "config", {"tokenFile": str(token)})))
    token.write_text("two")
    assert authorization(config) == "Bearer one"  # within the minute: the token read
    monkeypatch.setattr(credentials, "TOKEN_FILE_TTL", 0.0)
    assert authorization(config) == "Bearer two"


def test_in_a_cluster_the_service_account_is_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, environment: dict[str, str]
) -> None:
    (tmp_path / "token").write_text("sa-token")
    (tmp_path / "namespace").write_text("agents")
    monkeypatch.setattr(credentials, "SERVICE_ACCOUNT", tmp_path)
    environment.update(KUBERNETES_SERVICE_HOST="fd00::1", KUBERNETES_SERVICE_PORT="443")
    config = kube.load_config(str(tmp_path / "no-kubeconfig"))
    assert (config.server, config.kubeconfig) == ("https://[fd00::1]:443", None)
    assert config.ca_path == str(tmp_path / "ca.crt")
    assert config.namespace == "agents"
    assert config.token.current() == "sa-token"


def exec_plugin(
    tmp_path: Path, expires: str | None, exit_code: int = 0, fail_from: int = 0
) -> dict[str, Any]:
    """A real exec plugin: counts its runs, echoes what kubectl hands it, prints a token
    (fails with ``exit_code``, from its ``fail_from``th run if that is set)."""
    script = tmp_path / "plugin.py"
    script.write_text(
        "import json, os, sys\n"
        f"runs = {str(tmp_path / 'runs')!r}\n"
        "n = len(open(runs).read()) + 1 if os.path.exists(runs) else 1\n"
        "open(runs, 'w').write('x' * n)\n"
        f"if {exit_code} and n >= {fail_from}:\n"
        "    sys.stderr.write('no session: run aws sso login\\n')\n"
        f"    sys.exit({exit_code})\n"
        "info = json.loads(os.environ['KUBERNETES_EXEC_INFO'])\n"
        "status = {'token': f\"{os.environ['WHO']}-{info['kind']}-{n}\"}\n"
        f"if {expires!r}:\n"
        f"    status['expirationTimestamp'] = {expires!r}\n"
        "print(json.dumps({'kind': 'ExecCredential', 'status': status}))\n"
    )
    return {
        "apiVersion": "client.authentication.k8s.io/v1",
        "command": sys.executable,
        "args": [str(script)],
        "env": [{"name": "WHO", "value": "me"}],
    }


def test_an_exec_plugin_token_is_kept_until_it_expires(
    tmp_path: Path, environment: dict[str, str]
) -> None:
    plugin = exec_plugin(tmp_path, expires="2999-01-01T00:00:00Z")
    config = kube.load_config(str(kubeconfig(tmp_path / "config", {"exec": plugin})))
    assert authorization(config) == "Bearer me-ExecCredential-1"
    assert authorization(config) == "Bearer me-ExecCredential-1"
    assert (tmp_path / "runs").read_text() == "x"  # run once


def test_an_expired_exec_token_runs_the_plugin_again_but_not_in_a_storm(
    tmp_path: Path, environment: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    plugin = exec_plugin(tmp_path, expires="2000-01-01T00:00:00")  # no offset: UTC
    config = kube.load_config(str(kubeconfig(tmp_path / "config", {"exec": plugin})))
    assert authorization(config) == "Bearer me-ExecCredential-1"  # ran at load, moments ago
    monkeypatch.setattr(credentials, "EXEC_INTERVAL", 0.0)
    assert authorization(config) == "Bearer me-ExecCredential-2"
    assert authorization(config) == "Bearer me-ExecCredential-3"


def test_a_plugin_that_fails_later_leaves_its_last_token(
    tmp_path: Path, environment: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    plugin = exec_plugin(tmp_path, expires="2000-01-01T00:00:00Z", exit_code=1, fail_from=2)
    config = kube.load_config(str(kubeconfig(tmp_path / "config", {"exec": plugin})))
    monkeypatch.setattr(credentials, "EXEC_INTERVAL", 0.0)
    assert authorization(config) == "Bearer me-ExecCredential-1"
    assert (tmp_path / "runs").read_text() == "xx"  # it was tried again, and failed


def test_a_failing_exec_plugin_is_one_line_at_load(
    tmp_path: Path, environment: dict[str, str]
) -> None:
    plugin = exec_plugin(tmp_path, expires=None, exit_code=3)
    with pytest.raises(kube.KubernetesUnavailable) as caught:
        kube.load_config(str(kubeconfig(tmp_path / "config", {"exec": plugin})))
    assert str(caught.value) == (
        f"kubeconfig {tmp_path / 'config'}: user 'u': its exec plugin {sys.executable} "
        "failed: no session: run aws sso login"
    )


def test_an_exec_plugin_that_prints_no_token_is_named(
    tmp_path: Path, environment: dict[str, str]
) -> None:
    plugin = {"command": sys.executable, "args": ["-c", "print('{}')"]}
    with pytest.raises(kube.KubernetesUnavailable, match=r"gave no ExecCredential with a token$"):
        kube.load_config(str(kubeconfig(tmp_path / "config", {"exec": plugin})))


@pytest.mark.parametrize(
    ("path_user", "cluster", "current", "context", "said"),
    [
        ({}, None, None, None, "no current-context, and no --context given"),
        ({}, None, "x", "nope", "no context named 'nope'"),
        ({}, {"insecure-skip-tls-verify": True}, "x", None, "cluster 'c' has no server"),
        (
            {"auth-provider": {"name": "gcp"}},
            None,
            "x",
            None,
            "user 'u' authenticates with the auth-provider 'gcp', which is not supported",
        ),
        ({"username": "a", "password": "b"}, None, "x", None, "(basic auth)"),
        ({"client-key-data": "not base64!"}, None, "x", None, "not base64 of PEM"),
        ({"exec": {"args": ["x"]}}, None, "x", None, "its exec plugin names no command"),
        ({"as": "root"}, None, "x", None, "user 'u' sets as (impersonation), which is not"),
        (
            {},
            {"server": SERVER, "tls-server-name": "k"},
            "x",
            None,
            "cluster 'c' sets tls-server-name, which is not supported",
        ),
        (
            {"client-key": "k.pem", "client-key-data": "eA=="},
            None,
            "x",
            None,
            "sets both client-key and client-key-data",
        ),
        ({"tokenFile": "absent"}, None, "x", None, "its token file cannot be read: "),
    ],
)
def test_an_unusable_kubeconfig_is_one_clear_line(
    tmp_path: Path,
    path_user: dict[str, Any],
    cluster: dict[str, Any] | None,
    current: str | None,
    context: str | None,
    said: str,
) -> None:
    path = kubeconfig(tmp_path / "config", path_user, cluster=cluster, current=current)
    with pytest.raises(kube.KubernetesUnavailable) as caught:
        kube.load_config(str(path), context)
    assert said in str(caught.value)
    assert str(caught.value).startswith(f"kubeconfig {path}")
    assert "\n" not in str(caught.value)


def test_a_kubeconfig_that_is_not_yaml_is_named(tmp_path: Path) -> None:
    (tmp_path / "config").write_text("- just\n- a list\n")
    with pytest.raises(kube.KubernetesUnavailable, match="not a kubeconfig"):
        kube.load_config(str(tmp_path / "config"))
    (tmp_path / "config").write_text("{unclosed")
    with pytest.raises(kube.KubernetesUnavailable, match="cannot read it"):
        kube.load_config(str(tmp_path / "config"))


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> pki.Pki:
    made = pki.Pki(tmp_path_factory.mktemp("pki"))
    pki.generate(made)
    return made


def b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def b64_wrapped(text: bytes) -> str:
    """base64 as `base64` prints it: lines of 76 (kubectl reads it so)."""
    flat = base64.b64encode(text).decode()
    return "\n".join(flat[i : i + 76] for i in range(0, len(flat), 76))


def test_embedded_certificates_make_both_clients_tls_contexts(
    tmp_path: Path, certificates: pki.Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    # PEM as openssl pkcs12 writes it, text before the block; base64 wrapped in lines.
    key = b"Bag Attributes\n    localKeyID: 01\n" + certificates.client_key(pki.ADMIN).read_bytes()
    user = {
        "client-certificate-data": b64_wrapped(certificates.client_cert(pki.ADMIN).read_bytes()),
        "client-key-data": b64_wrapped(key),
        "token": "t0k",
    }
    cluster = {"server": SERVER, "certificate-authority-data": b64(certificates.ca_cert)}
    config = kube.load_config(str(kubeconfig(tmp_path / "config", user, cluster=cluster)))
    assert "PRIVATE KEY" not in repr(config)
    assert "t0k" not in repr(config)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    ours = config.ssl_context()
    info = handlers.connection_info(config)  # what kopf's login hands over
    kopfs = info.as_ssl_context()
    assert info.token == "t0k"
    for context in (ours, kopfs):
        assert context.verify_mode == ssl.CERT_REQUIRED
        assert [c["subject"] for c in context.get_ca_certs()] == [
            ((("commonName", "agent-lifecycle-local-ca"),),)
        ]
    assert list(scratch.iterdir()) == []  # no key left on disk


def test_kopf_is_told_when_an_exec_token_expires(
    tmp_path: Path, environment: dict[str, str]
) -> None:
    plugin = exec_plugin(tmp_path, expires="2999-01-01T00:00:00.123456Z")
    config = kube.load_config(str(kubeconfig(tmp_path / "config", {"exec": plugin})))
    info = handlers.connection_info(config)
    assert info.token == "me-ExecCredential-1"  # ran at load, moments ago: not again
    assert info.expiration == datetime.datetime(2999, 1, 1, 0, 0, 0, 123456, datetime.UTC)


def test_a_refused_token_is_read_again_before_the_next_request(
    tmp_path: Path, environment: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real HTTP server that refuses the plugin's first token (401) and takes the next."""
    plugin = exec_plugin(tmp_path, expires=None)
    monkeypatch.setattr(credentials, "EXEC_INTERVAL", 0.0)

    async def scenario() -> list[str]:
        seen: list[str] = []

        async def answer(request: web.Request) -> web.Response:
            seen.append(request.headers.get("Authorization", ""))
            if seen[-1].endswith("-1"):
                return web.json_response({"message": "Unauthorized"}, status=401)
            return web.json_response({"gitVersion": "v1.37.2"})

        app = web.Application()
        app.router.add_get("/version", answer)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        cluster = {"server": f"http://127.0.0.1:{port}"}
        path = kubeconfig(tmp_path / "config", {"exec": plugin}, cluster=cluster)
        api = kube.Kube(kube.load_config(str(path)))
        try:
            with pytest.raises(kube.ApiError, match="Unauthorized"):
                await api.server_info()
            assert (await api.server_info()).version == "v1.37.2"
        finally:
            await api.close()
            await runner.cleanup()
        return seen

    assert asyncio.run(scenario()) == ["Bearer me-ExecCredential-1", "Bearer me-ExecCredential-2"]


def test_a_certificate_that_does_not_load_is_named(tmp_path: Path, certificates: pki.Pki) -> None:
    user = {
        "client-certificate": str(certificates.client_cert(pki.ADMIN)),
        "client-key": str(certificates.ca_cert),  # not a key
    }
    config = kube.load_config(str(kubeconfig(tmp_path / "config", user)))
    with pytest.raises(kube.KubernetesUnavailable) as caught:
        kube.Kube(config)
    assert str(caught.value).startswith(
        f"the certificate authority or client certificate for {SERVER} cannot be loaded "
        f"({certificates.client_cert(pki.ADMIN)}, {certificates.ca_cert}): "
    )


def test_insecure_skip_tls_verify_turns_verification_off(tmp_path: Path) -> None:
    cluster = {"server": SERVER, "insecure-skip-tls-verify": True}
    config = kube.load_config(str(kubeconfig(tmp_path / "config", {}, cluster=cluster)))
    assert config.ssl_context().verify_mode == ssl.CERT_NONE


def info_keeping_plugin(seen: Path) -> str:
    """A plugin's Python (for ``-c``) that keeps what kubectl hands it in ``seen``."""
    return (
        "import os, json; "
        f"open({str(seen)!r}, 'w').write(os.environ['KUBERNETES_EXEC_INFO']); "
        "print(json.dumps({'status': {'token': 't'}}))"
    )


def test_the_exec_info_names_the_plugins_api_version(
    tmp_path: Path, environment: dict[str, str]
) -> None:
    seen = tmp_path / "info"
    script = info_keeping_plugin(seen)
    plugin = {
        "apiVersion": "client.authentication.k8s.io/v1beta1",
        "command": sys.executable,
        "args": ["-c", script],
    }
    kube.load_config(str(kubeconfig(tmp_path / "config", {"exec": plugin})))
    assert json.loads(seen.read_text()) == {
        "apiVersion": "client.authentication.k8s.io/v1beta1",
        "kind": "ExecCredential",
        "spec": {"interactive": False},
    }


def test_a_context_over_an_unknown_cluster_is_named(tmp_path: Path) -> None:
    path = kubeconfig(tmp_path / "config", {})
    document = yaml.safe_load(path.read_text())
    document["contexts"][0]["context"]["cluster"] = "gone"
    path.write_text(yaml.safe_dump(document))
    with pytest.raises(kube.KubernetesUnavailable, match="names no known cluster \\('gone'\\)"):
        kube.load_config(str(path))


def test_an_exec_command_is_found_relative_to_the_kubeconfig(
    tmp_path: Path, environment: dict[str, str]
) -> None:
    script = tmp_path / "bin" / "token.sh"
    script.parent.mkdir()
    script.write_text('#!/bin/sh\necho \'{"status": {"token": "relative"}}\'\n')
    script.chmod(0o700)
    plugin = {"command": "./bin/token.sh"}
    config = kube.load_config(str(kubeconfig(tmp_path / "config", {"exec": plugin})))
    assert config.token.current() == "relative"
    plugin = {"command": "no-such-plugin-anywhere"}
    with pytest.raises(kube.KubernetesUnavailable, match="no-such-plugin-anywhere cannot run: "):
        kube.load_config(str(kubeconfig(tmp_path / "config", {"exec": plugin})))


def test_in_a_cluster_without_a_namespace_file_the_namespace_is_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, environment: dict[str, str]
) -> None:
    (tmp_path / "token").write_text("sa-token")
    monkeypatch.setattr(credentials, "SERVICE_ACCOUNT", tmp_path)
    environment.update(KUBERNETES_SERVICE_HOST="10.96.0.1", KUBERNETES_SERVICE_PORT="443")
    config = kube.load_config(str(tmp_path / "no-kubeconfig"))
    assert (config.server, config.namespace) == ("https://10.96.0.1:443", "default")


def test_a_token_file_that_cannot_be_read_later_keeps_the_last_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = tmp_path / "token"
    token.write_text("one")
    config = kube.load_config(str(kubeconfig(tmp_path / "config", {"tokenFile": str(token)})))
    token.unlink()
    monkeypatch.setattr(credentials, "TOKEN_FILE_TTL", 0.0)
    assert authorization(config) == "Bearer one"


def test_an_exec_plugin_is_asked_with_the_cluster_when_it_wants_it(
    tmp_path: Path, environment: dict[str, str]
) -> None:
    seen = tmp_path / "info"
    script = info_keeping_plugin(seen)
    plugin = {"command": sys.executable, "args": ["-c", script], "provideClusterInfo": True}
    cluster = {"server": SERVER, "insecure-skip-tls-verify": True}
    kube.load_config(str(kubeconfig(tmp_path / "config", {"exec": plugin}, cluster=cluster)))
    assert json.loads(seen.read_text())["spec"] == {"interactive": False, "cluster": cluster}


@pytest.mark.parametrize(
    ("printed", "said"),
    [
        (
            {"status": {"clientCertificateData": "x", "clientKeyData": "y"}},
            "gave a client certificate, which is not supported: use a token",
        ),
        (
            {"status": {"token": "t", "expirationTimestamp": "soon"}},
            "gave an expirationTimestamp that is not a time: 'soon'",
        ),
    ],
)
def test_an_exec_credential_it_cannot_use_is_named(
    tmp_path: Path, environment: dict[str, str], printed: dict[str, Any], said: str
) -> None:
    plugin = {"command": sys.executable, "args": ["-c", f"print({json.dumps(printed)!r})"]}
    with pytest.raises(kube.KubernetesUnavailable) as caught:
        kube.load_config(str(kubeconfig(tmp_path / "config", {"exec": plugin})))
    assert str(caught.value).endswith(said)


def test_a_plugin_that_hangs_is_named_without_its_arguments(
    tmp_path: Path, environment: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(credentials, "EXEC_TIMEOUT", 0.5)
    script = "import time; time.sleep(30)"
    plugin = {"command": sys.executable, "args": ["-c", script, "--client-secret=SECRET"]}
    with pytest.raises(kube.KubernetesUnavailable) as caught:
        kube.load_config(str(kubeconfig(tmp_path / "config", {"exec": plugin})))
    assert str(caught.value).endswith(f"its exec plugin {sys.executable} did not answer within 0 s")
    assert "SECRET" not in str(caught.value)


def test_a_missing_plugin_shows_its_install_hint(
    tmp_path: Path, environment: dict[str, str]
) -> None:
    plugin = {"command": "no-such-plugin-anywhere", "installHint": "brew install it"}
    with pytest.raises(kube.KubernetesUnavailable) as caught:
        kube.load_config(str(kubeconfig(tmp_path / "config", {"exec": plugin})))
    assert str(caught.value).endswith(
        "its exec plugin no-such-plugin-anywhere cannot run: No such file or directory "
        "(brew install it)"
    )


def test_in_a_cluster_without_a_token_the_error_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, environment: dict[str, str]
) -> None:
    monkeypatch.setattr(credentials, "SERVICE_ACCOUNT", tmp_path)
    environment.update(KUBERNETES_SERVICE_HOST="10.96.0.1", KUBERNETES_SERVICE_PORT="443")
    with pytest.raises(kube.KubernetesUnavailable, match="automountServiceAccountToken: false"):
        kube.load_config(str(tmp_path / "no-kubeconfig"))


def test_the_default_kubeconfig_is_found_under_home(
    tmp_path: Path, environment: dict[str, str]
) -> None:
    (tmp_path / ".kube").mkdir()
    kubeconfig(tmp_path / ".kube" / "config", {"token": "home"})
    environment["HOME"] = str(tmp_path)
    config = kube.load_config(None)
    assert (config.kubeconfig, authorization(config)) == (
        str(tmp_path / ".kube" / "config"),
        "Bearer home",
    )
