"""Kubernetes credentials, resolved as kubectl resolves them.

A kubeconfig (the files ``KUBECONFIG`` lists, else ``~/.kube/config``): its
context's cluster (server, certificate authority, or insecure-skip-tls-verify)
and user (a token, a token file, a client certificate, or an exec plugin such as
``aws eks get-token``). Without a kubeconfig file, the in-cluster
ServiceAccount. Tokens that change are read again: a token file (the
ServiceAccount's, rotated by the kubelet) once a minute, an exec plugin's when
it expires.

The operator resolves them itself rather than through the ``kubernetes``
package: kopf imports that package's 700 models whenever it is installed, and
they were 14 MiB of the operator's resident memory, for a few dozen lines of YAML.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import dataclasses
import datetime
import json
import os
import pathlib
import ssl
import subprocess
import tempfile
import time
from collections.abc import Callable
from typing import Any, Final

import yaml

from controller import settings

# Without KUBECONFIG (read by settings, never here): kubectl's default file.
DEFAULT_KUBECONFIG: Final = "~/.kube/config"
SERVICE_ACCOUNT: Final = pathlib.Path("/var/run/secrets/kubernetes.io/serviceaccount")
# How long a token read from a file is used before the file is read again.
TOKEN_FILE_TTL: Final = 60.0
# An exec plugin's token is renewed this long before it expires.
EXEC_MARGIN: Final = 30.0
EXEC_TIMEOUT: Final = 60.0


class CredentialsError(RuntimeError):
    """No usable credentials; the message says where and why."""


@dataclasses.dataclass(frozen=True)
class Credentials:
    """Where the API server is and how to prove who we are."""

    server: str
    ca_path: str | None = None
    ca_data: str | None = None  # PEM
    insecure: bool = False
    certificate_path: str | None = None
    certificate_data: str | None = None  # PEM
    key_path: str | None = None
    key_data: str | None = None  # PEM
    # The bearer token now (None: none); read again as it needs to be.
    token: Callable[[], str | None] = lambda: None
    # The context's namespace (kubectl's default for -n).
    namespace: str = "default"
    # The kubeconfig files read, joined by os.pathsep (None: the in-cluster ServiceAccount).
    kubeconfig: str | None = None

    def ssl_context(self) -> ssl.SSLContext:
        try:
            context = ssl.create_default_context(cafile=self.ca_path, cadata=self.ca_data)
            if self.insecure:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            if self.certificate_path or self.certificate_data:
                with contextlib.ExitStack() as stack:
                    cert = self.certificate_path or _pem_file(stack, self.certificate_data)
                    key = self.key_path or (self.key_data and _pem_file(stack, self.key_data))
                    context.load_cert_chain(cert, key)
        except (OSError, ssl.SSLError) as exc:
            files = [f for f in (self.ca_path, self.certificate_path, self.key_path) if f]
            named = f" ({', '.join(files)})" if files else ""
            raise CredentialsError(
                f"the certificate authority or client certificate for {self.server} "
                f"cannot be loaded{named}: {exc}"
            ) from None
        return context


def load(kubeconfig: str | None, context: str | None = None) -> Credentials:
    """The kubeconfig's credentials (``kubeconfig`` a path list, None: kubectl's default file),
    else, when no kubeconfig file exists, the in-cluster ServiceAccount's."""
    paths = [
        pathlib.Path(p).expanduser()
        for p in (kubeconfig or DEFAULT_KUBECONFIG).split(os.pathsep)
        if p.strip()
    ]
    present = [p for p in paths if p.is_file()]
    if present:
        credentials = _from_kubeconfig(present, context)
        credentials.token()  # an exec plugin runs now: its failure is a start-up error
        return credentials
    environ = settings.process_environment()
    host = environ.get("KUBERNETES_SERVICE_HOST")
    port = environ.get("KUBERNETES_SERVICE_PORT")
    token_file = SERVICE_ACCOUNT / "token"
    if host and port and token_file.is_file():
        if ":" in host:
            host = f"[{host}]"
        return Credentials(
            server=f"https://{host}:{port}",
            ca_path=str(SERVICE_ACCOUNT / "ca.crt"),
            token=_file_token(token_file),
            namespace=_read(SERVICE_ACCOUNT / "namespace", "default").strip() or "default",
        )
    named = ", ".join(str(p) for p in paths)
    raise CredentialsError(
        f"no Kubernetes credentials: no usable kubeconfig (no file at {named}) "
        "and not running in a cluster"
    )


