"""The mirror controller's fault paths: Valkey follows the status, and only deletion waits on it."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import pytest

from controller import kube, mirror, mirroring, models
from controller.app import Operator
from controller.lifecycle import Phase
from tests.unit.fakes import (
    KEY,
    FakeKube,
    FakeMirror,
    agent_body,
    deleted_killed_body,
    operator,
    recorded,
)


def test_a_record_refused_even_after_reading_it_is_reported_and_retried() -> None:
    body = agent_body()
    body["status"] = recorded("Spawning", "Running")
    api = FakeKube(body)
    op, valkey = operator(api)
    op.agent_event(copy.deepcopy(body), gone=False)
    valkey.refuse = "the agent is deleted"
    with pytest.raises(mirror.ValkeyRefused, match="the mirror refused team-a/worker: the agent"):
        asyncio.run(op.mirroring.reconcile(KEY))
    assert valkey.reads == 2, "the record was read again before giving up"
    assert ("Warning", "MirrorRefused") in [(k, r) for k, r, _ in api.events]
    assert op.fleet().mirror_behind == 1
    assert op.fleet().mirror_backlog == 2


def test_a_stale_copy_never_drops_the_finalizer_it_did_not_see() -> None:
    body = deleted_killed_body()
    api = FakeKube(body)
    op, valkey = operator(api)
    op.agent_event(copy.deepcopy(body), gone=False)
    assert api.body is not None
    api.body["metadata"]["finalizers"] = [models.FINALIZER, "someone.else/keep"]
    api._bump()  # someone added a finalizer since the watch showed the Agent
    result = asyncio.run(op.mirroring.reconcile(KEY))
    assert result.requeue, "read afresh, then tried again at once"
    assert api.body["metadata"]["finalizers"] == [models.FINALIZER, "someone.else/keep"]
    asyncio.run(op.mirroring.reconcile(KEY))
    assert api.body["metadata"]["finalizers"] == ["someone.else/keep"]
    assert valkey.deleted == [KEY]


def test_a_gone_agent_or_switch_is_nothing_to_mirror() -> None:
    op, valkey = operator(FakeKube(None))
    asyncio.run(op.mirroring.reconcile(KEY))
    asyncio.run(op.mirroring.reconcile("killswitch:gone"))
    assert (valkey.steps, valkey.switches) == ([], [])


def test_anti_entropy_puts_every_agent_and_switch_on_the_queue() -> None:
    op, _ = operator(FakeKube(None))
    op.agent_event(agent_body(), gone=False)
    op.switch_event({"metadata": {"name": "all-stop"}, "spec": {}}, gone=False)

    async def one_round() -> list[str]:
        taken = []
        while len(op.mirror_queue):  # what the watch events queued
            key = await op.mirror_queue.get()
            op.mirror_queue.done(key)
        task = asyncio.create_task(op.mirroring.resync_every(0.01))
        while len(op.mirror_queue) < 2:
            await asyncio.sleep(0.01)
        task.cancel()
        while len(op.mirror_queue):
            taken.append(await op.mirror_queue.get())
        return sorted(taken)

    assert asyncio.run(one_round()) == ["killswitch:all-stop", KEY]


class Vanishing(FakeKube):
    """The Agent is deleted for good between our read and our write."""

    async def write_finalizers(
        self, namespace: str, name: str, rv: str, finalizers: list[str]
    ) -> dict[str, Any]:
        self.body = None
        raise kube.Conflict(409, "the object has been modified")


def test_an_agent_gone_while_its_deletion_was_finishing_is_forgotten() -> None:
    body = deleted_killed_body()
    api = Vanishing(body)
    op, _ = operator(api)
    op.agent_event(copy.deepcopy(body), gone=False)
    assert asyncio.run(op.mirroring.reconcile(KEY)).requeue
    assert op.store.agent(KEY) is None


def engaged_switch(
    uid: str = "uid-s1", engaged_at: str | None = "2026-01-01T10:00:00.000Z"
) -> dict[str, Any]:
    """A switch whose spec is engaged; ``engaged_at``: whether its status records it yet."""
    return {
        "metadata": {"name": "all-stop", "uid": uid},
        "spec": {"engaged": True},
        "status": {"engagedAt": engaged_at} if engaged_at else {},
    }


def test_a_switch_is_announced_once_per_change(caplog: pytest.LogCaptureFixture) -> None:
    op, valkey = operator(FakeKube(None))
    op.switch_event(engaged_switch(), gone=False)
    with caplog.at_level("INFO", logger="controller.mirroring"):
        asyncio.run(op.mirroring.reconcile("killswitch:all-stop"))
        asyncio.run(op.mirroring.reconcile("killswitch:all-stop"))
    assert valkey.switches == [("all-stop", True)] * 2
    assert valkey.switch_uid == {"all-stop": "uid-s1"}
    assert [r.getMessage() for r in caplog.records] == ["killswitch all-stop engaged"]


def test_a_switch_is_recorded_as_its_status_says_not_as_its_spec_asks() -> None:
    op, valkey = operator(FakeKube(None))
    op.switch_event(engaged_switch(engaged_at=None), gone=False)  # status not written yet
    asyncio.run(op.mirroring.reconcile("killswitch:all-stop"))
    op.switch_event(engaged_switch(), gone=False)  # the Killswitches controller recorded it
    asyncio.run(op.mirroring.reconcile("killswitch:all-stop"))
    disengaging = engaged_switch()
    disengaging["spec"]["engaged"] = False  # asked, not yet recorded: still engaged
    op.switch_event(disengaging, gone=False)
    asyncio.run(op.mirroring.reconcile("killswitch:all-stop"))
    assert valkey.switches == [("all-stop", False), ("all-stop", True), ("all-stop", True)]


def test_the_deletion_of_a_switch_since_replaced_leaves_its_successor_alone() -> None:
    op, _ = operator(FakeKube(None))
    op.store.replace_switches([engaged_switch(uid="uid-new")])  # a LIST before the old one's
    op.switch_event(engaged_switch(uid="uid-old"), gone=True)  # ... deletion event arrived
    body = op.store.switch("all-stop")
    assert body is not None
    assert body["metadata"]["uid"] == "uid-new"
    op.switch_event(engaged_switch(uid="uid-new"), gone=True)
    assert op.store.switch("all-stop") is None


def test_a_deleted_switch_leaves_no_record_that_says_it_kills(
    caplog: pytest.LogCaptureFixture,
) -> None:
    op, valkey = operator(FakeKube(None))
    body = engaged_switch()
    op.switch_event(copy.deepcopy(body), gone=False)
    asyncio.run(op.mirroring.reconcile("killswitch:all-stop"))
    op.switch_event(body, gone=True)
    with caplog.at_level("INFO", logger="controller.mirroring"):
        asyncio.run(op.mirroring.reconcile("killswitch:all-stop"))
        asyncio.run(op.mirroring.reconcile("killswitch:all-stop"))  # nothing left: no news
    assert (valkey.switches, valkey.forgotten) == ([], ["all-stop"] * 2)
    assert [r.getMessage() for r in caplog.records] == [
        "killswitch all-stop deleted while engaged: announced disengaged"
    ]


def mirrored_running() -> tuple[Operator, FakeMirror, dict[str, Any]]:
    """An agent Running, and its record written."""
    body = agent_body()
    body["status"] = recorded("Spawning", "Running")
    op, valkey = operator(FakeKube(body))
    op.agent_event(copy.deepcopy(body), gone=False)
    asyncio.run(op.mirroring.reconcile(KEY))
    return op, valkey, body


def test_an_agent_gone_without_its_deletion_finished_has_its_record_closed() -> None:
    op, valkey, body = mirrored_running()
    assert valkey.index == {KEY: Phase.RUNNING}
    op.agent_event(body, gone=True)  # its finalizer removed by hand
    asyncio.run(op.mirroring.reconcile(KEY))
    asyncio.run(op.mirroring.reconcile(KEY))  # closed already: once is all
    assert (valkey.index, valkey.deleted) == ({}, [KEY])


def indexed(valkey: FakeMirror, ref: str, phase: Phase) -> None:
    """A record this process never wrote: left by an earlier operator, or restored."""
    valkey.records[ref] = ("uid-old", 2)
    valkey.index[ref] = phase


def test_anti_entropy_closes_the_records_of_its_agents_that_are_gone() -> None:
    body = agent_body()
    body["status"] = recorded("Spawning", "Running")
    api = FakeKube(body)
    op, valkey = operator(api, namespaces=("team-a",))
    op.agent_event(copy.deepcopy(body), gone=False)
    asyncio.run(op.mirroring.reconcile(KEY))
    indexed(valkey, "team-a/released", Phase.RUNNING)
    indexed(valkey, "team-a/finished", Phase.COMPLETED)
    indexed(valkey, "team-b/not-ours", Phase.RUNNING)
    valkey.index["team-a/dangling"] = Phase.RUNNING  # its record is gone (expired, deleted)

    async def sweep_and_mirror() -> None:
        await drained_then_swept(op)
        while len(op.mirror_queue):
            key = await op.mirror_queue.get()
            await op.mirroring.reconcile(key)
            op.mirror_queue.done(key)

    asyncio.run(sweep_and_mirror())
    assert sorted(valkey.deleted) == ["team-a/finished", "team-a/released"]
    assert valkey.index == {KEY: Phase.RUNNING, "team-b/not-ours": Phase.RUNNING}


async def drained_then_swept(op: Operator) -> None:
    while len(op.mirror_queue):  # what the watch events queued
        op.mirror_queue.done(await op.mirror_queue.get())
    await op.mirroring.sweep()


def test_an_agent_deleted_while_the_watch_was_away_is_let_go_on_the_next_listing() -> None:
    op, valkey, _ = mirrored_running()
    api = op.api
    assert isinstance(api, FakeKube)
    api.body = None  # deleted, its finalizer gone, and the watch never said so (410 Gone)
    asyncio.run(op.relist())
    assert not op.store.knows(KEY)
    asyncio.run(op.mirroring.reconcile(KEY))
    assert (valkey.index, valkey.deleted) == ({}, [KEY])


def test_an_agent_the_listing_has_is_not_taken_for_gone() -> None:
    op, valkey, _ = mirrored_running()  # the API server still has it, and it is older
    asyncio.run(op.relist())
    assert op.store.knows(KEY)
    assert valkey.deleted == []


def test_with_several_namespaces_the_oldest_listing_decides() -> None:
    body = agent_body()
    body["status"] = recorded("Spawning", "Running")
    body["metadata"]["resourceVersion"] = "500"
    api = FakeKube(body)
    op, _ = operator(api, namespaces=("team-a", "team-b"))
    op.agent_event(copy.deepcopy(body), gone=False)
    api.body = None
    api.listed_as_of_in = {"team-a": "1000", "team-b": "400"}  # team-b's is older than it
    asyncio.run(op.relist())
    assert op.store.knows(KEY), "not known gone as of the older listing"
    api.listed_as_of_in = {"team-a": "1000", "team-b": "600"}
    asyncio.run(op.relist())
    assert not op.store.knows(KEY)


def test_an_agent_newer_than_the_listing_is_not_taken_for_gone() -> None:
    op, valkey, _ = mirrored_running()
    api = op.api
    assert isinstance(api, FakeKube)
    api.body = None
    api.listed_as_of = "0"  # a listing older than what the watch already showed
    asyncio.run(op.relist())
    assert op.store.knows(KEY)
    assert valkey.deleted == []


def test_a_bug_in_the_sweep_is_logged_and_waits_for_the_next_pass(
    caplog: pytest.LogCaptureFixture,
) -> None:
    op, valkey = operator(FakeKube(None))
    valkey.fail = RuntimeError("a bug")
    with caplog.at_level("ERROR", logger="controller.mirroring"):
        asyncio.run(op.mirroring.sweep())  # does not raise: the operator goes on
    assert [r.getMessage() for r in caplog.records] == [
        "anti-entropy could not read the phase index"
    ]


def test_a_malformed_last_body_or_a_refused_closing_loses_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    op, valkey, body = mirrored_running()
    api = op.api
    assert isinstance(api, FakeKube)
    api.body = None
    body["status"]["phase"] = "Exploded"  # its last body will not validate: read the record
    op.agent_event(body, gone=True)
    valkey.refuse_delete = True
    with caplog.at_level("INFO", logger="controller.mirroring"):
        asyncio.run(op.mirroring.reconcile(KEY))
    assert (valkey.index, valkey.deleted, caplog.records) == ({KEY: Phase.RUNNING}, [], [])
    valkey.refuse_delete = False  # the next pass closes it
    asyncio.run(op.mirroring.reconcile(KEY))
    assert (valkey.index, valkey.deleted) == ({}, [KEY])


def test_a_stale_agent_is_looked_at_again_not_taken_for_gone() -> None:
    op, valkey, _ = mirrored_running()
    op.store.invalidate(KEY)  # a status write conflicted: the agents' pass reads it afresh
    result = asyncio.run(op.mirroring.reconcile(KEY))
    asyncio.run(drained_then_swept(op))
    assert result.requeue_after == mirroring.STALE_LOOK_AGAIN
    assert (valkey.index, valkey.deleted, len(op.mirror_queue)) == ({KEY: Phase.RUNNING}, [], 0)


def test_a_record_the_store_has_not_caught_up_with_stays_open() -> None:
    body = agent_body()  # the API server has it; this process has not seen it yet
    op, valkey = operator(FakeKube(body))
    indexed(valkey, KEY, Phase.RUNNING)
    valkey.records[KEY] = (body["metadata"]["uid"], 2)
    asyncio.run(op.mirroring.sweep())
    assert len(op.mirror_queue) == 1
    asyncio.run(op.mirroring.reconcile(KEY))
    assert (valkey.index, valkey.deleted) == ({KEY: Phase.RUNNING}, [])


def test_a_record_behind_its_agents_last_status_gets_the_rest_before_it_closes() -> None:
    op, valkey, body = mirrored_running()
    body["status"] = recorded("Spawning", "Running", "Killed")
    body["metadata"]["resourceVersion"] = "99"
    op.agent_event(body, gone=True)  # killed, then released by hand before the mirror's pass
    asyncio.run(op.mirroring.reconcile(KEY))
    assert valkey.phases() == [Phase.SPAWNING, Phase.RUNNING, Phase.KILLED]
    assert (valkey.index, valkey.deleted) == ({}, [KEY])


def test_an_unreachable_index_is_a_warning_and_the_sweep_waits_for_the_next_pass(
    caplog: pytest.LogCaptureFixture,
) -> None:
    op, valkey = operator(FakeKube(None))
    indexed(valkey, "team-a/released", Phase.RUNNING)
    valkey.fail = mirror.ValkeyUnavailable("Valkey is unreachable: no answer within 5 s")
    with caplog.at_level("WARNING", logger="controller.mirroring"):
        asyncio.run(op.mirroring.sweep())
    assert len(op.mirror_queue) == 0
    assert [r.getMessage() for r in caplog.records] == [
        "anti-entropy could not read the phase index: Valkey is unreachable: no answer within 5 s"
    ]


def test_the_record_is_read_before_it_is_closed_so_a_lost_ending_comes_first() -> None:
    body = agent_body()
    body["status"] = recorded("Spawning", "Running", "Killed")
    api = FakeKube(body)
    op, valkey = operator(api)
    op.agent_event(copy.deepcopy(body), gone=False)
    asyncio.run(op.mirroring.reconcile(KEY))
    valkey.records[KEY] = ("uid-1", 2)  # failed over to a replica that missed the ending
    deleted = copy.deepcopy(body)
    deleted["metadata"]["deletionTimestamp"] = "2026-01-01T10:00:00Z"
    deleted["metadata"]["resourceVersion"] = "2"
    op.agent_event(deleted, gone=False)
    asyncio.run(op.mirroring.reconcile(KEY))
    assert valkey.records[KEY] == ("uid-1", 3)
    assert [s.seq for s in valkey.steps] == [1, 2, 3, 3], "the ending again, then the close"
    assert valkey.deleted == [KEY]
