"""The kopf registrations' settings of substance: no diff base, no posting."""

from __future__ import annotations

import asyncio
import copy
from typing import Any, cast

import kopf
import pytest
from kopf._cogs.structs import ephemera, references
from kopf._core.engines import indexing
from kopf._core.reactor import inventory, processing

from controller import credentials, handlers, models, workload
from tests.unit.fakes import agent_body


def test_kopf_builds_no_essence_and_stores_none_on_the_object() -> None:
    storage = handlers.NoDiffBase()
    body = kopf.Body(cast(kopf.RawBody, agent_body()))
    assert storage.build(body=body, extra_fields=["status.phase"]) == {}
    assert storage.fetch(body=body) is None
    patch = kopf.Patch()
    storage.store(body=body, patch=patch, essence=kopf.BodyEssence(spec={"a": 1}))
    assert not patch, "nothing written on the object: GitOps sees no drift"


def test_kopf_is_configured_to_post_nothing_and_diff_nothing() -> None:
    settings = kopf.OperatorSettings()
    handlers.configure(settings)
    assert settings.posting.enabled is False
    assert isinstance(settings.persistence.diffbase_storage, handlers.NoDiffBase)
    assert (settings.watching.server_timeout, settings.watching.client_timeout) == (300, 330)


class _Intake:
    """Keeps what it was given, as the store does."""

    def __init__(self) -> None:
        self.agents: list[dict[str, Any]] = []
        self.pods: list[dict[str, Any]] = []

    def agent_event(self, body: dict[str, Any], gone: bool, listed: bool = False) -> None:
        self.agents.append(copy.deepcopy(body))

    def pod_event(self, body: dict[str, Any], gone: bool, listed: bool = False) -> None:
        self.pods.append(copy.deepcopy(body))

    def switch_event(self, body: dict[str, Any], gone: bool) -> None: ...

    async def namespace_event(self, body: dict[str, Any], gone: bool) -> None: ...


_RESOURCES = {
    "agents": references.Resource(models.GROUP, models.VERSION, "agents", namespaced=True),
    "pods": references.Resource("", "v1", "pods", namespaced=True),
}


@pytest.mark.parametrize("event_type", ["MODIFIED", "DELETED", None])
@pytest.mark.parametrize("plural", ["agents", "pods"])
def test_the_event_kopf_keeps_holds_the_identity_not_the_body(
    plural: str, event_type: str | None
) -> None:
    """Through kopf's own processing of one watch event, as its per-object worker calls it:
    the handler's event is the worker's, and kopf reads nothing of its object afterwards."""
    registry = kopf.OperatorRegistry()
    intake = _Intake()
    handlers.register(registry, intake, cast(credentials.Credentials, None))
    settings = kopf.OperatorSettings()
    handlers.configure(settings)
    body = agent_body()
    body["metadata"]["labels"] = {workload.LABEL_AGENT: "worker"}
    body["metadata"]["managedFields"] = [{"manager": "kubectl"}]
    whole = copy.deepcopy(body)
    event: dict[str, Any] = {"type": event_type, "object": body}
    asyncio.run(
        processing.process_resource_event(
            lifecycle=kopf.lifecycles.all_at_once,
            indexers=indexing.OperatorIndexers(),
            registry=registry,
            settings=settings,
            memories=inventory.ResourceMemories(),
            memobase=cast(ephemera.AnyMemo, ephemera.Memo()),
            resource=_RESOURCES[plural],
            raw_event=cast(kopf.RawEvent, event),
            event_queue=asyncio.Queue(),
        )
    )
    given = intake.agents if plural == "agents" else intake.pods
    assert given == [whole], "the store was given the whole body, by its own kind's intake"
    assert event == {
        "type": event_type,
        "object": {
            "metadata": {
                "name": "worker",
                "namespace": "team-a",
                "uid": "uid-1",
                "resourceVersion": "1",
            }
        },
    }, "kopf's worker, which keeps the event, is left the identity only"