def _from_kubeconfig(paths: list[pathlib.Path], wanted: str | None) -> Credentials:
    # kubectl's merge: the first file to name a cluster, user or context wins, and the
    # first to set current-context.
    named: dict[str, dict[str, tuple[pathlib.Path, dict[str, Any]]]] = {
        "clusters": {},
        "users": {},
        "contexts": {},
    }
    current: str | None = None
    for path in paths:
        try:
            document = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise CredentialsError(f"kubeconfig {path}: cannot read it: {exc}") from None
        if not isinstance(document, dict):
            raise CredentialsError(f"kubeconfig {path}: not a kubeconfig (not a mapping)")
        current = current or document.get("current-context") or None
        for kind, items in named.items():
            for item in document.get(kind) or []:
                if isinstance(item, dict) and isinstance(item.get("name"), str):
                    items.setdefault(item["name"], (path, item.get(kind[:-1]) or {}))
    where = ", ".join(str(p) for p in paths)
    chosen = wanted or current
    if not chosen:
        raise CredentialsError(f"kubeconfig {where}: no current-context, and no --context given")
    if chosen not in named["contexts"]:
        raise CredentialsError(f"kubeconfig {where}: no context named {chosen!r}")
    _, ctx = named["contexts"][chosen]
    cluster_name, user_name = ctx.get("cluster"), ctx.get("user")
    if cluster_name not in named["clusters"]:
        raise CredentialsError(
            f"kubeconfig {where}: context {chosen!r} names no known cluster ({cluster_name!r})"
        )
    cluster_file, cluster = named["clusters"][cluster_name]
    user_file, user = named["users"].get(str(user_name), (cluster_file, {}))
    server = cluster.get("server")
    if not isinstance(server, str) or not server:
        raise CredentialsError(f"kubeconfig {cluster_file}: cluster {cluster_name!r} has no server")
    label = f"kubeconfig {user_file}: user {user_name!r}"
    return Credentials(
        server=server.rstrip("/"),
        ca_path=_path(cluster_file, cluster.get("certificate-authority")),
        ca_data=_pem(cluster.get("certificate-authority-data"), f"cluster {cluster_name!r}"),
        insecure=bool(cluster.get("insecure-skip-tls-verify")),
        certificate_path=_path(user_file, user.get("client-certificate")),
        certificate_data=_pem(user.get("client-certificate-data"), label),
        key_path=_path(user_file, user.get("client-key")),
        key_data=_pem(user.get("client-key-data"), label),
        token=_user_token(user_file, user, label),
        namespace=str(ctx.get("namespace") or "default"),
        kubeconfig=os.pathsep.join(str(p) for p in paths),
    )


def _user_token(path: pathlib.Path, user: dict[str, Any], label: str) -> Callable[[], str | None]:
    if user.get("auth-provider"):
        provider = (user["auth-provider"] or {}).get("name", "?")
        raise CredentialsError(
            f"{label} authenticates with the auth-provider {provider!r}, which is not "
            "supported: use a token, a client certificate or an exec plugin"
        )
    if user.get("username") or user.get("password"):
        raise CredentialsError(
            f"{label} authenticates with a username and password (basic auth), which "
            "Kubernetes no longer offers: use a token, a client certificate or an exec plugin"
        )
    if user.get("token"):
        token = str(user["token"])
        return lambda: token
    if user.get("tokenFile"):
        return _file_token(pathlib.Path(_path(path, user["tokenFile"]) or ""))
    if user.get("exec"):
        return _exec_token(path, user["exec"], label)
    return lambda: None


