"""The mirror controller: Valkey follows each Agent's recorded status, and never leads.

The Agent's status is the outbox. Its ``history`` holds every recorded
transition with its time, so bringing an agent's Valkey record up to date is
one question — which transitions does the record lack? — answered the same way
for the first write, a retry, the resync after a restart and the periodic
anti-entropy pass that repairs a wiped, restored or failed-over Valkey: replay
them, in order, with their original times (``mirror.Mirror.resync``).

This controller has a queue of its own (keys ``namespace/name`` of agents and
``killswitch:NAME`` of switches), fed by every status write and watch event.
Each Valkey call is bounded (``VALKEY_TIMEOUT_SECONDS``), so a hung Valkey
costs a mirror worker its backoff and the agents' workers nothing. Only the
removal of an Agent's finalizer waits on Valkey: it comes after
``agent.deleted`` is recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import logging
from collections.abc import Callable
from typing import Any, Final

import pydantic

from controller import (
    killswitch,
    kube,
    lifecycle,
    metrics,
    mirror,
    models,
    store,
    workqueue,
)

log = logging.getLogger(__name__)

# Queue keys of switches on the mirror's queue (no namespace has a colon).
SWITCH_PREFIX: Final = "killswitch:"
VALKEY_UNREACHABLE: Final = "ValkeyUnreachable"
MIRROR_REFUSED: Final = "MirrorRefused"
# How soon to look again at an agent whose body a write proved stale (the agents' pass
# reads it afresh at once).
STALE_LOOK_AGAIN: Final = 0.25


@dataclasses.dataclass(frozen=True)
class Mirrored:
    """What this process knows the agent's Valkey record holds (it wrote or read it)."""

    uid: str
    seq: int


