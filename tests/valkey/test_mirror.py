"""The Valkey mirror against a real server: atomic, idempotent, ordered, complete after resync."""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import random
import signal
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

import pytest
import redis.asyncio
import redis.asyncio.cluster
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controller import lifecycle, mirror, models
from controller.lifecycle import Phase
from tests.conftest import RestartableValkey
from tests.valkey.conftest import Target

T = TypeVar("T")
T0 = datetime.datetime(2026, 1, 1, 10, 0, 0, 123000, tzinfo=datetime.UTC)
AGENT = mirror.AgentRef("team-a", "fix-login-bug", "uid-1", "TASK-1234", "worker")


def at(seconds: float) -> datetime.datetime:
    return T0 + datetime.timedelta(seconds=seconds)


LIFE = [
    mirror.Step(1, None, Phase.SPAWNING, at(0), "Created", pod_name="fix-login-bug"),
    mirror.Step(
        2,
        Phase.SPAWNING,
        Phase.RUNNING,
        at(1),
        "Started",
        started_at=at(1),
        pod_name="fix-login-bug",
    ),
    mirror.Step(
        3,
        Phase.RUNNING,
        Phase.COMPLETED,
        at(5),
        "Completed",
        started_at=at(1),
        completed_at=at(5),
        pod_name="fix-login-bug",
    ),
]


def run(coro: Callable[[mirror.Mirror], Awaitable[T]], target: Target, **kwargs: Any) -> T:
    """``coro`` on a Mirror of the target: one server, or a Cluster (its hash-tagged prefix)."""

    async def main() -> T:
        conn: mirror.Connection
        if target.cluster:
            conn = redis.asyncio.cluster.RedisCluster.from_url(target.url, **kwargs)
        else:
            conn = redis.asyncio.Redis.from_url(target.url, **kwargs)
        try:
            return await coro(mirror.Mirror(conn, prefix=target.prefix))
        finally:
            await conn.aclose()

    return asyncio.run(main())


async def stream_events(m: mirror.Mirror) -> list[str]:
    """The ``event`` field of every stream entry, oldest first."""
    entries = cast(list[tuple[bytes, dict[bytes, bytes]]], await m.conn.xrange(m.stream))
    return [fields[b"event"].decode() for _, fields in entries]


def status_of(life: list[mirror.Step], message: str = "", error: str = "") -> models.AgentStatus:
    last = life[-1]
    return models.AgentStatus(
        phase=last.to,
        seq=last.seq,
        reason=last.reason,
        message=message,
        error=error,
        started_at=last.started_at,
        completed_at=last.completed_at,
        pod_name=last.pod_name,
        history=[models.HistoryEntry(phase=s.to, at=s.at, reason=s.reason) for s in life],
    )


def test_a_scripted_life_reaches_subscriber_and_stream_identically(valkey_url: str) -> None:
    async def scenario() -> tuple[list[str], list[str], dict[str, str] | None, list[set[str]]]:
        conn = redis.asyncio.Redis.from_url(valkey_url)
        pubsub = conn.pubsub()
        await pubsub.subscribe(f"{mirror.DEFAULT_PREFIX}events")
        await pubsub.get_message(timeout=1)
        m = mirror.Mirror(conn)
        for step in LIFE:
            assert (await m.record(AGENT, step)).outcome is mirror.Outcome.APPLIED
        received: list[str] = []
        while len(received) < len(LIFE):
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=5)
            assert message is not None, f"only {len(received)} events arrived"
            received.append(message["data"].decode())
        extra = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2)
        assert extra is None, f"an event too many: {extra}"
        phases = [await m.agents_in(p) for p in Phase]
        result = (received, await stream_events(m), await m.get("team-a", "fix-login-bug"), phases)
        await pubsub.aclose()
        await conn.aclose()
        return result

    received, streamed, record, phases = asyncio.run(scenario())
    assert received == streamed
    events = [json.loads(e) for e in received]
    assert [e["type"] for e in events] == ["agent.spawning", "agent.running", "agent.completed"]
    assert [e["id"] for e in events] == ["uid-1-1", "uid-1-2", "uid-1-3"]
    assert [e["time"] for e in events] == [
        "2026-01-01T10:00:00.123Z",
        "2026-01-01T10:00:01.123Z",
        "2026-01-01T10:00:05.123Z",
    ]
    assert [(e["data"]["from"], e["data"]["to"]) for e in events] == [
        (None, "Spawning"),
        ("Spawning", "Running"),
        ("Running", "Completed"),
    ]
    assert record == {
        "uid": "uid-1",
        "namespace": "team-a",
        "name": "fix-login-bug",
        "taskId": "TASK-1234",
        "agentType": "worker",
        "phase": "Completed",
        "reason": "Completed",
        "message": "",
        "error": "",
        "startedAt": "2026-01-01T10:00:01.123Z",
        "completedAt": "2026-01-01T10:00:05.123Z",
        "podName": "fix-login-bug",
        "seq": "3",
        "updatedAt": "2026-01-01T10:00:05.123Z",
        "deleted": "0",
    }
    assert phases == [set(), set(), {"team-a/fix-login-bug"}, set(), set()]