def _file_token(path: pathlib.Path) -> Callable[[], str | None]:
    """The token in ``path``, read again once ``TOKEN_FILE_TTL`` has passed."""
    cached: list[Any] = []  # [token, read at]

    def token() -> str | None:
        if not cached or time.monotonic() - cached[1] > TOKEN_FILE_TTL:
            cached[:] = [_read(path, "").strip() or None, time.monotonic()]
        value: str | None = cached[0]
        return value

    return token


def _exec_token(path: pathlib.Path, spec: dict[str, Any], label: str) -> Callable[[], str | None]:
    """An exec plugin's token (client.authentication.k8s.io ExecCredential), run again
    when the token it gave expires."""
    command = spec.get("command")
    if not isinstance(command, str) or not command:
        raise CredentialsError(f"{label}: its exec plugin names no command")
    if "/" in command and not pathlib.Path(command).is_absolute():
        command = str(path.parent / command)  # relative to the kubeconfig, as kubectl does
    argv = [command, *(str(a) for a in spec.get("args") or [])]
    env = {
        **settings.process_environment(),
        **{str(e["name"]): str(e["value"]) for e in spec.get("env") or []},
    }
    env["KUBERNETES_EXEC_INFO"] = json.dumps(
        {
            "apiVersion": spec.get("apiVersion", "client.authentication.k8s.io/v1"),
            "kind": "ExecCredential",
            "spec": {"interactive": False},
        }
    )
    cached: list[Any] = []  # [token, renew at (monotonic)]

    def token() -> str | None:
        if not cached or time.monotonic() >= cached[1]:
            cached[:] = _run_exec(argv, env, label)
        value: str | None = cached[0]
        return value

    return token


def _run_exec(argv: list[str], env: dict[str, str], label: str) -> list[Any]:
    try:
        done = subprocess.run(
            argv, env=env, capture_output=True, text=True, timeout=EXEC_TIMEOUT, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise CredentialsError(f"{label}: its exec plugin {argv[0]} failed: {exc}") from None
    if done.returncode != 0:
        said = done.stderr.strip().splitlines()[-1:] or [f"exit status {done.returncode}"]
        raise CredentialsError(f"{label}: its exec plugin {argv[0]} failed: {said[0]}")
    try:
        status = json.loads(done.stdout)["status"]
        token = str(status["token"])
    except (ValueError, KeyError, TypeError):
        raise CredentialsError(
            f"{label}: its exec plugin {argv[0]} gave no ExecCredential with a token"
        ) from None
    renew_at = float("inf")
    expires = status.get("expirationTimestamp")
    if expires:
        left = datetime.datetime.fromisoformat(str(expires).replace("Z", "+00:00")) - (
            datetime.datetime.now(datetime.UTC)
        )
        renew_at = time.monotonic() + left.total_seconds() - EXEC_MARGIN
    return [token, renew_at]


def _path(base: pathlib.Path, value: Any) -> str | None:
    """A kubeconfig's file reference, relative to the kubeconfig's own directory."""
    if not value:
        return None
    return str(base.parent / pathlib.Path(str(value)).expanduser())


def _pem(value: Any, label: str) -> str | None:
    """A kubeconfig's ``*-data`` field: base64 of PEM."""
    if not value:
        return None
    try:
        return base64.b64decode(str(value), validate=True).decode("ascii")
    except (binascii.Error, UnicodeDecodeError):
        raise CredentialsError(f"{label}: a *-data field is not base64 of PEM") from None


def _pem_file(stack: contextlib.ExitStack[bool | None], pem: str | None) -> str:
    """``pem`` in a private temporary file for as long as ``stack`` is open (ssl reads
    certificates and keys from files only)."""
    folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="kube-"))
    target = pathlib.Path(folder) / "pem"
    target.write_text(pem or "")
    return str(target)


def _read(path: pathlib.Path, default: str) -> str:
    try:
        return path.read_text()
    except OSError:
        return default
