"""Level-triggered reconciliation of Agents: read, decide, write once per transition, act.

Every signal about an agent (its own watch events, its Pod's, a timeout coming
due, a failure to retry) only puts ``namespace/name`` on a work queue. A
worker then takes the Agent and its Pod as last seen (the watches' bodies and
its own writes' responses: no read per pass), asks the phase machine, and
carries the decision out in this order, per transition:

1. the Agent's status (the source of truth), written with the resourceVersion
   the decision was made on, so a concurrent change or a stale copy makes it
   fail (Conflict) and the agent is read afresh and decided again;
2. the Valkey mirror (if Valkey is down the status stays; the key is retried
   with backoff, and ``resync`` replays what the mirror missed);
3. a Kubernetes Event on the Agent.

Then the action on the Pod (create, stop with the grace period, remove; a
Pod is made only after the Agent and the killswitches are read afresh) and,
for an Agent being deleted, the mirror's final ``agent.deleted`` and the
removal of our finalizer. The queue holds each key once, and a key is never
worked on by two workers at a time (as client-go's workqueue).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
from collections.abc import Callable
from typing import Any, Final

import pydantic
import redis.exceptions

from controller import killswitch, kube, lifecycle, metrics, mirror, models, status, workload

log = logging.getLogger(__name__)

FINALIZER: Final = f"{models.GROUP}/finalizer"
RETRY_BASE: Final = 0.5
RETRY_CAP: Final = 30.0
# A switch over many agents is recounted at most this often while its kills land.
RECOUNT_EVERY: Final = datetime.timedelta(seconds=1)
INVALID_SPEC: Final = "InvalidSpec"
# Queue keys: `namespace/name` for an agent; this prefix (no namespace has a colon) for a switch.
SWITCH_PREFIX: Final = "killswitch:"
VALKEY_UNREACHABLE: Final = "ValkeyUnreachable"


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


class Retry(Exception):
    """The key must be worked on again after a backoff; the message says why."""


class Reconciler:
    def __init__(
        self,
        api: kube.Kube,
        mirror_: mirror.Mirror,
        workers: int = 16,
        clock: Callable[[], datetime.datetime] = utcnow,
        namespaces: tuple[str, ...] = (),
        max_concurrent: int = 0,
        metrics_: metrics.Metrics | None = None,
    ) -> None:
        self.kube = api
        self.metrics = metrics_ or metrics.Metrics()
        self.metrics.watch_fleet(self.fleet)
        self.mirror = mirror_
        self.workers = workers
        self.clock = clock
        self.namespaces = namespaces  # empty: every namespace
        self.switches: dict[str, killswitch.Switch] = {}
        self.max_concurrent = max_concurrent  # 0: no limit
        self._active: set[str] = set()  # agents holding a slot: a Pod made, not finished
        self._waiting: set[str] = set()  # queued agents, woken when a slot frees
        self._admission = asyncio.Lock()
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._dirty: set[str] = set()
        self._busy: set[str] = set()
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._failures: dict[str, int] = {}
        self._in_sync: set[str] = set()  # keys whose mirror has been resynced by this process
        self._warned: dict[str, set[str]] = {}
        self._written: dict[str, str] = {}  # key -> resourceVersion of our own last status write
        # The latest bodies seen (watch events, our own writes): a pass reads these, not the
        # API server; a stale one makes its write fail (Conflict) and is then read afresh.
        self._agents: dict[str, dict[str, Any]] = {}
        # Agent key -> its Pod as last watched, and whether that was its deletion.
        self._pods: dict[str, tuple[dict[str, Any], bool]] = {}

    def fleet(self) -> metrics.Fleet:
        """The agents as this process knows them, for the metrics' gauges."""
        phases: dict[str, int] = {}
        for body in self._agents.values():
            phase = (body.get("status") or {}).get("phase") or "Pending"
            phases[phase] = phases.get(phase, 0) + 1
        behind = sum(1 for key in self._agents if key not in self._in_sync)
        return metrics.Fleet(phases, behind, self._queue.qsize())

    # --- the queue ---

    def enqueue(self, key: str) -> None:
        if key in self._dirty:
            return
        self._dirty.add(key)
        if key not in self._busy:
            self._queue.put_nowait(key)

    def observed(self, key: str, body: dict[str, Any], gone: bool = False) -> None:
        """A watch event of an Agent; ``gone``: it was deleted.

        The echo of our own last status write is not worked on again (the pass that made
        it already acted on exactly that state), but it is cached all the same: a slower
        event of an older state may have replaced our write's body in the meantime.
        """
        if gone:
            self._agents.pop(key, None)
            self.enqueue(key)
            return
        before = self._agents.get(key)
        self._agents[key] = body
        written = self._written.get(key)
        version = body["metadata"].get("resourceVersion")
        # The echo is worked on after all if an older event had replaced our write's body:
        # a pass may have acted on that older state in between.
        stale_between = before is not None and before["metadata"].get("resourceVersion") != version
        if written is None or version != written or stale_between:
            self.enqueue(key)

    def observed_pod(self, body: dict[str, Any], gone: bool = False) -> None:
        """A watch event of a Pod of ours (``gone``: it was deleted); its agent is worked on."""
        meta = body["metadata"]
        for owner in meta.get("ownerReferences", []):
            if owner.get("kind") == "Agent" and owner.get("apiVersion") == models.API_VERSION:
                key = f"{meta['namespace']}/{owner['name']}"
                self._pods[key] = (body, gone)
                self.enqueue(key)

    def _enqueue_at(self, key: str, when: datetime.datetime) -> None:
        loop = asyncio.get_running_loop()
        delay = max(0.0, (when - self.clock()).total_seconds())
        old = self._timers.pop(key, None)
        if old is not None:
            old.cancel()
        self._timers[key] = loop.call_later(delay, self._fire, key)

    def _fire(self, key: str) -> None:
        self._timers.pop(key, None)
        self.enqueue(key)

    def _forget(self, key: str) -> None:
        self._release(key)
        self._waiting.discard(key)
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        self._failures.pop(key, None)
        self._written.pop(key, None)
        self._agents.pop(key, None)
        self._pods.pop(key, None)
        self._in_sync.discard(key)
        self._warned.pop(key, None)

    async def run(self) -> None:
        """Work the queue with ``workers`` coroutines until cancelled."""
        if self.max_concurrent:
            await self._prime_slots()
        async with asyncio.TaskGroup() as group:
            for _ in range(self.workers):
                group.create_task(self._work())

    async def _work(self) -> None:
        while True:
            key = await self._queue.get()
            self._dirty.discard(key)
            self._busy.add(key)
            try:
                await self.reconcile(key)
                self._failures.pop(key, None)
            except kube.Conflict:
                # Decided on a stale read: read afresh and decide again at once.
                self._agents.pop(key, None)
                self.enqueue(key)
            except (
                Retry,
                kube.ApiError,
                kube.KubernetesUnavailable,
                redis.exceptions.RedisError,
            ) as exc:
                if isinstance(exc, kube.NotFound):
                    self._agents.pop(key, None)  # gone meanwhile: the next pass reads afresh
                failures = self._failures.get(key, 0) + 1
                self._failures[key] = failures
                delay = min(RETRY_CAP, RETRY_BASE * 2 ** (failures - 1))
                log.warning("%s: %s; trying again in %.1f s", key, exc, delay)
                self._enqueue_at(key, self.clock() + datetime.timedelta(seconds=delay))
            except Exception:  # pragma: no cover - a bug: log it, keep the operator alive
                log.exception("%s: reconcile failed", key)
            finally:
                self._busy.discard(key)
                if key in self._dirty:
                    self._queue.put_nowait(key)

    # --- one agent ---

    async def reconcile(self, key: str) -> None:
        if key.startswith(SWITCH_PREFIX):
            await self._reconcile_switch(key.removeprefix(SWITCH_PREFIX))
            return
        namespace, name = key.split("/", 1)
        body = self._agents.get(key)
        if body is None:
            body = await self.kube.get_agent(namespace, name)
            if body is not None:
                self._agents[key] = body
        if body is None:
            self._forget(key)
            return
        try:
            agent = models.Agent.model_validate(body)
        except pydantic.ValidationError as exc:
            await self._warn_once(body, INVALID_SPEC, f"the operator cannot read this Agent: {exc}")
            return
        deleting = agent.metadata.deletion_timestamp is not None
        finalizers = list(body["metadata"].get("finalizers", []))
        if deleting and FINALIZER not in finalizers:
            return  # not ours to finish
        # Valkey being down never holds the agent back: the mirror catches up later.
        mirrored = key in self._in_sync or await self._resync(body, agent)
        if not deleting and FINALIZER not in finalizers:
            body = await self.kube.write_finalizers(
                namespace, name, agent.metadata.resource_version, [*finalizers, FINALIZER]
            )
            self._agents[key] = body
            agent = models.Agent.model_validate(body)

        pod_name = workload.pod_name(agent)
        pod, fresh_pod = await self._read_pod(agent, pod_name)
        kill = await self._kill(agent)
        decision = self._decide(agent, pod, kill)
        if not fresh_pod and any(t.reason in _JUDGED_BY_ABSENCE for t in decision.transitions):
            # An agent is never failed on the watch's word alone: the API server confirms.
            pod, fresh_pod = await self._read_pod(agent, pod_name, fresh=True)
            decision = self._decide(agent, pod, kill)
        if decision.action is lifecycle.Action.CREATE and kill is None:
            # The last word before a Pod exists: the Agent as the API server has it now, and
            # a switch engaged a moment ago, must win.
            fresh = await self.kube.get_agent(namespace, name)
            if (
                fresh is None
                or fresh["metadata"]["resourceVersion"] != agent.metadata.resource_version
            ):
                raise kube.Conflict(409, "the Agent changed since it was read")
            await self._refresh_switches()
            kill = await self._kill(agent)
            decision = self._decide(agent, pod, kill)
        body, agent, mirrored = await self._record(body, agent, decision.transitions, mirrored)
        if decision.transitions and agent.status.phase in lifecycle.TERMINAL:
            await self._recount_switches(agent)
        for refusal in decision.refusals:
            await self._warn_once(body, "TransitionRefused", refusal.sentence)

        action = decision.action
        if action is lifecycle.Action.CREATE and not await self._admit(key):
            body, agent = await self._queue_for_slot(body, agent)
            action = lifecycle.Action.NONE
        if action is lifecycle.Action.CREATE:
            body, agent, mirrored = await self._create_pod(body, agent, kill, mirrored)
        elif action in (lifecycle.Action.STOP, lifecycle.Action.REMOVE) and pod is not None:
            grace = 0
            if action is lifecycle.Action.STOP and kill is not None:
                grace = agent.spec.kill_grace_period_seconds
                body, agent = await self._note_stopping(body, agent, kill)
            await self.kube.delete_pod(namespace, pod_name, grace, pod["metadata"]["uid"])
        overdue = _overdue_at(pod)
        if overdue is not None:
            # Look again once it should have gone; a Pod stuck past that, every STOP_SLACK.
            overdue = max(overdue, self.clock() + STOP_SLACK)
        recheck = [t for t in (decision.recheck_at, overdue) if t is not None]
        if recheck:
            self._enqueue_at(key, min(recheck))
        self._account_slot(key, agent)

        if not mirrored:
            raise Retry("the mirror is behind: Valkey is unreachable")
        if deleting and agent.status.phase in lifecycle.TERMINAL:
            await self._finish_deletion(body, agent)

    async def _read_pod(
        self, agent: models.Agent, pod_name: str, fresh: bool = False
    ) -> tuple[dict[str, Any] | None, bool]:
        """The agent's Pod, and whether it was read from the API server just now.

        The watch's copy is trusted when it is of this very Pod (its name and the agent's
        uid), unless ``fresh`` or it has been stopping for longer than it may take (a
        deletion a re-listing watch never reported). Otherwise, if the status says a Pod
        was made, the API server is asked: the watch may not have shown it yet.
        """
        namespace = agent.metadata.namespace
        seen = self._pods.get(f"{namespace}/{agent.metadata.name}")
        if seen is not None and _is_agents_pod(seen[0], pod_name, agent) and not fresh:
            body, gone = seen
            overdue = _overdue_at(body)
            if gone or overdue is None or overdue > self.clock():
                return (None if gone else body), False
        if agent.status.pod_name is None and not fresh:
            return None, False
        pod = await self.kube.get_pod(namespace, pod_name)
        if pod is None or not _is_agents_pod(pod, pod_name, agent):
            return None, True  # none, or a Pod that is not this agent's: never ours to judge
        self._pods[f"{namespace}/{agent.metadata.name}"] = (pod, False)
        return pod, True

    def _decide(
        self,
        agent: models.Agent,
        pod: dict[str, Any] | None,
        kill: lifecycle.Kill | None,
        pod_refused: str | None = None,
    ) -> lifecycle.Decision:
        spec = agent.spec
        limits = lifecycle.Limits(
            spawn_timeout=datetime.timedelta(seconds=spec.spawn_timeout_seconds),
            active_deadline=(
                datetime.timedelta(seconds=spec.active_deadline_seconds)
                if spec.active_deadline_seconds is not None
                else None
            ),
        )
        return lifecycle.decide(
            agent.status.life(),
            workload.observe(pod),
            self.clock(),
            limits,
            kill,
            pod_made=agent.status.pod_name is not None,
            pod_refused=pod_refused,
        )

    async def _record(
        self,
        body: dict[str, Any],
        agent: models.Agent,
        transitions: tuple[lifecycle.Transition, ...],
        mirrored: bool,
    ) -> tuple[dict[str, Any], models.Agent, bool]:
        """Status, then mirror, then Event, for each transition in order.

        ``mirrored`` False means Valkey already failed in this pass: the mirror
        is skipped (resync will replay it) rather than waited on again.
        """
        ref = mirror.AgentRef.of(agent)
        for transition in transitions:
            before = agent.status
            life = before.life().advance(transition)
            after = status.after(before, transition, life, agent.metadata.generation, self.clock())
            body = await self._write_status(agent, _dump(after))
            agent = models.Agent.model_validate(body)
            written_at = self.clock()
            self.metrics.written(before.phase, transition.to, transition.at, written_at)
            if transition.reason == lifecycle.Reason.KILLSWITCH_ENGAGED:
                self.metrics.killswitch_kills.inc()
            step = mirror.Step(
                seq=life.seq,
                from_=before.phase,
                to=transition.to,
                at=transition.at,
                reason=transition.reason,
                message=transition.message,
                error=transition.error,
                started_at=life.started_at,
                completed_at=life.completed_at,
                pod_name=after.pod_name,
            )
            mirrored = mirrored and await self._mirror(body, ref, step)
            if mirrored:
                self.metrics.mirrored(transition.at, written_at, self.clock())
            kind = "Warning" if transition.to is lifecycle.Phase.FAILED else "Normal"
            sentence = transition.error or transition.message or transition.reason
            await self.kube.post_event(body, kind, transition.to, sentence)
        return body, agent, mirrored

    async def _note_stopping(
        self, body: dict[str, Any], agent: models.Agent, kill: lifecycle.Kill
    ) -> tuple[dict[str, Any], models.Agent]:
        """Before the Pod is deleted, the kill goes on record: once stopping has begun the
        agent ends Killed for this reason, whatever becomes of the kill's cause."""
        stopping = models.Stopping(reason=kill.reason, message=kill.message)
        if agent.status.stopping == stopping:
            return body, agent
        body = await self._write_status(
            agent, _dump(agent.status.model_copy(update={"stopping": stopping}))
        )
        return body, models.Agent.model_validate(body)

    async def _write_status(self, agent: models.Agent, status_: dict[str, Any]) -> dict[str, Any]:
        """Write the status at the resourceVersion the decision was made on; remember the
        new one, so that the watch's echo of this very write is not worked on again."""
        meta = agent.metadata
        body = await self.kube.write_status(
            meta.namespace, meta.name, meta.resource_version, status_
        )
        key = f"{meta.namespace}/{meta.name}"
        self._written[key] = body["metadata"]["resourceVersion"]
        self._agents[key] = body
        return body

    async def _mirror(self, body: dict[str, Any], ref: mirror.AgentRef, step: mirror.Step) -> bool:
        """Record one step in Valkey; False (and a Warning once) when Valkey cannot be reached."""
        key = f"{ref.namespace}/{ref.name}"
        try:
            result = await self.mirror.record(ref, step)
        except redis.exceptions.RedisError as exc:
            self.metrics.mirror_errors.inc()
            self._in_sync.discard(key)  # resync replays what is missed, once Valkey is back
            await self._warn_once(body, VALKEY_UNREACHABLE, f"Valkey is unreachable: {exc}")
            return False
        if result.outcome is mirror.Outcome.REFUSED:
            # The record is behind or from another life: bring it up to the status.
            self._in_sync.discard(key)
            log.info("%s: mirror refused seq %s (%s); resyncing", key, step.seq, result.why)
        return True

    async def _resync(self, body: dict[str, Any], agent: models.Agent) -> bool:
        """Bring the mirror up to the status; False (and a Warning once) if Valkey is down."""
        ref = mirror.AgentRef.of(agent)
        try:
            results = await self.mirror.resync(ref, agent.status)
        except redis.exceptions.RedisError as exc:
            self.metrics.mirror_errors.inc()
            await self._warn_once(body, VALKEY_UNREACHABLE, f"Valkey is unreachable: {exc}")
            return False
        self.metrics.mirror_replays.inc(sum(r.outcome is mirror.Outcome.APPLIED for r in results))
        self._in_sync.add(ref.ref)
        return True

    async def _create_pod(
        self, body: dict[str, Any], agent: models.Agent, kill: lifecycle.Kill | None, mirrored: bool
    ) -> tuple[dict[str, Any], models.Agent, bool]:
        try:
            pod = await self.kube.create_pod(workload.render(agent))
            self._pods[f"{agent.metadata.namespace}/{agent.metadata.name}"] = (pod, False)
        except kube.Invalid as exc:
            decision = self._decide(agent, None, kill, pod_refused=str(exc))
            await self._warn_once(body, lifecycle.Reason.INVALID_TEMPLATE, str(exc))
            return await self._record(body, agent, decision.transitions, mirrored)
        except kube.Conflict:
            pass  # made by an earlier try whose status write was lost: it is ours all the same
        # The Pod exists: from now on, its absence means it was lost.
        update: dict[str, Any] = {"pod_name": workload.pod_name(agent)}
        if agent.status.reason == lifecycle.Reason.QUEUED:
            # Admitted: the status goes back to the reason of its last transition.
            last = agent.status.history[-1].reason if agent.status.history else "Created"
            update |= {"reason": last, "message": ""}
        made = agent.status.model_copy(update=update)
        body = await self._write_status(agent, _dump(made))
        return body, models.Agent.model_validate(body), mirrored

    async def _finish_deletion(self, body: dict[str, Any], agent: models.Agent) -> None:
        """The final event, then let the Agent go (Valkey down: wait, and say so)."""
        ref = mirror.AgentRef.of(agent)
        steps = mirror.steps(agent.status)
        try:
            # A Valkey that came back empty must first learn the life it is to close.
            await self.mirror.resync(ref, agent.status)
            result = await self.mirror.record_deleted(ref, steps[-1], self.clock())
        except redis.exceptions.RedisError as exc:
            await self._warn_once(
                body, VALKEY_UNREACHABLE, f"deletion waits for Valkey, which is unreachable: {exc}"
            )
            raise Retry("deletion waits for Valkey") from None
        if result.outcome is mirror.Outcome.REFUSED:
            raise Retry(f"the mirror refused the deletion: {result.why}")
        finalizers = [f for f in body["metadata"].get("finalizers", []) if f != FINALIZER]
        with contextlib.suppress(kube.NotFound):
            await self.kube.write_finalizers(
                agent.metadata.namespace,
                agent.metadata.name,
                agent.metadata.resource_version,
                finalizers,
            )
        self._forget(ref.ref)

    # --- the concurrency limit ---

    async def _admit(self, key: str) -> bool:
        """Whether this agent may have its Pod now: a free slot, and no older agent waiting.

        "Older" is asked of the API server, not of this process's queue: an agent whose
        watch event has not been handled yet still waits in line before younger ones.
        """
        if not self.max_concurrent or key in self._active:
            return True
        async with self._admission:
            if len(self._active) >= self.max_concurrent:
                self._waiting.add(key)  # woken by _release
                return False
            line = sorted(
                (models.format_time(a.metadata.creation_timestamp or self.clock()), a.ref)
                for a in map(models.Agent.model_validate, await self._list_agents())
                if _wants_a_slot(a) and a.ref not in self._active
            )
            oldest = line[0][1] if line else key
            if oldest != key:
                self._waiting |= {key, oldest}
                self.enqueue(oldest)  # a slot is free, and it is the older one's turn
                return False
            self._waiting.discard(key)
            self._active.add(key)  # held from now: the Pod is about to exist
            return True

    def _account_slot(self, key: str, agent: models.Agent) -> None:
        """After a pass: an agent with a live Pod holds a slot; a finished one frees it."""
        holds = agent.status.pod_name is not None
        finished = agent.status.phase in lifecycle.TERMINAL
        if holds or finished:
            self._waiting.discard(key)  # admitted, or finished (a killed queued agent never starts)
        if holds and not finished:
            self._active.add(key)
        else:
            self._release(key)

    def _release(self, key: str) -> None:
        """A slot is free: the oldest waiting agents get their turn."""
        if key not in self._active:
            return
        self._active.discard(key)
        # Wake every waiting agent: _admit lets the oldest through, the rest wait again.
        for waiting in list(self._waiting):
            self.enqueue(waiting)

    async def _queue_for_slot(
        self, body: dict[str, Any], agent: models.Agent
    ) -> tuple[dict[str, Any], models.Agent]:
        """Spawning with reason Queued and no Pod, saying why (written once)."""
        message = f"waiting for a slot: {self.max_concurrent} agents may run at once"
        if agent.status.reason == lifecycle.Reason.QUEUED and agent.status.message == message:
            return body, agent
        queued = agent.status.model_copy(
            update={"reason": lifecycle.Reason.QUEUED, "message": message}
        )
        body = await self._write_status(agent, _dump(queued))
        return body, models.Agent.model_validate(body)

    async def _list_agents(self, label_selector: str = "") -> list[dict[str, Any]]:
        """Every Agent this operator watches."""
        if not self.namespaces:
            return await self.kube.list_agents(label_selector=label_selector)
        return [
            item
            for ns in self.namespaces
            for item in await self.kube.list_agents(ns, label_selector=label_selector)
        ]

    async def _prime_slots(self) -> None:
        """Count the slots already held before admitting anyone: a restart never over-admits."""
        for item in await self._list_agents():
            status_ = item.get("status") or {}
            if status_.get("podName") and status_.get("phase") not in lifecycle.TERMINAL:
                meta = item["metadata"]
                self._active.add(f"{meta['namespace']}/{meta['name']}")

    # --- killswitches ---

    async def _namespace_labels(
        self, namespace: str, switches: list[killswitch.Switch]
    ) -> dict[str, str]:
        """The namespace's labels, read only when a switch selects namespaces."""
        if killswitch.needs_namespace_labels(switches):
            return await self.kube.namespace_labels(namespace)
        return {}

    async def _kill(self, agent: models.Agent) -> lifecycle.Kill | None:
        switches = list(self.switches.values())
        labels = await self._namespace_labels(agent.metadata.namespace, switches)
        return killswitch.kill(agent, switches, labels)

    async def _refresh_switches(self) -> None:
        listed = await self.kube.list_killswitches()
        self.switches = {s.name: s for s in map(killswitch.Switch.of, listed)}

    async def _recount_switches(self, agent: models.Agent) -> None:
        """An agent just ended: the switches that caught it count again."""
        switches = [s for s in self.switches.values() if s.spec.engaged]
        if not switches:
            return
        labels = await self._namespace_labels(agent.metadata.namespace, switches)
        for switch in switches:
            key = SWITCH_PREFIX + switch.name
            if (
                killswitch.catches(switch, labels, agent.metadata.labels)
                and key not in self._timers
            ):
                self._enqueue_at(key, self.clock() + RECOUNT_EVERY)

    async def _reconcile_switch(self, name: str) -> None:
        """Kill what an engaged switch matches (through the agents' queue); keep its counts."""
        body = await self.kube.get_killswitch(name)
        if body is None:
            self.switches.pop(name, None)
            return
        switch = killswitch.Switch.of(body)
        self.switches[name] = switch
        before = models.KillswitchStatus.model_validate(body.get("status") or {})
        now = self.clock()
        if switch.spec.engaged:
            matched = await self._matched_agents(switch)
            live = [ref for ref, phase in matched if phase not in lifecycle.TERMINAL]
            for ref in live:
                self.enqueue(ref)
            after = models.KillswitchStatus(
                engaged_at=before.engaged_at or now,
                matched=len(matched),
                killed=len(matched) - len(live),
                completed_at=before.completed_at or (None if live else now),
            )
        else:
            # Disengaged: no new kills, nothing revived; the last counts stay on record.
            after = before.model_copy(update={"engaged_at": None, "completed_at": None})
        if after != before:
            dumped = after.model_dump(by_alias=True, mode="json")
            await self.kube.write_killswitch_status(
                name, body["metadata"]["resourceVersion"], dumped
            )
        if await self.mirror.record_killswitch(name, switch.spec, after, now):
            log.info("killswitch %s %s", name, "engaged" if switch.spec.engaged else "disengaged")

    async def _matched_agents(self, switch: killswitch.Switch) -> list[tuple[str, str | None]]:
        """(namespace/name, phase) of every watched agent the switch matches.

        Read from the raw listing: a switch over thousands of agents is recounted often,
        and only names and phases are needed.
        """
        spec = switch.spec
        listed = await self._list_agents(killswitch.query(spec.agent_selector))
        allowed: set[str] | None = None
        if spec.namespace_selector != models.LabelSelector():
            allowed = await self.kube.namespaces(killswitch.query(spec.namespace_selector))
        matched = []
        for item in listed:
            meta = item["metadata"]
            if allowed is None or meta["namespace"] in allowed:
                phase = (item.get("status") or {}).get("phase")
                matched.append((f"{meta['namespace']}/{meta['name']}", phase))
        return matched

    async def _warn_once(self, body: dict[str, Any], reason: str, message: str) -> None:
        """A Warning event, not repeated for the same sentence while the operator runs."""
        meta = body["metadata"]
        key = f"{meta['namespace']}/{meta['name']}"
        said = self._warned.setdefault(key, set())
        if message in said:
            return
        said.add(message)
        log.warning("%s: %s: %s", key, reason, message)
        await self.kube.post_event(body, "Warning", reason, message)