def test_every_event_is_a_cloudevents_structured_json_object(target: Target) -> None:
    async def scenario(m: mirror.Mirror) -> list[str]:
        await m.record_many([(AGENT, step) for step in LIFE])
        await m.record_deleted(AGENT, LIFE[-1], at(9))
        return await stream_events(m)

    required = {"specversion", "id", "source", "type", "time", "datacontenttype", "data"}
    for raw in run(scenario, target):
        event = json.loads(raw)
        assert set(event) == required
        assert event["specversion"] == "1.0"
        assert event["datacontenttype"] == "application/json"
        assert event["source"] == (
            "/apis/orchestrator.mosaicstack.dev/v1alpha1/namespaces/team-a/agents/fix-login-bug"
        )
        assert event["type"] in {t.value for t in models.EventType}
        assert models.parse_time(event["time"]).tzinfo is not None
        assert set(event["data"]) == {
            "namespace",
            "name",
            "uid",
            "taskId",
            "agentType",
            "from",
            "to",
            "seq",
            "reason",
            "message",
            "error",
            "startedAt",
            "completedAt",
            "killedBy",
        }


def test_a_retried_transition_is_a_no_op(target: Target) -> None:
    async def scenario(m: mirror.Mirror) -> tuple[list[mirror.Result], list[str]]:
        results = [await m.record(AGENT, step) for step in (*LIFE[:2], LIFE[1], LIFE[0], LIFE[1])]
        return results, await stream_events(m)

    results, events = run(scenario, target)
    assert [r.outcome for r in results] == [
        "applied",
        "applied",
        "duplicate",
        "duplicate",
        "duplicate",
    ]
    assert all(r.phase is Phase.RUNNING and r.seq == 2 for r in results[1:])
    assert len(events) == 2


@pytest.mark.parametrize(
    ("step", "why"),
    [
        (
            mirror.Step(3, Phase.RUNNING, Phase.COMPLETED, at(5), "Completed"),
            "transition 3 arrived before 2",
        ),
        (
            mirror.Step(2, Phase.SPAWNING, Phase.COMPLETED, at(5), "Completed"),
            "illegal transition from Spawning to Completed",
        ),
        (
            mirror.Step(2, Phase.RUNNING, Phase.KILLED, at(5), "Killed"),
            "illegal transition from Spawning to Killed",
        ),
        (
            mirror.Step(1, None, Phase.RUNNING, at(5), "Started"),
            "transition 1 was already recorded as Spawning",
        ),
    ],
    ids=["a gap in seq", "an illegal edge", "a wrong from phase", "a different first phase"],
)
def test_a_refused_transition_says_why_and_writes_nothing(
    target: Target, step: mirror.Step, why: str
) -> None:
    async def scenario(m: mirror.Mirror) -> tuple[mirror.Result, dict[str, str] | None, int]:
        await m.record(AGENT, LIFE[0])
        result = await m.record(AGENT, step)
        return result, await m.get("team-a", "fix-login-bug"), len(await stream_events(m))

    result, record, events = run(scenario, target)
    assert (result.outcome, result.phase, result.seq, result.why) == (
        "refused",
        Phase.SPAWNING,
        1,
        why,
    )
    assert record is not None
    assert (record["phase"], record["seq"]) == ("Spawning", "1")
    assert events == 1


