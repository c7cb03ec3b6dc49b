"""The Agents controller: one pass per agent key, reading memory, writing Kubernetes once.

::

    watch ──► store ──► queue ──► reconcile(key) ──► status ─► Event ─► Pod action
                                      │                 │
                                      │                 └──► mirror queue (Valkey follows)
                                      └── gather: the Agent and its Pod from the store,
                                          the switches that catch it; decide: lifecycle.decide

A pass gathers once (the Agent as last seen, validated once; its Pod from the
index; the kill that applies), decides once with the phase machine, then
writes: per transition the status (with the resourceVersion it was decided on,
so a stale read loses with a Conflict and the agent is read afresh) and a
Kubernetes Event; then the action on the Pod. It makes no Valkey call: the
mirror controller follows the recorded status on its own queue, so a refused,
slow or hung Valkey never holds an agent back. The result says when to look
again (a timeout coming due, a Pod that should have gone by then).
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final

import pydantic

from controller import (
    admission,
    killswitch,
    kube,
    lifecycle,
    metrics,
    models,
    status,
    store,
    workload,
    workqueue,
)

log = logging.getLogger(__name__)

INVALID_SPEC: Final = "InvalidSpec"
TRANSITION_REFUSED: Final = "TransitionRefused"
TTL_EXPIRED: Final = "TTLExpired"  # a finished agent deleted after its TTL (a Normal Event)
# A switch over many agents is recounted at most this often while its kills land.
RECOUNT_EVERY: Final = 1.0
# A stopping Pod still there this long after its grace period is read afresh.
STOP_SLACK: Final = datetime.timedelta(seconds=10)
# Transitions decided from a Pod's absence or a clock: the API server confirms first.
_JUDGED_BY_ABSENCE: Final = frozenset(
    {
        lifecycle.Reason.WORKLOAD_LOST,
        lifecycle.Reason.SPAWN_TIMEOUT,
        lifecycle.Reason.DEADLINE_EXCEEDED,
    }
)


def utcnow() -> datetime.datetime:
    """The clock the controllers take by default (tests pass their own)."""
    return datetime.datetime.now(datetime.UTC)


class Agents:
    def __init__(
        self,
        api: kube.Kube,
        cache: store.Store,
        queue: workqueue.WorkQueue,
        mirror_queue: workqueue.WorkQueue,
        switch_queue: workqueue.WorkQueue,
        warnings: kube.Recorder,
        clock: Callable[[], datetime.datetime] = utcnow,
        max_concurrent: int = 0,
        ttl_after_finished: int = 0,
        metrics_: metrics.Metrics | None = None,
    ) -> None:
        self.kube = api
        self.store = cache
        self.queue = queue  # this controller's own: waking agents whose turn came
        self.mirror_queue = mirror_queue
        self.switch_queue = switch_queue
        self.warnings = warnings
        self.clock = clock
        self.max_concurrent = max_concurrent  # 0: no limit
        # AGENT_TTL_SECONDS_AFTER_FINISHED, for agents whose spec names no TTL (0: kept).
        self.ttl_after_finished = ttl_after_finished
        self.metrics = metrics_ or metrics.Metrics()

    # --- one pass ---

    async def reconcile(self, key: str) -> workqueue.Result:
        try:
            return await self._reconcile(key)
        except kube.Conflict:
            # Decided on a stale read: read afresh and decide again at once.
            self.store.invalidate(key)
            return workqueue.Result(requeue=True)
        finally:
            self._wake_next(key)

    async def _reconcile(self, key: str) -> workqueue.Result:
        namespace, name = key.split("/", 1)
        body = self.store.agent(key)
        if body is None:
            fresh = await self.kube.get_agent(namespace, name)
            body = self.store.put_agent(fresh) if fresh is not None else None
        if body is None:
            self.store.forget(key)
            self.warnings.forget(key)
            return workqueue.Result()
        try:
            agent = models.Agent.model_validate(body)
        except pydantic.ValidationError as exc:
            await self.warnings.post(
                body, INVALID_SPEC, f"the operator cannot read this Agent: {exc}"
            )
            return workqueue.Result()
        deleting = agent.metadata.deletion_timestamp is not None
        finalizers = list(body["metadata"].get("finalizers") or [])
        if deleting and models.FINALIZER not in finalizers:
            return workqueue.Result()  # not ours to finish
        if not deleting and models.FINALIZER not in finalizers:
            agent = await self._write(
                agent,
                self.kube.write_finalizers(
                    namespace,
                    name,
                    agent.metadata.resource_version,
                    [*finalizers, models.FINALIZER],
                ),
            )

        pod_name = workload.pod_name(agent)
        pod, fresh_pod = await self._read_pod(agent, pod_name)
        kill = await self._kill(agent)
        decision = self._decide(agent, pod, kill)
        if not fresh_pod and any(t.reason in _JUDGED_BY_ABSENCE for t in decision.transitions):
            # An agent is never failed on the watch's word alone: the API server confirms.
            pod, fresh_pod = await self._read_pod(agent, pod_name, fresh=True)
            decision = self._decide(agent, pod, kill)
        if decision.action is lifecycle.Action.CREATE and kill is None and self._admit(key):
            # The last word before a Pod exists: the Agent as the API server has it now, and
            # a switch engaged a moment ago, must win (asked only of an agent whose turn it
            # is: a queued agent costs the API server nothing).
            fresh = await self.kube.get_agent(namespace, name)
            if (
                fresh is None
                or fresh["metadata"]["resourceVersion"] != agent.metadata.resource_version
            ):
                raise kube.Conflict(409, "the Agent changed since it was read")
            self.store.replace_switches(await self.kube.list_killswitches())
            kill = await self._kill(agent)
            decision = self._decide(agent, pod, kill)
        agent = await self._record(agent, decision.transitions)
        unfinished = agent.status.phase not in lifecycle.TERMINAL
        if pod is not None and agent.status.pod_name is None and unfinished:
            # Made by an earlier pass whose status write was lost: say so now, so that its
            # slot is counted and its loss would be noticed.
            agent = await self._note_pod(agent)
        for refusal in decision.refusals:
            await self.warnings.post(_target(agent), TRANSITION_REFUSED, refusal.sentence)

        action = decision.action
        if action is lifecycle.Action.CREATE and not self._admit(key):
            agent = await self._queue_for_slot(agent)
            action = lifecycle.Action.NONE
        if action is lifecycle.Action.CREATE:
            agent = await self._create_pod(agent, kill)
        elif action in (lifecycle.Action.STOP, lifecycle.Action.REMOVE) and pod is not None:
            grace = 0
            if action is lifecycle.Action.STOP and kill is not None:
                grace = agent.spec.kill_grace_period_seconds
                agent = await self._note_stopping(agent, kill)
            await self.kube.delete_pod(namespace, pod_name, grace, pod["metadata"]["uid"])
        expires = self._expiry(agent)
        if expires is not None and expires <= self.clock():
            await self._delete_finished(agent, expires)
            return workqueue.Result()  # its deletion comes back through the watch
        return self._next_look(decision, pod, expires)

    def _next_look(
        self,
        decision: lifecycle.Decision,
        pod: dict[str, Any] | None,
        expires: datetime.datetime | None = None,
    ) -> workqueue.Result:
        """When to look again if nothing else happens: a timeout, a Pod overdue to go, or a
        finished agent's TTL running out."""
        overdue = _overdue_at(pod)
        if overdue is not None:
            # Look again once it should have gone; a Pod stuck past that, every STOP_SLACK.
            overdue = max(overdue, self.clock() + STOP_SLACK)
        due = [t for t in (decision.recheck_at, overdue, expires) if t is not None]
        if not due:
            return workqueue.Result()
        return workqueue.Result(requeue_after=max(0.0, (min(due) - self.clock()).total_seconds()))

    # --- gathering ---

    async def _read_pod(
        self, agent: models.Agent, pod_name: str, fresh: bool = False
    ) -> tuple[dict[str, Any] | None, bool]:
        """The agent's Pod, and whether it was read from the API server just now.

        The index's copy is trusted when it is of this very Pod (its name and the agent's
        uid), unless ``fresh`` or it has been stopping for longer than it may take (a
        deletion a re-listing watch never reported). Otherwise, if the status says a Pod
        was made, the API server is asked: the watch may not have shown it yet.
        """
        key = agent.ref
        seen = store.pod_of(self.store.pod(key), pod_name, agent.metadata.uid)
        if seen is not None and not fresh:
            overdue = _overdue_at(seen.body)
            if seen.gone or overdue is None or overdue > self.clock():
                return (None if seen.gone else seen.body), False
        if agent.status.pod_name is None and not fresh:
            return None, False
        pod = await self.kube.get_pod(agent.metadata.namespace, pod_name)
        if pod is None:
            return None, True
        read = store.SeenPod(store.trim_pod(pod), gone=False)
        if store.pod_of(read, pod_name, agent.metadata.uid) is None:
            return None, True  # a Pod that is not this agent's: never ours to judge
        self.store.put_pod(key, read.body)
        return read.body, True

    async def _kill(self, agent: models.Agent) -> lifecycle.Kill | None:
        switches = self.store.switches()
        labels: dict[str, str] = {}
        if killswitch.needs_namespace_labels(switches):
            labels = await self.kube.namespace_labels(agent.metadata.namespace)
        return killswitch.kill(agent, switches, labels)

    def _decide(
        self,
        agent: models.Agent,
        pod: dict[str, Any] | None,
        kill: lifecycle.Kill | None,
        pod_refused: str | None = None,
    ) -> lifecycle.Decision:
        spec = agent.spec
        deadline = spec.active_deadline_seconds
        limits = lifecycle.Limits(
            spawn_timeout=datetime.timedelta(seconds=spec.spawn_timeout_seconds),
            active_deadline=datetime.timedelta(seconds=deadline) if deadline is not None else None,
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

    # --- writing ---

    async def _write(self, agent: models.Agent, write: Awaitable[dict[str, Any]]) -> models.Agent:
        """Await one write of the Agent; keep its response as the latest body."""
        response = await write
        body = self.store.put_agent(response, written=True) or store.trim_agent(
            response, self.store.audit
        )
        return _updated(agent, body)

    async def _write_status(self, agent: models.Agent, new: models.AgentStatus) -> models.Agent:
        """Write the status at the resourceVersion the decision was made on; the mirror
        follows it."""
        meta = agent.metadata
        dumped = new.model_dump(by_alias=True, mode="json", exclude_none=True)
        written = self.kube.write_status(meta.namespace, meta.name, meta.resource_version, dumped)
        agent = await self._write(agent, written)
        self.mirror_queue.add(agent.ref, urgent=True)  # before anti-entropy's backlog
        return agent

    async def _record(
        self, agent: models.Agent, transitions: tuple[lifecycle.Transition, ...]
    ) -> models.Agent:
        """Per transition, in order: the status, the log line, then the Event."""
        for transition in transitions:
            before = agent.status
            life = before.life().advance(transition)
            after = status.after(before, transition, life, agent.metadata.generation, self.clock())
            agent = await self._write_status(agent, after)
            self.metrics.written(before.phase, transition.to, transition.at, self.clock())
            if transition.reason == lifecycle.Reason.KILLSWITCH_ENGAGED:
                self.metrics.killswitch_kills.inc()
            log.info(
                "%s: %s -> %s (%s)",
                agent.ref,
                before.phase or "nothing",
                transition.to,
                transition.reason,
                # For LOG_FORMAT=json: the fields of the transition, under one name.
                extra={
                    "transition": {
                        "namespace": agent.metadata.namespace,
                        "name": agent.metadata.name,
                        "uid": agent.metadata.uid,
                        "from": before.phase,
                        "to": transition.to,
                        "reason": transition.reason,
                    }
                },
            )
            kind = "Warning" if transition.to is lifecycle.Phase.FAILED else "Normal"
            sentence = transition.error or transition.message or transition.reason
            if transition.by:
                # Who asked survives the cut of a long message.
                suffix = f" (killed by {transition.by})"
                room = max(0, kube.EVENT_MESSAGE_MAX - len(suffix))
                sentence = (sentence[:room] + suffix)[: kube.EVENT_MESSAGE_MAX]
            await self.kube.post_event(_target(agent), kind, transition.to, sentence)
            if transition.to in lifecycle.TERMINAL:
                await self._recount_switches(agent)
        return agent

    async def _note_stopping(self, agent: models.Agent, kill: lifecycle.Kill) -> models.Agent:
        """Before the Pod is deleted, the kill goes on record: once stopping has begun the
        agent ends Killed for this reason, whatever becomes of the kill's cause, and a later
        kill (a new killReason, another user, a switch) changes nothing of the record."""
        if agent.status.stopping is not None:
            return agent
        stopping = models.Stopping(reason=kill.reason, message=kill.message, by=kill.by or None)
        return await self._write_status(
            agent, agent.status.model_copy(update={"stopping": stopping})
        )

    async def _create_pod(self, agent: models.Agent, kill: lifecycle.Kill | None) -> models.Agent:
        key = agent.ref
        self.store.promise(key)  # the slot is held from now: the Pod is about to exist
        try:
            pod = await self.kube.create_pod(workload.render(agent))
            self.store.put_pod(key, pod)
        except kube.Invalid as exc:
            self.store.unpromise(key)
            decision = self._decide(agent, None, kill, pod_refused=str(exc))
            await self.warnings.post(_target(agent), lifecycle.Reason.INVALID_TEMPLATE, str(exc))
            return await self._record(agent, decision.transitions)
        except kube.Conflict:
            pass  # made by an earlier try whose status write was lost: it is ours all the same
        # Any other failure keeps the promise: the Pod may exist all the same (a timeout, a
        # 504 after the write), and the next pass, which tries again, settles it.
        return await self._note_pod(agent)

    async def _note_pod(self, agent: models.Agent) -> models.Agent:
        """The Pod exists: from now on its absence means it was lost (``status.podName``)."""
        update: dict[str, Any] = {"pod_name": workload.pod_name(agent)}
        if agent.status.reason == lifecycle.Reason.QUEUED:
            # Admitted: the status goes back to the reason of its last transition.
            last = agent.status.history[-1].reason if agent.status.history else "Created"
            update |= {"reason": last, "message": ""}
        return await self._write_status(agent, agent.status.model_copy(update=update))

    # --- the TTL after finishing ---

    def _expiry(self, agent: models.Agent) -> datetime.datetime | None:
        """When this agent is to be deleted for having finished long enough ago; None: not
        finished, being deleted already, or kept. Derived from ``completedAt`` on every pass,
        never remembered: a restarted operator keeps the same time."""
        if (
            agent.status.phase not in lifecycle.TERMINAL
            or agent.metadata.deletion_timestamp is not None
        ):
            return None
        return lifecycle.expiry(
            agent.status.completed_at,
            agent.spec.ttl_seconds_after_finished,
            self.ttl_after_finished,
        )

    async def _delete_finished(self, agent: models.Agent, expired: datetime.datetime) -> None:
        """Delete it (this very one, by uid), then say why on it: the finalizer keeps it for
        the Event, then runs the ordinary deletion (the Pod goes, ``agent.deleted`` is
        recorded). In that order, a refused delete, retried, never repeats the Event."""
        meta, spec_ttl = agent.metadata, agent.spec.ttl_seconds_after_finished
        if spec_ttl is not None:
            ttl, rule = spec_ttl, f"ttlSecondsAfterFinished={spec_ttl}"
        else:
            ttl = self.ttl_after_finished
            rule = f"the operator's AGENT_TTL_SECONDS_AFTER_FINISHED={ttl}"
        # Later than the TTL when no operator was running as it ran out.
        after = ttl + (self.clock() - expired).total_seconds()
        sentence = f"deleted {after:.0f} s after it finished ({rule})"
        await self.kube.delete_agent(meta.namespace, meta.name, meta.uid)
        log.info("%s: %s", agent.ref, sentence)
        await self.kube.post_event(_target(agent), "Normal", TTL_EXPIRED, sentence)

    # --- the concurrency limit ---

    def _limits(self) -> admission.Limits:
        return admission.Limits(self.max_concurrent, self.store.caps())

    def _admit(self, key: str) -> bool:
        """Whether this agent may have its Pod now (its slot is then promised by the create)."""
        limits = self._limits()
        if not limits.any or self.store.holds(key):
            return True
        return admission.admits(key, self.store.line(), self.store.held(), limits)

    def _wake_next(self, done: str) -> None:
        """Slots are free and agents wait: those whose turn it is get it (``done``, the key
        just worked on, is not woken by its own pass)."""
        limits = self._limits()
        if not limits.any:
            return
        for key in admission.next_up(self.store.line(), self.store.held(), limits):
            if key != done:
                self.queue.add(key, urgent=True)  # a freed slot is not left idle behind a burst

    def namespace_limit_changed(self, namespace: str) -> None:
        """A namespace's cap changed: its waiting agents look again (to start, or to say
        which limit holds them now), and whoever's turn it is gets it."""
        for waiting in self.store.line():
            if admission.namespace_of(waiting.key) == namespace:
                self.queue.add(waiting.key)
        self._wake_next("")

    async def _queue_for_slot(self, agent: models.Agent) -> models.Agent:
        """Spawning with reason Queued and no Pod, saying which limit holds it (written once
        per message)."""
        message = admission.why_waiting(
            agent.ref, self.store.line(), self.store.held(), self._limits()
        )
        if agent.status.reason == lifecycle.Reason.QUEUED and agent.status.message == message:
            return agent
        queued = agent.status.model_copy(
            update={"reason": lifecycle.Reason.QUEUED, "message": message}
        )
        return await self._write_status(agent, queued)

    # --- killswitches ---

    async def _recount_switches(self, agent: models.Agent) -> None:
        """An agent just ended: the engaged switches that caught it count again, soon."""
        switches = [s for s in self.store.switches() if s.spec.engaged]
        if not switches:
            return
        labels: dict[str, str] = {}
        if killswitch.needs_namespace_labels(switches):
            labels = await self.kube.namespace_labels(agent.metadata.namespace)
        for switch in switches:
            if killswitch.catches(switch, labels, agent.metadata.labels):
                # The earlier time is kept: many endings make one recount a second.
                self.switch_queue.add_after(switch.name, RECOUNT_EVERY)


def _updated(agent: models.Agent, body: dict[str, Any]) -> models.Agent:
    """The typed Agent after a write of ours: metadata and status from the response; the spec
    as validated at the start of the pass (a write never changes it)."""
    return agent.model_copy(
        update={
            "metadata": models.ObjectMeta.model_validate(body["metadata"]),
            "status": models.AgentStatus.model_validate(body.get("status") or {}),
        }
    )


def _target(agent: models.Agent) -> dict[str, Any]:
    """What a Kubernetes Event names of the Agent it is about."""
    meta = agent.metadata
    return {
        "metadata": {
            "name": meta.name,
            "namespace": meta.namespace,
            "uid": meta.uid,
            "resourceVersion": meta.resource_version,
        }
    }


def _overdue_at(pod: dict[str, Any] | None) -> datetime.datetime | None:
    """When a stopping Pod should have gone (its deletion's due time plus slack)."""
    due = ((pod or {}).get("metadata") or {}).get("deletionTimestamp")
    return None if due is None else models.parse_time(due) + STOP_SLACK
