"""The Killswitches controller: kills go through the agents' queue; counts come from the store."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

from controller import app, models
from tests.unit.fakes import FakeKube, FakeMirror, agent_body, operator, recorded


def agent(name: str, phase: str | None, **labels: str) -> dict[str, Any]:
    body = agent_body()
    body["metadata"]["name"] = name
    body["metadata"]["labels"] = labels
    if phase == "Running":
        body["status"] = recorded("Spawning", "Running")
    elif phase is not None:
        body["status"] = recorded("Spawning", "Running", phase)
    return body


def switch(engaged: bool, **labels: str) -> dict[str, Any]:
    return {
        "metadata": {"name": "all-stop", "resourceVersion": "1"},
        "spec": {"engaged": engaged, "reason": "spend", "agentSelector": {"matchLabels": labels}},
    }


def fleet(api: FakeKube) -> app.Operator:
    op, _ = operator(api)
    for body in (
        agent("a", "Running", fleet="x"),
        agent("b", "Killed", fleet="x"),
        agent("c", "Running", fleet="y"),
    ):
        op.agent_event(body, gone=False)
    return op


def empty(op: app.Operator) -> None:
    async def take_all() -> None:
        while len(op.agents_queue):
            op.agents_queue.done(await op.agents_queue.get())

    asyncio.run(take_all())


def switch_pass(op: app.Operator) -> None:
    asyncio.run(op.killswitches.reconcile("all-stop"))


def test_an_engaged_switch_queues_its_live_agents_and_counts_from_the_store() -> None:
    api = FakeKube(None)
    api.switches = [switch(True, fleet="x")]
    op = fleet(api)
    op.switch_event(copy.deepcopy(api.switches[0]), gone=False)
    empty(op)  # the watch events queued every agent: start afresh
    switch_pass(op)
    assert len(op.agents_queue) == 1, "only the live agent it matches: team-a/a"
    status = api.switch_status["all-stop"]
    assert (status["matched"], status["killed"], status["completedAt"]) == (2, 1, None)
    assert status["engagedAt"] is not None
    assert len(op.mirror_queue) >= 1, "its record follows"


def test_a_switch_is_completed_once_everything_it_matched_is_terminal() -> None:
    api = FakeKube(None)
    api.switches = [switch(True, fleet="x")]
    op = fleet(api)
    op.agent_event(agent("a", "Killed", fleet="x"), gone=False)
    op.switch_event(copy.deepcopy(api.switches[0]), gone=False)
    switch_pass(op)
    status = api.switch_status["all-stop"]
    assert (status["matched"], status["killed"]) == (2, 2)
    assert status["completedAt"] is not None


def test_a_disengaged_switch_keeps_its_counts_and_kills_nothing() -> None:
    api = FakeKube(None)
    engaged = switch(True, fleet="x")
    engaged["status"] = {"engagedAt": "2026-01-01T09:00:00.000Z", "matched": 2, "killed": 1}
    disengaged = copy.deepcopy(engaged)
    disengaged["spec"]["engaged"] = False
    api.switches = [disengaged]
    op = fleet(api)
    op.switch_event(copy.deepcopy(disengaged), gone=False)
    empty(op)
    switch_pass(op)
    assert len(op.agents_queue) == 0
    status = api.switch_status["all-stop"]
    assert (status["matched"], status["killed"], status["engagedAt"]) == (2, 1, None)


def test_a_stale_switch_is_read_afresh_and_counted_again() -> None:
    api = FakeKube(None)
    api.switches = [switch(True, fleet="x")]
    op = fleet(api)
    stale = copy.deepcopy(api.switches[0])
    api.switches[0]["metadata"]["resourceVersion"] = "2"  # changed since the watch showed it
    op.switch_event(stale, gone=False)
    result = asyncio.run(op.killswitches.reconcile("all-stop"))
    assert result.requeue
    switch_pass(op)
    assert api.switch_status["all-stop"]["matched"] == 2


def test_a_deleted_switch_kills_nothing_and_its_record_goes() -> None:
    api = FakeKube(None)
    op = fleet(api)
    valkey = op.mirroring.valkey
    assert isinstance(valkey, FakeMirror)
    switch_pass(op)
    assert api.switch_status == {}
    api.switches = [switch(True, fleet="x")]
    op.switch_event(copy.deepcopy(api.switches[0]), gone=False)
    switch_pass(op)
    mirror_all(op)
    assert valkey.switches == [("all-stop", True)]

    op.switch_event(api.switches.pop(), gone=True)
    empty(op)
    switch_pass(op)
    assert len(op.agents_queue) == 0, "nothing more to kill"
    mirror_all(op)
    assert valkey.switches == []


def mirror_all(op: app.Operator) -> None:
    """Every key on the mirror's queue through the mirror controller."""

    async def take_all() -> None:
        while len(op.mirror_queue):
            key = await op.mirror_queue.get()
            await op.mirroring.reconcile(key)
            op.mirror_queue.done(key)

    asyncio.run(take_all())


def test_the_mirror_records_the_switch_from_its_status() -> None:
    api = FakeKube(None)
    api.switches = [switch(True)]
    op, valkey = operator(api)
    op.switch_event(copy.deepcopy(api.switches[0]), gone=False)
    switch_pass(op)
    asyncio.run(op.mirroring.reconcile("killswitch:all-stop"))
    assert valkey.switches == [("all-stop", True)]


def test_who_engaged_and_who_disengaged_go_into_the_status_and_the_record() -> None:
    api = FakeKube(None)
    engaged = switch(True)
    engaged["metadata"]["annotations"] = {models.ENGAGED_BY: "bob"}
    api.switches = [engaged]
    op, valkey = operator(api)
    op.switch_event(copy.deepcopy(engaged), gone=False)
    switch_pass(op)
    assert api.switch_status["all-stop"]["engagedBy"] == "bob"
    asyncio.run(op.mirroring.reconcile("killswitch:all-stop"))
    assert valkey.switch_by["all-stop"] == ("bob", "")

    off = copy.deepcopy(engaged)
    off["spec"]["engaged"] = False
    off["metadata"]["annotations"][models.DISENGAGED_BY] = "carol"
    off["status"] = api.switch_status["all-stop"]
    api.switches = [off]
    op.switch_event(copy.deepcopy(off), gone=False)
    switch_pass(op)
    status = api.switch_status["all-stop"]
    assert (status["engagedBy"], status["disengagedBy"]) == ("bob", "carol")
    asyncio.run(op.mirroring.reconcile("killswitch:all-stop"))
    assert valkey.switch_by["all-stop"] == ("bob", "carol")


def test_killed_agents_deleted_since_still_count() -> None:
    api = FakeKube(None)
    api.switches = [switch(True, fleet="x")]
    op = fleet(api)
    op.agent_event(agent("a", "Killed", fleet="x"), gone=False)
    op.switch_event(copy.deepcopy(api.switches[0]), gone=False)
    switch_pass(op)
    # Both killed agents are deleted (their TTL ran out): the switch's record keeps them.
    for name in ("a", "b"):
        op.agent_event(agent(name, "Killed", fleet="x"), gone=True)
    op.switch_event({**api.switches[0], "status": api.switch_status["all-stop"]}, gone=False)
    switch_pass(op)
    status = api.switch_status["all-stop"]
    assert (status["matched"], status["killed"]) == (2, 2)
