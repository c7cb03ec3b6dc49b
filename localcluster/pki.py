"""Certificates and kubeconfigs for the local cluster.

One throwaway CA signs a serving certificate for 127.0.0.1/localhost (used by
the API server, the controller manager and the scheduler) and one client
certificate per identity. Each control-plane component gets its own identity,
so RBAC treats it as in a real cluster: the controller manager and the
scheduler run as ``system:kube-controller-manager`` and ``system:kube-scheduler``
under the bootstrap roles; the admin and kwok (which stands in for kubelets)
are in ``system:masters``. EC P-256 keys keep generation instant.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_VALIDITY: Final = datetime.timedelta(days=365)
SERVICE_IP: Final = "10.96.0.1"
SERVICE_CIDR: Final = "10.96.0.0/16"


@dataclass(frozen=True)
class Identity:
    """A client certificate's subject: the user name and its groups."""

    file: str
    user: str
    groups: tuple[str, ...] = ()


ADMIN: Final = Identity("admin", "kubernetes-admin", ("system:masters",))
CONTROLLER_MANAGER: Final = Identity("kube-controller-manager", "system:kube-controller-manager")
SCHEDULER: Final = Identity("kube-scheduler", "system:kube-scheduler")
KWOK: Final = Identity("kwok", "kwok", ("system:masters",))
IDENTITIES: Final = (ADMIN, CONTROLLER_MANAGER, SCHEDULER, KWOK)


@dataclass(frozen=True)
class Pki:
    """Paths of every file the control plane reads."""

    dir: Path

    @property
    def ca_cert(self) -> Path:
        return self.dir / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.dir / "ca.key"

    @property
    def serving_cert(self) -> Path:
        return self.dir / "serving.crt"

    @property
    def serving_key(self) -> Path:
        return self.dir / "serving.key"

    @property
    def sa_key(self) -> Path:
        return self.dir / "sa.key"

    @property
    def sa_pub(self) -> Path:
        return self.dir / "sa.pub"

    def client_cert(self, who: Identity) -> Path:
        return self.dir / f"{who.file}.crt"

    def client_key(self, who: Identity) -> Path:
        return self.dir / f"{who.file}.key"

    def kubeconfig(self, who: Identity) -> Path:
        return self.dir / f"{who.file}.kubeconfig"


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _builder(
    subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey
) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
    )


def _leaf(
    ca: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    subject: x509.Name,
    usage: x509.ObjectIdentifier,
    sans: list[x509.GeneralName] | None = None,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _key()
    builder = (
        _builder(subject, ca.subject, key.public_key())
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(ca_key, hashes.SHA256()), key


def generate(pki: Pki) -> None:
    """Write a fresh CA, serving cert, service-account key pair and client certs."""
    pki.dir.mkdir(parents=True, exist_ok=True)
    ca_key = _key()
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "agent-lifecycle-local-ca")])
    ca = (
        _builder(ca_name, ca_name, ca_key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    pki.ca_cert.write_bytes(_pem(ca))
    _write_key(pki.ca_key, ca_key)

    serving, serving_key = _leaf(
        ca,
        ca_key,
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]),
        ExtendedKeyUsageOID.SERVER_AUTH,
        [
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            x509.IPAddress(ipaddress.ip_address(SERVICE_IP)),
            x509.DNSName("localhost"),
            x509.DNSName("kubernetes"),
            x509.DNSName("kubernetes.default"),
            x509.DNSName("kubernetes.default.svc"),
            x509.DNSName("kubernetes.default.svc.cluster.local"),
        ],
    )
    pki.serving_cert.write_bytes(_pem(serving))
    _write_key(pki.serving_key, serving_key)

    sa_key = _key()
    _write_key(pki.sa_key, sa_key)
    pki.sa_pub.write_bytes(
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )

    for who in IDENTITIES:
        subject = x509.Name(
            [x509.NameAttribute(NameOID.ORGANIZATION_NAME, group) for group in who.groups]
            + [x509.NameAttribute(NameOID.COMMON_NAME, who.user)]
        )
        cert, key = _leaf(ca, ca_key, subject, ExtendedKeyUsageOID.CLIENT_AUTH)
        pki.client_cert(who).write_bytes(_pem(cert))
        _write_key(pki.client_key(who), key)


def write_kubeconfig(pki: Pki, who: Identity, server: str, path: Path | None = None) -> Path:
    """A self-contained kubeconfig (certificates embedded) for ``who`` against ``server``."""

    def b64(p: Path) -> str:
        return base64.b64encode(p.read_bytes()).decode()

    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "local",
                "cluster": {"server": server, "certificate-authority-data": b64(pki.ca_cert)},
            }
        ],
        "users": [
            {
                "name": who.user,
                "user": {
                    "client-certificate-data": b64(pki.client_cert(who)),
                    "client-key-data": b64(pki.client_key(who)),
                },
            }
        ],
        "contexts": [
            {
                "name": "local",
                "context": {"cluster": "local", "user": who.user, "namespace": "default"},
            }
        ],
        "current-context": "local",
    }
    target = path or pki.kubeconfig(who)
    target.write_text(yaml.safe_dump(config, sort_keys=False))
    target.chmod(0o600)
    return target
