"""kopf registrations only: every watch event goes to the operator's intake, nothing else.

``on.event`` handlers store nothing on the objects (no diff-base annotation,
no finalizer of kopf's own), so the operator writes only the Agents' status,
our one finalizer, and the Pods it owns: GitOps tools see no drift. kopf's
initial listing delivers every existing object, so a restarted operator
reconciles (and resyncs the mirror of) each of them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol, cast

import kopf

from controller import credentials, models, workload

# What is left of an Agent or Pod event once the store has its body (_let_go).
_IDENTITY = ("name", "namespace", "uid", "resourceVersion")


class Intake(Protocol):
    """Where watch events go (``app.Operator``): into the store, then onto the queues."""

    def agent_event(self, body: dict[str, Any], gone: bool, listed: bool = False) -> None: ...

    def pod_event(self, body: dict[str, Any], gone: bool, listed: bool = False) -> None: ...

    def switch_event(self, body: dict[str, Any], gone: bool) -> None: ...

    async def namespace_event(self, body: dict[str, Any], gone: bool) -> None: ...


class NoDiffBase(kopf.DiffBaseStorage):
    """No essence: kopf builds one for every event (a deep copy of the body) to diff it for
    change-detecting handlers, and there are none here, only ``on.event``. Nothing is
    fetched from or stored on the objects either."""

    def build(
        self, *, body: kopf.Body, extra_fields: Iterable[Any] | None = None
    ) -> kopf.BodyEssence:
        return kopf.BodyEssence()

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        return None


def configure(settings: kopf.OperatorSettings) -> None:
    # Transition events are ours to post; kopf's own log lines would flood `describe`.
    settings.posting.enabled = False
    settings.persistence.diffbase_storage = NoDiffBase()
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    # kopf's idle per-object workers stay 5 s, its default: let go after 0.5 s, a worker is
    # spawned again for each later event, and 1000-agent kills looked slower for it (README,
    # Performance). The last event each one holds is cut to its object's identity (_let_go).


def connection_info(config: credentials.Credentials) -> kopf.ConnectionInfo:
    """kopf's credentials: the same as controller.kube's, one resolution for both clients.
    kopf logs in at start and again after a 401: the token is then read again."""
    config.token.refused()
    return kopf.ConnectionInfo(
        server=config.server,
        ca_path=config.ca_path,
        ca_data=config.ca_data,
        insecure=config.insecure,
        certificate_path=config.certificate_path,
        certificate_data=config.certificate_data,
        private_key_path=config.key_path,
        private_key_data=config.key_data,
        token=config.token.refresh(),
        expiration=config.token.expires,
    )


def register(
    registry: kopf.OperatorRegistry,
    intake: Intake,
    config: credentials.Credentials,
) -> None:
    @kopf.on.startup(registry=registry)
    async def on_startup(settings: kopf.OperatorSettings, **_: Any) -> None:
        configure(settings)

    # Sync: kopf runs it in a thread, where an exec plugin may take its seconds.
    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        return connection_info(config)

    # Async handlers: kopf runs sync ones in a thread pool, a hop per event for nothing.
    # The raw event's object is handed over as is: the store keeps a trimmed copy.
    @kopf.on.event(models.GROUP, models.VERSION, "agents", registry=registry)
    async def on_agent_event(event: kopf.RawEvent, **_: Any) -> None:
        # kopf's listing (type None) is no news of a change: it goes behind observed changes.
        intake.agent_event(
            _body(event), gone=event["type"] == "DELETED", listed=event["type"] is None
        )
        _let_go(event)

    @kopf.on.event(models.GROUP, models.VERSION, "killswitches", registry=registry)
    async def on_killswitch_event(event: kopf.RawEvent, **_: Any) -> None:
        intake.switch_event(_body(event), gone=event["type"] == "DELETED")

    # Namespaces: their concurrency caps (admission.ANNOTATION).
    @kopf.on.event("", "v1", "namespaces", registry=registry)
    async def on_namespace_event(event: kopf.RawEvent, **_: Any) -> None:
        await intake.namespace_event(_body(event), gone=event["type"] == "DELETED")

    @kopf.on.event("", "v1", "pods", labels={workload.LABEL_AGENT: kopf.PRESENT}, registry=registry)
    async def on_pod_event(event: kopf.RawEvent, **_: Any) -> None:
        intake.pod_event(
            _body(event), gone=event["type"] == "DELETED", listed=event["type"] is None
        )
        _let_go(event)


def _body(event: kopf.RawEvent) -> dict[str, Any]:
    return cast(dict[str, Any], event["object"])


def _let_go(event: kopf.RawEvent) -> None:
    """Leave the event holding its object's identity, not its body, once the store has taken
    what it reads. kopf's worker for an object keeps the object's last event until the next
    one comes or it idles out (5 s): 13.7 MiB of parsed Agents and Pods at a 1000-agent burst's
    peak, of which this frees 6-7 (the store shares the rest: specs, statuses). It costs kopf
    nothing: its processing of this event holds the body itself, and no later step reads the
    event's object (tests/unit/test_handlers.py runs kopf's own processing to hold it to that).
    """
    meta = _body(event).get("metadata") or {}
    event["object"] = cast(kopf.RawBody, {"metadata": {k: meta[k] for k in _IDENTITY if k in meta}})
