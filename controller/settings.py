"""The operator's configuration: the one place the environment is read.

Every setting of DESIGN.md ("Configuration") is a field here with its default
and its bounds. A bad value stops start-up with one line that names the
variable, the value and what is wrong with it (``SettingsError``), rather than a
traceback. The TLS files are loaded here, as the client would load them, so a
missing file, a bundle that holds no certificate or a key that does not match its
certificate is such a line too, not a handshake error at the first connection.
"""

from __future__ import annotations

import os
import pathlib
import re
import socket
import ssl
import urllib.parse
from collections.abc import Mapping
from typing import Annotated, Final, Literal, NamedTuple

import pydantic

DEFAULT_VALKEY_URL: Final = "redis://127.0.0.1:6379/0"
# A Namespace's name (DNS-1123 label): what WATCH_NAMESPACES lists, one by one.
NAMESPACE_NAME: Final = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


class SettingsError(ValueError):
    """A setting has a bad value; ``str()`` is the one line to show."""


class Sentinel(NamedTuple):
    """One entry of ``VALKEY_SENTINELS``: ``[user:password@]host:port``."""

    host: str
    port: int
    username: str | None = None
    password: str | None = None

    @classmethod
    def parse(cls, entry: str) -> Sentinel:
        parts = urllib.parse.urlsplit(f"//{entry}")
        try:
            port = parts.port
        except ValueError:
            port = None
        if not parts.hostname or port is None or parts.path or parts.query:
            shown = re.sub(r"^[^@]*@", "***@", entry)  # never the credentials
            raise ValueError(f"{shown!r} is not host:port (as 10.0.0.5:26379)")
        return cls(
            parts.hostname,
            port,
            urllib.parse.unquote(parts.username) if parts.username else None,
            urllib.parse.unquote(parts.password) if parts.password else None,
        )