def test_fifty_racing_writers_win_exactly_once_per_step(target: Target) -> None:
    rng = random.Random(7)

    async def scenario(
        m: mirror.Mirror,
    ) -> tuple[list[list[mirror.Result]], list[str], dict[str, str] | None]:
        rounds = []
        for seq, from_ in ((1, None), (2, Phase.SPAWNING), (3, Phase.RUNNING)):
            attempts = [
                mirror.Step(seq, from_, rng.choice(list(Phase)), at(seq), f"Writer{i}")
                for i in range(50)
            ]
            # Fifty connections at once: the server runs one script at a time.
            rounds.append(list(await asyncio.gather(*(m.record(AGENT, a) for a in attempts))))
        return rounds, await stream_events(m), await m.get("team-a", "fix-login-bug")

    rounds, events, record = run(scenario, target, max_connections=60)
    phases: list[Phase | None] = [None]
    for results in rounds:
        applied = [r for r in results if r.outcome is mirror.Outcome.APPLIED]
        assert len(applied) <= 1
        if applied:
            assert lifecycle.is_legal(phases[-1], applied[0].phase)  # type: ignore[arg-type]
            phases.append(applied[0].phase)
    decoded = [json.loads(e) for e in events]
    assert len({e["id"] for e in decoded}) == len(decoded) == len(phases) - 1
    assert [e["data"]["to"] for e in decoded] == phases[1:]
    assert record is not None
    assert record["phase"] == phases[-1]
    assert int(record["seq"]) == len(phases) - 1


def test_the_script_survives_script_flush_and_a_server_restart(
    restartable_valkey: RestartableValkey,
) -> None:
    async def scenario() -> tuple[list[mirror.Result], dict[str, str] | None]:
        conn = mirror.client(restartable_valkey.url)
        m = mirror.Mirror(conn)
        results = [await m.record(AGENT, LIFE[0])]
        await conn.script_flush()
        results.append(await m.record(AGENT, LIFE[1]))
        restartable_valkey.stop()
        restartable_valkey.start()
        # The restarted server is empty: no scripts, no record. Resync rebuilds both.
        results += await m.resync(AGENT, status_of(LIFE))
        record = await m.get("team-a", "fix-login-bug")
        await conn.aclose()
        return results, record

    results, record = asyncio.run(scenario())
    assert [r.outcome for r in results] == ["applied"] * 5
    assert record is not None
    assert (record["phase"], record["seq"]) == ("Completed", "3")


def test_resync_after_flushall_replays_missed_events_with_their_times(target: Target) -> None:
    async def scenario(
        m: mirror.Mirror,
    ) -> tuple[list[mirror.Result], list[mirror.Result], list[str], dict[str, str] | None]:
        await m.record_many([(AGENT, s) for s in LIFE[:2]])
        await m.conn.flushall()
        status = status_of(LIFE, error="")
        rebuilt = await m.resync(AGENT, status)
        again = await m.resync(AGENT, status)
        return rebuilt, again, await stream_events(m), await m.get("team-a", "fix-login-bug")

    rebuilt, again, events, record = run(scenario, target)
    assert [r.outcome for r in rebuilt] == ["applied"] * 3
    assert again == []
    decoded = [json.loads(e) for e in events]
    assert [e["time"] for e in decoded] == [models.format_time(s.at) for s in LIFE]
    assert [e["id"] for e in decoded] == ["uid-1-1", "uid-1-2", "uid-1-3"]
    assert record is not None
    assert record["completedAt"] == "2026-01-01T10:00:05.123Z"


def test_resync_sends_only_what_the_record_lacks(target: Target) -> None:
    async def scenario(m: mirror.Mirror) -> tuple[list[mirror.Result], list[str]]:
        await m.record(AGENT, LIFE[0])
        results = await m.resync(AGENT, status_of(LIFE, message="done", error=""))
        return results, await stream_events(m)

    results, events = run(scenario, target)
    assert [r.seq for r in results] == [2, 3]
    assert [json.loads(e)["data"]["seq"] for e in events] == [1, 2, 3]
    assert json.loads(events[-1])["data"]["message"] == "done"


