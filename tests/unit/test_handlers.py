"""The kopf registrations' settings of substance: no diff base, no posting."""

from __future__ import annotations

import asyncio
import copy
from typing import Any, cast

import kopf
import pytest

from controller import credentials, handlers
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


@pytest.mark.parametrize("plural", ["agents", "pods"])
def test_the_event_kopf_keeps_holds_the_identity_not_the_body(plural: str) -> None:
    registry = kopf.OperatorRegistry()
    intake = _Intake()
    handlers.register(registry, intake, cast(credentials.Credentials, None))
    (handler,) = [
        h
        for h in registry._watching.get_all_handlers()
        if h.selector is not None and h.selector.any_name == plural
    ]
    body = agent_body()
    body["metadata"]["managedFields"] = [{"manager": "kubectl"}]
    event: dict[str, Any] = {"type": "MODIFIED", "object": body}
    asyncio.run(cast(Any, handler.fn)(event=event))
    assert intake.agents + intake.pods == [body], "the store was given the whole body"
    assert event == {
        "type": "MODIFIED",
        "object": {
            "metadata": {
                "name": "worker",
                "namespace": "team-a",
                "uid": "uid-1",
                "resourceVersion": "1",
            }
        },
    }, "kopf's worker, which keeps the event, is left the identity only"
