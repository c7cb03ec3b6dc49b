"""Kubernetes credentials, resolved as kubectl resolves them.

A kubeconfig (the files ``KUBECONFIG`` lists, else ``~/.kube/config``): its
context's cluster (server, certificate authority, or insecure-skip-tls-verify)
and user (a token, a token file, a client certificate, or an exec plugin such as
``aws eks get-token``). Without a kubeconfig file, the in-cluster
ServiceAccount. Tokens that change are read again: a token file (the
ServiceAccount's, rotated by the kubelet) once a minute, an exec plugin's when
it expires or the API server refuses it (401). Reading one is I/O (a plugin
may take seconds): ``Token.stale`` says when it is due, and the caller runs
``Token.refresh`` off the event loop.

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
import math
import os
import pathlib
import pwd
import ssl
import subprocess
import tempfile
import threading
import time
from typing import Any, Final

import yaml

from controller import settings

# Without KUBECONFIG (read by settings, never here): kubectl's default file.
DEFAULT_KUBECONFIG: Final = "~/.kube/config"
SERVICE_ACCOUNT: Final = pathlib.Path("/var/run/secrets/kubernetes.io/serviceaccount")
# How long a token read from a file is used before the file is read again.
TOKEN_FILE_TTL: Final = 60.0
# An exec plugin's token is renewed this long before it expires; a plugin runs at most
# once in EXEC_INTERVAL, whatever asks (a refused token, a failure, a short-lived token).
EXEC_MARGIN: Final = 30.0
EXEC_INTERVAL: Final = 10.0
EXEC_TIMEOUT: Final = 60.0
# Kubeconfig fields kubectl honours and this reader does not: refused by name rather than
# ignored (ignoring `as` would act as a broader identity than the one asked for).
_UNSUPPORTED_USER: Final = ("as", "as-uid", "as-groups", "as-user-extra")
_UNSUPPORTED_CLUSTER: Final = ("tls-server-name", "proxy-url")


class CredentialsError(RuntimeError):
    """No usable credentials; the message says where and why."""


class Token:
    """A bearer token, fixed (or none) unless a subclass reads it again."""

    def __init__(self, value: str | None = None) -> None:
        self._value = value
        self._lock = threading.Lock()  # one refresh at a time (kopf's login runs in a thread)

    def current(self) -> str | None:
        """The token as last read: no I/O."""
        return self._value

    def stale(self) -> bool:
        """Whether ``refresh`` is due before the next request."""
        return False

    def refresh(self) -> str | None:
        """Read it again if it is due (I/O: call it off the event loop)."""
        with self._lock:
            if self.stale():
                self._read()
            return self.current()

    def refused(self) -> None:
        """The API server refused the token (401): read it again before the next request."""

    @property
    def expires(self) -> datetime.datetime | None:
        """When the token stops being valid, if it says."""
        return None

    def _read(self) -> None:
        return None


class FileToken(Token):
    """The token in a file, read again once ``TOKEN_FILE_TTL`` has passed; on a failed read
    after a good one the token read last is kept (as client-go does)."""

    def __init__(self, path: pathlib.Path, label: str) -> None:
        super().__init__()
        self.path, self.label = path, label
        self._read_at = -math.inf
        self._read(first=True)

    def stale(self) -> bool:
        return time.monotonic() - self._read_at > TOKEN_FILE_TTL

    def refused(self) -> None:
        self._read_at = -math.inf

    def _read(self, first: bool = False) -> None:
        try:
            value = self.path.read_text().strip()
        except OSError as exc:
            if first:
                raise CredentialsError(
                    f"{self.label}: its token file cannot be read: {exc}"
                ) from None
            value = self._value or ""
        self._value, self._read_at = value or None, time.monotonic()


class ExecToken(Token):
    """An exec plugin's token (client.authentication.k8s.io ExecCredential), run again
    when it expires or is refused."""

    def __init__(self, argv: list[str], env: dict[str, str], hint: str, label: str) -> None:
        super().__init__()
        self.argv, self.env, self.hint, self.label = argv, env, hint, label
        self._renew_at = 0.0  # monotonic
        self._ran_at = -math.inf
        self._expires: datetime.datetime | None = None
        self._read()

    @property
    def expires(self) -> datetime.datetime | None:
        return self._expires

    def stale(self) -> bool:
        now = time.monotonic()
        return now >= self._renew_at and now - self._ran_at >= EXEC_INTERVAL

    def refused(self) -> None:
        self._renew_at = 0.0

    def _read(self) -> None:
        self._ran_at = time.monotonic()
        try:
            self._value, self._expires = self._run()
        except CredentialsError:
            if self._value is None:
                raise  # the first run: a start-up error
            return  # the token it gave last, until the next try
        if self._expires is None:
            self._renew_at = math.inf
        else:
            # Before it expires (and, by `stale`, not within EXEC_INTERVAL of this run).
            self._renew_at = self._ran_at + (self._expires - _now()).total_seconds() - EXEC_MARGIN

    def _run(self) -> tuple[str, datetime.datetime | None]:
        name = self.argv[0]
        try:
            done = subprocess.run(
                self.argv,
                env=self.env,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=EXEC_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired:
            # Not str(exc): it holds the arguments, where a client secret may be.
            raise CredentialsError(
                f"{self.label}: its exec plugin {name} did not answer within {EXEC_TIMEOUT:.0f} s"
            ) from None
        except OSError as exc:
            hint = f" ({self.hint})" if self.hint else ""
            raise CredentialsError(
                f"{self.label}: its exec plugin {name} cannot run: {exc.strerror}{hint}"
            ) from None
        if done.returncode != 0:
            said = done.stderr.strip().splitlines()[-1:] or [f"exit status {done.returncode}"]
            raise CredentialsError(f"{self.label}: its exec plugin {name} failed: {said[0]}")
        try:
            status = json.loads(done.stdout)["status"]
        except (ValueError, KeyError, TypeError):
            status = None
        if not isinstance(status, dict) or not status.get("token"):
            what = (
                "a client certificate, which is not supported: use a token"
                if isinstance(status, dict) and status.get("clientCertificateData")
                else "no ExecCredential with a token"
            )
            raise CredentialsError(f"{self.label}: its exec plugin {name} gave {what}")
        return str(status["token"]), _expiry(status.get("expirationTimestamp"), self.label)


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
    key_data: str | None = dataclasses.field(default=None, repr=False)  # PEM
    token: Token = dataclasses.field(default_factory=Token, repr=False)
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
    paths = [_home(p) for p in (kubeconfig or DEFAULT_KUBECONFIG).split(os.pathsep) if p.strip()]
    present = [p for p in paths if p.is_file()]
    if present:
        return _from_kubeconfig(present, context)
    environ = settings.process_environment()
    host = environ.get("KUBERNETES_SERVICE_HOST")
    port = environ.get("KUBERNETES_SERVICE_PORT")
    named = ", ".join(str(p) for p in paths)
    if not (host and port):
        raise CredentialsError(
            f"no Kubernetes credentials: no usable kubeconfig (no file at {named}) "
            "and not running in a cluster"
        )
    token_file = SERVICE_ACCOUNT / "token"
    if not token_file.is_file():
        raise CredentialsError(
            f"no Kubernetes credentials: no kubeconfig (no file at {named}), and in the "
            f"cluster no ServiceAccount token at {token_file} "
            "(automountServiceAccountToken: false?)"
        )
    if ":" in host:
        host = f"[{host}]"
    return Credentials(
        server=f"https://{host}:{port}",
        ca_path=str(SERVICE_ACCOUNT / "ca.crt"),
        token=FileToken(token_file, "the in-cluster ServiceAccount"),
        namespace=_read(SERVICE_ACCOUNT / "namespace", "default").strip() or "default",
    )


def _home(path: str) -> pathlib.Path:
    """``path`` with a leading ``~`` made the home directory (HOME, read through settings)."""
    if path != "~" and not path.startswith("~/"):
        return pathlib.Path(path)
    home = settings.process_environment().get("HOME") or pwd.getpwuid(os.getuid()).pw_dir
    return pathlib.Path(home) / path[2:]


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
    where_cluster = f"kubeconfig {cluster_file}: cluster {cluster_name!r}"
    for field in _UNSUPPORTED_CLUSTER:
        if cluster.get(field):
            raise CredentialsError(f"{where_cluster} sets {field}, which is not supported")
    for field in _UNSUPPORTED_USER:
        if user.get(field):
            raise CredentialsError(f"{label} sets {field} (impersonation), which is not supported")
    for field in ("certificate-authority", "client-certificate", "client-key"):
        holder = cluster if field == "certificate-authority" else user
        if holder.get(field) and holder.get(f"{field}-data"):
            owner = where_cluster if holder is cluster else label
            raise CredentialsError(f"{owner} sets both {field} and {field}-data: one, please")
    return Credentials(
        server=server.rstrip("/"),
        ca_path=_path(cluster_file, cluster.get("certificate-authority")),
        ca_data=_pem(cluster.get("certificate-authority-data"), where_cluster),
        insecure=bool(cluster.get("insecure-skip-tls-verify")),
        certificate_path=_path(user_file, user.get("client-certificate")),
        certificate_data=_pem(user.get("client-certificate-data"), label),
        key_path=_path(user_file, user.get("client-key")),
        key_data=_pem(user.get("client-key-data"), label),
        token=_user_token(user_file, user, cluster, label),
        namespace=str(ctx.get("namespace") or "default"),
        kubeconfig=os.pathsep.join(str(p) for p in paths),
    )


def _user_token(
    path: pathlib.Path, user: dict[str, Any], cluster: dict[str, Any], label: str
) -> Token:
    if user.get("auth-provider"):
        provider = (user["auth-provider"] or {}).get("name", "?")
        raise CredentialsError(
            f"{label} authenticates with the auth-provider {provider!r}, which is not "
            "supported: use its exec plugin (kubelogin for oidc), a token or a client certificate"
        )
    if user.get("username") or user.get("password"):
        raise CredentialsError(
            f"{label} authenticates with a username and password (basic auth), which "
            "Kubernetes no longer offers: use a token, a client certificate or an exec plugin"
        )
    if user.get("token"):
        return Token(str(user["token"]))
    if user.get("tokenFile"):
        return FileToken(pathlib.Path(_path(path, user["tokenFile"]) or ""), label)
    if user.get("exec"):
        return _exec_token(path, user["exec"], cluster, label)
    return Token()


def _exec_token(
    path: pathlib.Path, spec: dict[str, Any], cluster: dict[str, Any], label: str
) -> ExecToken:
    command = spec.get("command")
    if not isinstance(command, str) or not command:
        raise CredentialsError(f"{label}: its exec plugin names no command")
    if "/" in command and not pathlib.Path(command).is_absolute():
        command = str(path.parent / command)  # relative to the kubeconfig, as kubectl does
    info: dict[str, Any] = {"interactive": False}
    if spec.get("provideClusterInfo"):
        info["cluster"] = {
            k: cluster[k]
            for k in ("server", "certificate-authority-data", "insecure-skip-tls-verify")
            if k in cluster
        }
    env = {
        **settings.process_environment(),
        **{str(e["name"]): str(e["value"]) for e in spec.get("env") or []},
        "KUBERNETES_EXEC_INFO": json.dumps(
            {
                "apiVersion": spec.get("apiVersion", "client.authentication.k8s.io/v1"),
                "kind": "ExecCredential",
                "spec": info,
            }
        ),
    }
    argv = [command, *(str(a) for a in spec.get("args") or [])]
    return ExecToken(argv, env, str(spec.get("installHint") or "").strip(), label)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _expiry(value: Any, label: str) -> datetime.datetime | None:
    """An ExecCredential's expirationTimestamp (RFC 3339; without an offset: UTC)."""
    if not value:
        return None
    try:
        at = datetime.datetime.fromisoformat(str(value).upper().replace("Z", "+00:00"))
    except ValueError:
        raise CredentialsError(
            f"{label}: its exec plugin gave an expirationTimestamp that is not a time: {value!r}"
        ) from None
    return at if at.tzinfo else at.replace(tzinfo=datetime.UTC)


def _path(base: pathlib.Path, value: Any) -> str | None:
    """A kubeconfig's file reference, relative to the kubeconfig's own directory."""
    if not value:
        return None
    return str(base.parent / _home(str(value)))


def _pem(value: Any, label: str) -> str | None:
    """A kubeconfig's ``*-data`` field: base64 of PEM (line breaks allowed, as kubectl
    allows them), from its first ``-----BEGIN`` (no text before it: kopf wants none)."""
    if not value:
        return None
    try:
        text = base64.b64decode("".join(str(value).split()), validate=True).decode("ascii")
    except (binascii.Error, UnicodeDecodeError):
        text = ""
    start = text.find("-----BEGIN ")
    if start < 0:
        raise CredentialsError(f"{label}: a *-data field is not base64 of PEM")
    return text[start:]


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