def test_a_recreated_agent_starts_a_new_life(target: Target) -> None:
    reborn = mirror.AgentRef("team-a", "fix-login-bug", "uid-2", "TASK-1234", "worker")

    async def scenario(
        m: mirror.Mirror,
    ) -> tuple[list[mirror.Result], dict[str, str] | None, list[set[str]]]:
        results = list(await m.record_many([(AGENT, s) for s in LIFE[:2]]))
        results.append(await m.record(reborn, LIFE[1]))  # a new life cannot start mid-way
        results.append(await m.record(reborn, LIFE[0]))
        results.append(await m.record(AGENT, LIFE[2]))  # the old life is over
        phases = [await m.agents_in(p) for p in Phase]
        return results, await m.get("team-a", "fix-login-bug"), phases

    results, record, phases = run(scenario, target)
    assert [r.outcome for r in results] == ["applied", "applied", "refused", "applied", "refused"]
    assert results[2].why == results[4].why == "the record belongs to another life of this agent"
    assert record is not None
    assert (record["uid"], record["seq"], record["phase"]) == (
        "uid-2",
        "1",
        "Spawning",
    )
    assert phases == [{"team-a/fix-login-bug"}, set(), set(), set(), set()]


def test_a_record_alone_is_closed_as_the_operator_closes_a_deletion(target: Target) -> None:
    async def scenario(
        m: mirror.Mirror,
    ) -> tuple[mirror.Result, dict[str, str] | None, int, list[str], set[str]]:
        m.deleted_ttl_seconds = 60
        await m.record_many([(AGENT, s) for s in LIFE])
        record = await m.get(AGENT.namespace, AGENT.name)
        assert record is not None
        result = await m.record_deleted(*mirror.from_record(record, at(9)), at(9))
        return (
            result,
            await m.get(AGENT.namespace, AGENT.name),
            await m.conn.ttl(m.agent_key(AGENT.namespace, AGENT.name)),
            await stream_events(m),
            await m.agents_in(Phase.COMPLETED),
        )

    result, record, ttl, events, completed = run(scenario, target)
    assert result == mirror.Result(mirror.Outcome.APPLIED, Phase.COMPLETED, 3)
    assert record is not None
    assert (record["deleted"], record["updatedAt"]) == ("1", "2026-01-01T10:00:09.123Z")
    assert 0 < ttl <= 60
    assert completed == set()
    # The very event the operator sends when it finishes a deletion from the status.
    assert events[-1] == mirror.deletion_event(AGENT, LIFE[-1], at(9)).to_json()
    assert len(events) == len(LIFE) + 1


def test_an_index_entry_whose_record_is_gone_can_be_dropped(target: Target) -> None:
    async def scenario(m: mirror.Mirror) -> tuple[set[str], set[str]]:
        other = mirror.AgentRef("team-a", "other", "uid-7", "TASK-7", "worker")
        await m.record_many([(AGENT, LIFE[0]), (other, LIFE[0])])
        await m.conn.delete(m.agent_key(AGENT.namespace, AGENT.name))  # by hand, say
        await m.unindex(AGENT.ref)
        await m.unindex(AGENT.ref)  # nothing left: no error
        return await m.agents_in(Phase.SPAWNING), set().union(
            *[await m.agents_in(p) for p in mirror.PHASES]
        )

    spawning, everywhere = run(scenario, target)
    assert spawning == everywhere == {"team-a/other"}


def test_deletion_marks_the_record_sends_a_final_event_and_expires(target: Target) -> None:
    async def scenario(
        m: mirror.Mirror,
    ) -> tuple[list[mirror.Result], dict[str, str] | None, int, list[str], set[str]]:
        m.deleted_ttl_seconds = 60
        other = mirror.AgentRef("team-a", "fix-login-bug", "uid-9", "TASK-1234", "worker")
        results = [await m.record_deleted(AGENT, LIFE[0], at(1))]  # nothing recorded yet
        results += await m.record_many([(AGENT, s) for s in LIFE[:2]])
        results.append(await m.record_deleted(other, LIFE[1], at(2)))
        results.append(await m.record_deleted(AGENT, LIFE[1], at(3)))
        results.append(await m.record_deleted(AGENT, LIFE[1], at(3)))  # retried
        results.append(await m.record(AGENT, LIFE[2]))  # nothing after deletion
        ttl = await m.conn.ttl(m.agent_key("team-a", "fix-login-bug"))
        return (
            results,
            await m.get("team-a", "fix-login-bug"),
            ttl,
            await stream_events(m),
            await m.agents_in(Phase.RUNNING),
        )

    results, record, ttl, events, running = run(scenario, target)
    assert [r.outcome for r in results] == [
        "refused",
        "applied",
        "applied",
        "refused",
        "applied",
        "duplicate",
        "refused",
    ]
    assert results[0].why == "there is no record of this agent"
    assert results[-1].why == "the agent is deleted"
    assert record is not None
    assert (record["deleted"], record["phase"]) == ("1", "Running")
    assert 0 < ttl <= 60
    assert running == set()
    final = json.loads(events[-1])
    assert (final["type"], final["id"], final["data"]["from"], final["data"]["to"]) == (
        "agent.deleted",
        "uid-1-deleted",
        "Running",
        "Deleted",
    )
    assert len(events) == 3