def _wants_a_slot(agent: models.Agent) -> bool:
    """An agent that would have its Pod made if there were room."""
    return (
        agent.status.pod_name is None
        and agent.status.phase in (None, lifecycle.Phase.SPAWNING)
        and agent.metadata.deletion_timestamp is None
        and agent.spec.desired_phase is models.DesiredPhase.RUNNING
    )


# Transitions decided from a Pod's absence or a clock, confirmed with the API server first.
_JUDGED_BY_ABSENCE: Final = frozenset(
    {
        lifecycle.Reason.WORKLOAD_LOST,
        lifecycle.Reason.SPAWN_TIMEOUT,
        lifecycle.Reason.DEADLINE_EXCEEDED,
    }
)
# A stopping Pod still there this long after its grace period is read afresh.
STOP_SLACK: Final = datetime.timedelta(seconds=10)


def _overdue_at(pod: dict[str, Any] | None) -> datetime.datetime | None:
    """When a stopping Pod should have gone (its deletion's due time plus slack)."""
    due = ((pod or {}).get("metadata") or {}).get("deletionTimestamp")
    return None if due is None else models.parse_time(due) + STOP_SLACK


def _is_agents_pod(pod: dict[str, Any], pod_name: str, agent: models.Agent) -> bool:
    return pod["metadata"]["name"] == pod_name and _owner_uid(pod) == agent.metadata.uid


def _owner_uid(pod: dict[str, Any]) -> str | None:
    labels = pod.get("metadata", {}).get("labels") or {}
    uid = labels.get(workload.LABEL_AGENT_UID)
    return str(uid) if uid is not None else None


def _dump(status_: models.AgentStatus) -> dict[str, Any]:
    dumped: dict[str, Any] = status_.model_dump(by_alias=True, mode="json", exclude_none=True)
    return dumped