class Mirroring:
    def __init__(
        self,
        api: kube.Kube,
        cache: store.Store,
        valkey: mirror.Mirror,
        queue: workqueue.WorkQueue,
        warnings: kube.Recorder,
        clock: Callable[[], datetime.datetime],
        metrics_: metrics.Metrics | None = None,
        namespaces: tuple[str, ...] = (),
    ) -> None:
        self.kube = api
        self.namespaces = frozenset(namespaces)  # whose records are ours; empty: every one
        self.store = cache
        self.valkey = valkey
        self.queue = queue
        self.warnings = warnings
        self.clock = clock
        self.metrics = metrics_ or metrics.Metrics()
        self._mirrored: dict[str, Mirrored] = {}
        self._forced: set[str] = set()  # keys whose record must be read, not assumed
        # The last body of each life seen deleted, by key and uid, until its record is closed.
        self._gone: dict[str, dict[str, dict[str, Any]]] = {}

    def agent_gone(self, body: dict[str, Any]) -> None:
        """The watch saw the agent deleted: its last status may hold what its record lacks."""
        uid = str(body["metadata"].get("uid", ""))
        self._gone.setdefault(store.key_of(body), {})[uid] = body

    def switch_changed(self, name: str) -> None:
        """The switch's status was written (or first seen): its record is to follow, before
        anti-entropy's backlog."""
        self.queue.add(SWITCH_PREFIX + name, urgent=True)

    # --- anti-entropy ---

    def resync_all(self) -> None:
        """Check every agent's and switch's record against its status, whatever this
        process believes it holds: the repair after a wiped or failed-over Valkey."""
        for key in self.store.agent_keys():
            self._forced.add(key)
            self.queue.add(key)
        for name in self.store.switch_names():
            self.queue.add(SWITCH_PREFIX + name)

    async def sweep(self) -> None:
        """Put on the queue every agent the phase index holds and the store does not: gone
        without its record closed (released by hand while no operator ran, or brought back
        by a restored Valkey). Its pass closes the record (``_release``)."""
        try:
            indexed = set().union(*[await self.valkey.agents_in(p) for p in mirror.PHASES])
        except mirror.MirrorError as exc:
            log.warning("anti-entropy could not read the phase index: %s", exc)
            return
        except Exception:  # a bug here must not stop the operator: the next pass tries again
            log.exception("anti-entropy could not read the phase index")
            return
        for key in indexed:
            namespace = key.partition("/")[0]
            ours = not self.namespaces or namespace in self.namespaces
            if ours and not self.store.knows(key):
                self.queue.add(key)

    async def resync_every(self, interval: float) -> None:
        """Sweep the index for agents gone unrecorded, then ``resync_all`` every
        ``interval`` seconds, until cancelled."""
        while True:
            await self.sweep()
            await asyncio.sleep(interval)
            self.resync_all()

    def behind(self) -> tuple[int, int]:
        """(agents whose record is behind their status, transitions missing) as far as this
        process knows, for the metrics."""
        agents_behind = transitions = 0
        for body in self.store.agents():
            known = self._mirrored.get(store.key_of(body))
            uid = body["metadata"].get("uid")
            have = known.seq if known is not None and known.uid == uid else 0
            missing = int((body.get("status") or {}).get("seq") or 0) - have
            if missing > 0:
                agents_behind += 1
                transitions += missing
        return agents_behind, transitions

    # --- one pass ---

    async def reconcile(self, key: str) -> workqueue.Result:
        if key.startswith(SWITCH_PREFIX):
            await self._mirror_switch(key.removeprefix(SWITCH_PREFIX))
            return workqueue.Result()
        body = self.store.agent(key)
        if body is None:
            if self.store.knows(key):
                # Stale (a write conflicted): the agents' pass reads it afresh meanwhile.
                return workqueue.Result(requeue_after=STALE_LOOK_AGAIN)
            self._mirrored.pop(key, None)
            self._forced.discard(key)
            await self._release(key)
            self._gone.pop(key, None)
            return workqueue.Result()
        self._gone.pop(key, None)  # alive (again): earlier lives' records closed or replaced
        agent = _valid(body)
        if agent is None:
            return workqueue.Result()  # the agents controller reports it
        deleting = _deleting(agent, body)
        try:
            # Before the record is closed, it is read, not assumed: a failed-over Valkey may
            # have lost the ending, which agent.deleted must follow.
            await self._follow(agent, read=deleting)
            if deleting:
                await self._finish_deletion(agent, body)
        except mirror.MirrorError as exc:
            self.metrics.mirror_errors.inc()
            self._forced.add(key)  # what the record holds is unknown now
            unreachable = isinstance(exc, mirror.ValkeyUnavailable)
            reason = VALKEY_UNREACHABLE if unreachable else MIRROR_REFUSED
            waits = "deletion waits for Valkey: " if deleting else ""
            await self.warnings.post(body, reason, f"{waits}{exc}")
            raise
        except kube.Conflict:
            # The finalizers were written on a stale copy: read the Agent afresh, go again.
            fresh = await self.kube.get_agent(agent.metadata.namespace, agent.metadata.name)
            if fresh is None:
                self.store.forget(key)  # gone meanwhile: nothing left to finish
            else:
                self.store.put_agent(fresh)
            return workqueue.Result(requeue=True)
        return workqueue.Result()

    async def _follow(self, agent: models.Agent, read: bool = False) -> None:
        """Apply the transitions of the status that the record lacks (``read``: read the
        record rather than trust what this process knows of it)."""
        key = agent.ref
        uid = agent.metadata.uid
        known = self._mirrored.get(key)
        forced = read or key in self._forced
        have = known.seq if known is not None and known.uid == uid and not forced else None
        if have is not None and have >= agent.status.seq:
            return  # nothing new: no Valkey call at all
        ref = mirror.AgentRef.of(agent)
        results = await self.valkey.resync(ref, agent.status, have=have)
        if any(r.outcome is mirror.Outcome.REFUSED for r in results):
            # What this process assumed of the record was wrong: read it, then replay.
            why = next(r.why for r in results if r.outcome is mirror.Outcome.REFUSED)
            log.info("%s: the mirror refused a transition (%s); reading the record", key, why)
            results = await self.valkey.resync(ref, agent.status)
            refused = [r for r in results if r.outcome is mirror.Outcome.REFUSED]
            if refused:
                raise mirror.ValkeyRefused(f"the mirror refused {key}: {refused[0].why}")
        if forced:
            # Only what this pass honoured: anti-entropy may have asked again meanwhile.
            self._forced.discard(key)
        self._mirrored[key] = Mirrored(uid, agent.status.seq)
        applied = sum(r.outcome is mirror.Outcome.APPLIED for r in results)
        if not applied:
            return
        now = self.clock()
        for entry in agent.status.history[len(agent.status.history) - applied :]:
            self.metrics.mirrored(entry.phase, entry.at, now)
        written = self.store.written_at(key)
        if written is not None:
            self.metrics.mirror_lag.observe(max(0.0, self.store.monotonic() - written))
        if forced:
            self.metrics.mirror_replays.inc(applied)

    async def _release(self, key: str) -> None:
        """The agent is gone: a record still open (its deletion was not ours to finish) is
        closed as a deletion is, ``agent.deleted`` included. With the agent's last status
        (from the watch's deletion event) the record first gets what it lacks; without it
        (found by the sweep), the record says who the agent was, once the API server
        confirms that agent is gone."""
        namespace, _, name = key.partition("/")
        record = await self.valkey.get(namespace, name)
        if record is None:
            await self.valkey.unindex(key)  # an index entry whose record is gone: drop it
            return
        if record.get("deleted") == "1":
            return  # nothing open: the usual end of a deletion the operator finished
        now = self.clock()
        last = _valid(self._gone.get(key, {}).get(record["uid"]))
        if last is not None and last.status.history:
            await self._follow(last, read=True)
            self._mirrored.pop(key, None)  # that life is over: nothing to remember of it
            ref, step = mirror.AgentRef.of(last), mirror.steps(last.status)[-1]
        else:
            live = await self.kube.get_agent(namespace, name)
            if live is not None and live["metadata"].get("uid") == record["uid"]:
                return  # not gone: this process has not seen it yet, and will
            ref, step = mirror.from_record(record, now)
        result = await self.valkey.record_deleted(ref, step, now)
        if result.outcome is mirror.Outcome.APPLIED:
            log.info("%s: gone without its record closed; closed it", key)

    async def _finish_deletion(self, agent: models.Agent, body: dict[str, Any]) -> None:
        """The final event, then let the Agent go."""
        steps = mirror.steps(agent.status)
        result = await self.valkey.record_deleted(
            mirror.AgentRef.of(agent), steps[-1], self.clock()
        )
        if result.outcome is mirror.Outcome.REFUSED:
            raise mirror.ValkeyRefused(f"the mirror refused the deletion: {result.why}")
        finalizers = [f for f in body["metadata"].get("finalizers", []) if f != models.FINALIZER]
        meta = agent.metadata
        with contextlib.suppress(kube.NotFound):
            await self.kube.write_finalizers(
                meta.namespace, meta.name, meta.resource_version, finalizers
            )
        log.info("%s: deleted; released", agent.ref)

    async def _mirror_switch(self, name: str) -> None:
        body = self.store.switch(name)
        if body is None:
            # Deleted: no record may say it still kills.
            if await self.valkey.forget_killswitch(name, self.clock()):
                log.info("killswitch %s deleted while engaged: announced disengaged", name)
            return
        switch = killswitch.Switch.of(body)
        state = models.KillswitchStatus.model_validate(body.get("status") or {})
        # Engaged as the status records it (engagedAt), not as the spec asks: the record
        # follows what the Killswitches controller recorded, and each recorded engagement
        # has its own engagedAt, hence its own event id.
        engaged = state.engaged_at is not None
        recorded = await self.valkey.record_killswitch(
            name,
            switch.spec.model_copy(update={"engaged": engaged}),
            state,
            self.clock(),
            engaged_by=switch.engaged_by,
            disengaged_by=switch.disengaged_by,
            uid=str(body["metadata"].get("uid", "")),
        )
        if recorded:
            who = switch.engaged_by if engaged else switch.disengaged_by
            by = f" by {who}" if who else ""
            log.info("killswitch %s %s%s", name, "engaged" if engaged else "disengaged", by)


def _valid(body: dict[str, Any] | None) -> models.Agent | None:
    if body is None:
        return None
    try:
        return models.Agent.model_validate(body)
    except pydantic.ValidationError:
        return None


def _deleting(agent: models.Agent, body: dict[str, Any]) -> bool:
    """Deleted, finished, and still held by our finalizer: the deletion is ours to finish."""
    return (
        agent.metadata.deletion_timestamp is not None
        and agent.status.phase in lifecycle.TERMINAL
        and models.FINALIZER in (body["metadata"].get("finalizers") or [])
    )