def test_reads_of_missing_records_and_a_decoding_client(target: Target) -> None:
    async def scenario(
        m: mirror.Mirror,
    ) -> tuple[dict[str, str] | None, mirror.Result, dict[str, str] | None]:
        missing = await m.get("team-a", "nobody")
        result = await m.record(AGENT, LIFE[0])
        return missing, result, await m.get("team-a", "fix-login-bug")

    missing, result, record = run(scenario, target, decode_responses=True)
    assert missing is None
    assert (result.outcome, result.phase, result.seq) == ("applied", Phase.SPAWNING, 1)
    assert record is not None
    assert record["phase"] == "Spawning"


def test_steps_rebuild_a_life_from_status() -> None:
    rebuilt = mirror.steps(status_of(LIFE, message="all green"))
    assert [(s.seq, s.from_, s.to, s.at) for s in rebuilt] == [
        (s.seq, s.from_, s.to, s.at) for s in LIFE
    ]
    assert [s.started_at for s in rebuilt] == [None, at(1), at(1)]
    assert [s.completed_at for s in rebuilt] == [None, None, at(5)]
    assert [s.message for s in rebuilt] == ["", "", "all green"]


# --- property: any sequence of attempts leaves a legal record and one event per applied step ---

attempts = st.lists(
    st.tuples(st.integers(1, 4), st.sampled_from([None, *Phase]), st.sampled_from(list(Phase))),
    max_size=15,
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(attempts=attempts)
def test_any_attempts_leave_only_legal_history(
    target: Target, attempts: list[tuple[int, Phase | None, Phase]]
) -> None:
    async def scenario(m: mirror.Mirror) -> tuple[list[mirror.Result], list[str]]:
        await m.conn.flushdb()
        results = [
            await m.record(AGENT, mirror.Step(seq, from_, to, at(seq), "Test"))
            for seq, from_, to in attempts
        ]
        return results, await stream_events(m)

    results, events = run(scenario, target)
    applied = [r for r in results if r.outcome is mirror.Outcome.APPLIED]
    assert len(events) == len(applied)
    phase: Phase | None = None
    for seq, result in enumerate(applied, start=1):
        assert result.seq == seq
        assert result.phase is not None
        assert lifecycle.is_legal(phase, result.phase)
        phase = result.phase
    assert [json.loads(e)["data"]["to"] for e in events] == [r.phase for r in applied]


def test_a_killswitch_is_recorded_and_announced_only_when_it_changes(target: Target) -> None:
    engaged = models.KillswitchSpec(engaged=True, reason="runaway spend")
    idle = models.KillswitchSpec(engaged=False, reason="runaway spend")
    counting = models.KillswitchStatus(engaged_at=at(0), matched=150, killed=90)
    done = models.KillswitchStatus(engaged_at=at(0), matched=150, killed=150, completed_at=at(8))

    async def scenario(
        m: mirror.Mirror,
    ) -> tuple[list[bool], dict[str, str] | None, list[str], Any]:
        announced = [
            await m.record_killswitch(
                "never-on", idle, models.KillswitchStatus(), at(0), engaged_by="", disengaged_by=""
            ),
            await m.record_killswitch(
                "all-stop", engaged, counting, at(0), engaged_by="bob", disengaged_by=""
            ),
            await m.record_killswitch(
                "all-stop", engaged, done, at(8), engaged_by="bob", disengaged_by=""
            ),
            await m.record_killswitch(
                "all-stop", idle, done, at(20), engaged_by="bob", disengaged_by="carol"
            ),
        ]
        return (
            announced,
            await m.get_killswitch("all-stop"),
            await stream_events(m),
            await m.get_killswitch("nope"),
        )

    announced, record, events, missing = run(scenario, target)
    assert announced == [False, True, False, True]
    assert missing is None
    assert record == {
        "engaged": "0",
        "reason": "runaway spend",
        "engagedAt": "2026-01-01T10:00:00.123Z",
        "matched": "150",
        "killed": "150",
        "completedAt": "2026-01-01T10:00:08.123Z",
        "engagedBy": "bob",
        "disengagedBy": "carol",
    }
    decoded = [json.loads(e) for e in events]
    assert [e["type"] for e in decoded] == ["killswitch.engaged", "killswitch.disengaged"]
    assert (
        decoded[0]["source"] == "/apis/orchestrator.mosaicstack.dev/v1alpha1/killswitches/all-stop"
    )
    assert decoded[0]["data"] == {
        "name": "all-stop",
        "engaged": True,
        "reason": "runaway spend",
        "engagedAt": "2026-01-01T10:00:00.123Z",
        "matched": 150,
        "killed": 90,
        "completedAt": None,
        "engagedBy": "bob",
        "disengagedBy": "",
    }
    assert (decoded[1]["data"]["engagedBy"], decoded[1]["data"]["disengagedBy"]) == ("bob", "carol")


def test_a_new_switch_of_the_same_name_engaged_is_announced_though_the_record_was_engaged(
    target: Target,
) -> None:
    """Deleted and made again (kubectl replace --force) faster than the mirror looked."""
    engaged = models.KillswitchSpec(engaged=True, reason="runaway spend")
    idle = models.KillswitchSpec(engaged=False, reason="drill over")

    async def scenario(m: mirror.Mirror) -> tuple[list[bool], list[str]]:
        announced = []
        for uid, spec, since in [
            ("", engaged, 0),  # written before records kept a uid: no uid field
            ("uid-a", engaged, 0),  # that switch, now with its uid: no news
            ("uid-a", engaged, 0),  # recounted: no news
            ("uid-b", engaged, 2),  # another switch of that name, engaged: news
            ("uid-b", engaged, 5),  # engaged anew, its disengagement never mirrored: news
            ("uid-c", idle, None),  # another again, disengaged: it kills no more, news
        ]:
            status = models.KillswitchStatus(engaged_at=None if since is None else at(since))
            announced.append(
                await m.record_killswitch(
                    "all-stop", spec, status, at(9), engaged_by="", disengaged_by="", uid=uid
                )
            )
        return announced, await stream_events(m)

    announced, events = run(scenario, target)
    assert announced == [True, False, False, True, True, True]
    decoded = [json.loads(e) for e in events]
    assert [e["type"] for e in decoded] == [
        "killswitch.engaged",
        "killswitch.engaged",
        "killswitch.engaged",
        "killswitch.disengaged",
    ]
    assert len({e["id"] for e in decoded}) == 4, "each engagement its own id"


def test_an_engagement_announced_again_after_a_wipe_has_the_same_id(target: Target) -> None:
    engaged = models.KillswitchSpec(engaged=True, reason="runaway spend")
    status = models.KillswitchStatus(engaged_at=at(0), matched=3)

    async def scenario(m: mirror.Mirror) -> list[str]:
        ids = []
        for now in (at(2), at(600)):  # announced, then Valkey wiped and anti-entropy's pass
            await m.conn.flushdb()
            await m.record_killswitch(
                "all-stop", engaged, status, now, engaged_by="", disengaged_by="", uid="uid-a"
            )
            ids += [json.loads(e)["id"] for e in await stream_events(m)]
        return ids

    ids = run(scenario, target)
    assert ids == ["killswitch-all-stop-engaged-1767261600123"] * 2


def test_a_deleted_switch_loses_its_record_and_an_engaged_one_is_announced_disengaged(
    target: Target,
) -> None:
    engaged = models.KillswitchSpec(engaged=True, reason="runaway spend")
    idle = models.KillswitchSpec(engaged=False, reason="tested")
    counted = models.KillswitchStatus(engaged_at=at(0), matched=150, killed=150)

    async def scenario(m: mirror.Mirror) -> tuple[list[bool], list[Any], list[str]]:
        await m.record_killswitch(
            "all-stop", engaged, counted, at(0), engaged_by="bob", disengaged_by=""
        )
        await m.record_killswitch(
            "drill", idle, models.KillswitchStatus(), at(0), engaged_by="", disengaged_by=""
        )
        forgotten = [
            await m.forget_killswitch("all-stop", at(30)),
            await m.forget_killswitch("all-stop", at(31)),  # gone already: nothing
            await m.forget_killswitch("drill", at(32)),  # it killed nothing: no news
            await m.forget_killswitch("never-seen", at(33)),
        ]
        records = [await m.get_killswitch(n) for n in ("all-stop", "drill")]
        return forgotten, records, await stream_events(m)

    forgotten, records, events = run(scenario, target)
    assert forgotten == [True, False, False, False]
    assert records == [None, None]
    decoded = [json.loads(e) for e in events]
    assert [e["type"] for e in decoded] == ["killswitch.engaged", "killswitch.disengaged"]
    assert decoded[1]["time"] == "2026-01-01T10:00:30.123Z"
    assert decoded[1]["data"] == {
        "name": "all-stop",
        "engaged": False,
        "reason": "runaway spend",
        "engagedAt": None,
        "matched": 150,
        "killed": 150,
        "completedAt": None,
        "engagedBy": "bob",
        "disengagedBy": "",
    }


# --- every operation is bounded, and fails only with the mirror's own errors ---


def test_a_hung_server_costs_an_operation_its_timeout_and_no_more(
    restartable_valkey: RestartableValkey,
) -> None:
    assert restartable_valkey.proc is not None
    pid = restartable_valkey.proc.pid

    async def scenario() -> tuple[str, float]:
        conn = mirror.client(restartable_valkey.url)  # each reply may take 5 s, 5 tries
        m = mirror.Mirror(conn, timeout=0.5)
        try:
            await m.record(AGENT, LIFE[0])  # connected and the script loaded
            os.kill(pid, signal.SIGSTOP)
            began = time.monotonic()
            with pytest.raises(mirror.ValkeyUnavailable) as caught:
                await m.resync(AGENT, status_of(LIFE))
            return str(caught.value), time.monotonic() - began
        finally:
            os.kill(pid, signal.SIGCONT)
            await conn.aclose()

    message, took = asyncio.run(scenario())
    assert message == "Valkey is unreachable: no answer within 0.5 s"
    # Bounded by the operation's timeout, retries included; the client alone would wait at
    # least one socket timeout (5 s) before even trying again.
    assert took < 4


def test_a_refused_server_is_unavailable(restartable_valkey: RestartableValkey) -> None:
    restartable_valkey.stop()

    async def scenario() -> None:
        conn = mirror.client(restartable_valkey.url, attempts=1)
        try:
            await mirror.Mirror(conn).ping()
        finally:
            await conn.aclose()

    refused = r"^Valkey is unreachable: Error 111 connecting"
    with pytest.raises(mirror.ValkeyUnavailable, match=refused):
        asyncio.run(scenario())


def test_an_error_reply_is_a_refusal(target: Target) -> None:
    async def scenario(m: mirror.Mirror) -> None:
        await m.conn.set(m.agent_key(AGENT.namespace, AGENT.name), "not a hash")
        await m.record(AGENT, LIFE[0])

    with pytest.raises(mirror.ValkeyRefused, match=r"^Valkey refused: .*WRONGTYPE"):
        run(scenario, target)


def test_resync_from_a_known_seq_skips_the_read_and_is_refused_when_that_was_wrong(
    target: Target,
) -> None:
    async def scenario(m: mirror.Mirror) -> tuple[list[mirror.Result], list[mirror.Result]]:
        await m.record(AGENT, LIFE[0])
        # The caller believes the record holds seq 2; it holds 1: seq 3 is refused, not applied.
        wrong = await m.resync(AGENT, status_of(LIFE), have=2)
        right = await m.resync(AGENT, status_of(LIFE))
        return wrong, right

    wrong, right = run(scenario, target)
    assert [r.outcome for r in wrong] == ["refused"]
    assert wrong[0].why == "transition 3 arrived before 2"
    assert [r.outcome for r in right] == ["applied", "applied"]
