"""The kopf registrations' settings of substance: no diff base, no posting, short-lived workers."""

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


def test_kopf_is_configured_to_post_nothing_diff_nothing_and_let_idle_workers_go() -> None:
    settings = kopf.OperatorSettings()
    handlers.configure(settings)
    assert settings.posting.enabled is False
    assert isinstance(settings.persistence.diffbase_storage, handlers.NoDiffBase)
    assert (settings.watching.server_timeout, settings.watching.client_timeout) == (300, 330)
    # An idle worker holds its object's last raw body: it goes within a second. Not at once:
    # with no time at all, kopf's worker spins on Python 3.11 and never takes its event.
    assert 0 < settings.queueing.idle_timeout <= 1
