"""The kopf registrations' settings of substance: no diff base, no posting."""

from __future__ import annotations

from typing import cast

import kopf

from controller import handlers
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