class Settings(pydantic.BaseModel):
    """Settings from the environment (``VALKEY_URL`` and friends): each field is the variable
    of its name in upper case."""

    model_config = pydantic.ConfigDict(frozen=True, extra="ignore")

    # The topology comes first: the checks of the URL and the prefix depend on it.
    # Cluster: VALKEY_URL is a seed node. Sentinel: the sentinels find the primary;
    # VALKEY_URL gives the scheme, credentials and db of the data nodes.
    valkey_cluster: bool = False
    valkey_sentinels: tuple[Sentinel, ...] = ()
    valkey_sentinel_master: Annotated[str, pydantic.Field(validate_default=True)] = ""
    valkey_url: Annotated[str, pydantic.Field(validate_default=True)] = DEFAULT_VALKEY_URL
    # TLS for rediss:// (empty: the system's trust store, no client certificate). The key
    # comes before the certificate so that the certificate's check can load the pair.
    valkey_ca_file: str = ""
    valkey_key_file: str = ""
    valkey_cert_file: Annotated[str, pydantic.Field(validate_default=True)] = ""
    valkey_key_prefix: Annotated[str, pydantic.Field(validate_default=True)] = "orchestrator:"
    valkey_stream_maxlen: Annotated[int, pydantic.Field(ge=1)] = 100_000
    valkey_deleted_ttl_seconds: Annotated[int, pydantic.Field(ge=1)] = 86_400
    # The longest one Valkey operation may take: a hung server costs the mirror this, no more.
    valkey_timeout_seconds: Annotated[float, pydantic.Field(gt=0, le=60)] = 5.0
    # How often every agent's record is checked against its status (anti-entropy).
    valkey_resync_interval_seconds: Annotated[float, pydantic.Field(ge=1, le=86_400)] = 300.0
    watch_namespaces: tuple[str, ...] = ()
    max_concurrent_agents: Annotated[int, pydantic.Field(ge=0)] = 0
    # A finished Agent is deleted this long after it finished unless its spec says otherwise
    # (spec.ttlSecondsAfterFinished); 0: kept. A year at most, as the spec's field.
    agent_ttl_seconds_after_finished: Annotated[int, pydantic.Field(ge=0, le=31_536_000)] = 0
    # Read who asked for a kill or a switch from the annotations deploy/base/audit.yaml's
    # policies stamp. False where those policies are not installed: the annotations are then
    # whatever a client wrote, and kills record no one.
    audit_annotations: bool = True
    # Kubernetes credentials: a kubeconfig path list, else ~/.kube/config, else in-cluster.
    kubeconfig: str | None = None
    # /healthz, /readyz and /metrics (port 0: any free port, logged at start-up).
    http_host: str = "0.0.0.0"
    http_port: Annotated[int, pydantic.Field(ge=0, le=65535)] = 8080
    # Leader election on a Lease in this namespace (empty: none, this process always acts).
    leader_election_namespace: str = ""
    lease_name: str = "agent-lifecycle-operator"
    lease_duration_seconds: Annotated[float, pydantic.Field(ge=2, le=300)] = 15.0
    # Log lines: text for a terminal, json (one object a line) for a log pipeline.
    log_format: Literal["text", "json"] = "text"
    # This replica's name in the Lease (the Deployment sets it from the Pod's name).
    pod_name: str = pydantic.Field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")

    @pydantic.field_validator("valkey_url")
    @classmethod
    def _valkey_scheme(cls, value: str, info: pydantic.ValidationInfo) -> str:
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
        if info.data.get("valkey_sentinels"):
            if value.startswith("unix://"):
                raise ValueError("with Sentinel it gives redis:// or rediss://, credentials, db")
            db = urllib.parse.urlsplit(value).path.strip("/") or "0"
            if not db.isdigit():
                raise ValueError(f"the db must be a number, not {db!r}")
        if info.data.get("valkey_cluster"):
            if value.startswith("unix://"):
                raise ValueError(
                    "VALKEY_CLUSTER=true needs a seed node's redis:// or rediss:// URL"
                )
            db = urllib.parse.urlsplit(value).path.strip("/") or "0"
            if db != "0":
                raise ValueError(f"a Valkey Cluster has only db 0, and this URL names db {db}")
        return value

    @pydantic.field_validator("valkey_sentinels", mode="before")
    @classmethod
    def _sentinel_list(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        return tuple(Sentinel.parse(part.strip()) for part in value.split(",") if part.strip())

    @pydantic.field_validator("valkey_sentinel_master")
    @classmethod
    def _sentinel_master(cls, value: str, info: pydantic.ValidationInfo) -> str:
        sentinels = info.data.get("valkey_sentinels")
        if sentinels and not value:
            raise ValueError("VALKEY_SENTINELS is set: the master's name is needed too")
        if value and not sentinels:
            raise ValueError("it names a master, but VALKEY_SENTINELS lists no sentinel")
        if sentinels and info.data.get("valkey_cluster"):
            raise ValueError("Sentinel and VALKEY_CLUSTER=true exclude each other")
        return value

    @pydantic.field_validator("valkey_key_prefix")
    @classmethod
    def _one_slot(cls, value: str, info: pydantic.ValidationInfo) -> str:
        if info.data.get("valkey_cluster") and not hash_tagged(value):
            raise ValueError(
                "in cluster mode every key of the prefix must share one slot, so the prefix "
                "needs a hash tag, as {orchestrator}:"
            )
        return value

    @pydantic.field_validator("valkey_ca_file", "valkey_key_file", "valkey_cert_file")
    @classmethod
    def _tls_file(cls, value: str, info: pydantic.ValidationInfo) -> str:
        key = info.data.get("valkey_key_file", "")
        if not value:
            if info.field_name == "valkey_cert_file" and key:
                raise ValueError("VALKEY_KEY_FILE is set: the certificate it belongs to is needed")
            return value
        url = info.data.get("valkey_url")
        if url is not None and not url.startswith("rediss://"):
            raise ValueError("VALKEY_URL is not rediss://, so no TLS would be used")
        context = ssl.create_default_context()
        try:
            if info.field_name == "valkey_ca_file":
                what = " as a PEM CA bundle"
                context.load_verify_locations(cafile=value)
            elif info.field_name == "valkey_key_file":
                what = ""  # loaded with its certificate, next
                pathlib.Path(value).read_bytes()
            else:
                what = " as a PEM client certificate with its key (VALKEY_KEY_FILE, or in it)"
                # A password never prompts on a terminal: an encrypted key is refused.
                context.load_cert_chain(value, key or None, password="")
        except OSError as exc:  # ssl.SSLError is one too
            raise ValueError(f"cannot read it{what}: {exc.strerror or exc}") from None
        return value

    @pydantic.field_validator("watch_namespaces", mode="before")
    @classmethod
    def _comma_list(cls, value: object) -> object:
        if isinstance(value, str):
            value = tuple(part.strip() for part in value.split(",") if part.strip())
        for name in value if isinstance(value, tuple) else ():
            if not NAMESPACE_NAME.fullmatch(name):
                raise ValueError(
                    f"{name!r} is not a namespace name (lowercase letters, digits and '-', "
                    "at most 63; no patterns)"
                )
        return value


def hash_tagged(prefix: str) -> bool:
    """Whether every key starting with ``prefix`` hashes to one cluster slot: the prefix holds
    the key's hash tag, a non-empty ``{...}`` (the first ``{`` and the first ``}`` after it)."""
    opening = prefix.find("{")
    closing = prefix.find("}", opening + 1)
    return opening >= 0 and closing > opening + 1


def process_environment() -> Mapping[str, str]:
    """The process environment: the one place it is read (the unit tests guard it here)."""
    return os.environ


def load(
    environ: Mapping[str, str] | None = None, overrides: Mapping[str, str] | None = None
) -> Settings:
    """The settings from ``environ`` (default: the process environment, read here and nowhere
    else), with ``overrides`` (a command line's flags, by variable name) taking precedence.

    Only the given mapping is read when one is given: a test stays hermetic.
    """
    source = dict(process_environment() if environ is None else environ)
    source.update({k: v for k, v in (overrides or {}).items() if v})
    names = {name.upper() for name in Settings.model_fields}
    try:
        return Settings.model_validate(
            {key.lower(): value for key, value in source.items() if key.upper() in names}
        )
    except pydantic.ValidationError as exc:
        error = exc.errors()[0]
        field = str(error["loc"][0]) if error["loc"] else "?"
        given = error.get("input")
        if isinstance(given, str):  # a password in a URL or a sentinel list is never shown
            given = re.sub(r"(?<=:)[^:@/,]*(?=@)", "***", given)
            given = re.sub(r"(?i)(password=)[^&]*", r"\1***", given)
        raise SettingsError(f"invalid setting {field.upper()}={given!r}: {error['msg']}") from None


def given(name: str, environ: Mapping[str, str] | None = None) -> str:
    """The raw value of one variable, empty when unset: for a command that must tell "not
    set" from the default (``kubectl agents events`` with no Valkey named)."""
    return (process_environment() if environ is None else environ).get(name, "")
