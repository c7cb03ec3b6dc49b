"""The wiring of ``python -m controller run``: connections, the parts, and their lifetimes.

::

    kopf watches ──► Operator (intake) ──► store
                                  │
          ┌───────────────────────┼──────────────────────────┐
          ▼                       ▼                          ▼
    agents queue            switches queue              mirror queue ◄── status writes,
          │                       │                          │          anti-entropy timer
    agents.Agents         killswitches.Killswitches   mirroring.Mirroring
          │                       │                          │
          └──────── kube (status, Pods, Events) ─────┘       └── mirror (Valkey), and the
                                                                 finalizer once deleted

Every part reads the store and writes through an adapter; only the mirror
controller talks to Valkey, so Kubernetes work never waits on it. Probes and
metrics are served from start-up to exit, on a standby too; the workers run
only while this process leads (at once without an election).
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import signal
from collections.abc import Awaitable, Callable
from typing import Any, Final

import kopf

from controller import (
    admission,
    agents,
    credentials,
    handlers,
    killswitches,
    kube,
    leader,
    metrics,
    mirror,
    mirroring,
    probes,
    settings,
    store,
    workqueue,
)

log = logging.getLogger("controller")
STOP_TIMEOUT: Final = 10.0
PRIME_RETRY: Final = 2.0
# Of each queue's workers, some are kept from its slow lane (new agents, listings,
# anti-entropy's backlog): a Pod's change, a kill or a transition to mirror never
# waits for a worker behind them. The kept ones are more than the slow lane's own:
# an observed change's pass is short (a status write, an Event), but at a burst's
# peak they come faster than 4 workers took them (README "Observed changes go first").
AGENT_WORKERS: Final = 40
AGENT_SLOW_LIMIT: Final = 16
SWITCH_WORKERS: Final = 2
MIRROR_WORKERS: Final = 16
MIRROR_SLOW_LIMIT: Final = 6
# Connections to the API server: one per worker that may be in a request (an agents' pass,
# a mirror's finalizer write, a switch's), and some to spare for the Lease, the probes and
# Warnings posted from the watches, so none of them waits for a connection.
API_CONNECTIONS: Final = AGENT_WORKERS + MIRROR_WORKERS + SWITCH_WORKERS + 8


class Operator:
    """The parts of one acting operator, and the intake that feeds them from the watches."""

    def __init__(
        self,
        api: kube.Kube,
        valkey: mirror.Mirror,
        namespaces: tuple[str, ...] = (),
        max_concurrent: int = 0,
        ttl_after_finished: int = 0,
        resync_interval: float = 300.0,
        audit_annotations: bool = True,
        metrics_: metrics.Metrics | None = None,
        clock: Callable[[], datetime.datetime] = agents.utcnow,
    ) -> None:
        self.api = api
        self.namespaces = namespaces  # empty: every namespace
        self.resync_interval = resync_interval
        self.metrics = metrics_ or metrics.Metrics()
        self.store = store.Store(audit=audit_annotations)
        self.agents_queue = workqueue.WorkQueue("agents", slow_limit=AGENT_SLOW_LIMIT)
        self.switches_queue = workqueue.WorkQueue("killswitches")
        self.mirror_queue = workqueue.WorkQueue("mirror", slow_limit=MIRROR_SLOW_LIMIT)
        self.warnings = warnings = kube.Recorder(api)
        self.agents = agents.Agents(
            api,
            self.store,
            self.agents_queue,
            self.mirror_queue,
            self.switches_queue,
            warnings,
            clock=clock,
            max_concurrent=max_concurrent,
            ttl_after_finished=ttl_after_finished,
            metrics_=self.metrics,
        )
        self.mirroring = mirroring.Mirroring(
            api, self.store, valkey, self.mirror_queue, warnings, clock, self.metrics, namespaces
        )
        self.killswitches = killswitches.Killswitches(
            api, self.store, self.agents_queue, self.mirroring.switch_changed, clock
        )
        self.metrics.watch_fleet(self.fleet)

    # --- the intake (handlers.Intake) ---

    def agent_event(self, body: dict[str, Any], gone: bool, listed: bool = False) -> None:
        self.metrics.watch_events.labels("agent", _type(gone)).inc()
        if self.store.observe_agent(body, gone):
            key = store.key_of(body)
            if gone:
                self.mirroring.agent_gone(body)
            # A change to an agent under way (a kill, a deletion) goes before new agents
            # waiting to be spawned: a burst of creations never delays what is observed. A
            # listing (at start-up, a relist) is no such change: it goes behind them.
            urgent = not listed and (gone or bool(body.get("status")))
            self.agents_queue.add(key, urgent=urgent)
            self.mirror_queue.add(key, urgent=urgent)

    def pod_event(self, body: dict[str, Any], gone: bool, listed: bool = False) -> None:
        self.metrics.watch_events.labels("pod", _type(gone)).inc()
        key = self.store.observe_pod(body, gone)
        if key is not None:
            # A Pod started, ended or went: recorded before any new agent is spawned.
            self.agents_queue.add(key, urgent=not listed)

    def switch_event(self, body: dict[str, Any], gone: bool) -> None:
        self.metrics.watch_events.labels("killswitch", _type(gone)).inc()
        self.switches_queue.add(self.store.observe_switch(body, gone))

    async def namespace_event(self, body: dict[str, Any], gone: bool) -> None:
        """A Namespace's cap (its annotation) into the store; a bad one is reported on it."""
        self.metrics.watch_events.labels("namespace", _type(gone)).inc()
        meta = body["metadata"]
        if self.namespaces and meta["name"] not in self.namespaces:
            return  # not ours to cap, nor to warn about
        value = None if gone else (meta.get("annotations") or {}).get(admission.ANNOTATION)
        cap, problem = admission.namespace_cap(value)
        if self.store.set_cap(meta["name"], cap):
            self.agents.namespace_limit_changed(meta["name"])
        if not problem:
            self.warnings.forget(f"/{meta['name']}")  # the same mistake again is said again
        else:
            try:
                await self.warnings.post(body, "InvalidAnnotation", problem)
            except (kube.ApiError, kube.KubernetesUnavailable) as exc:
                log.warning("namespace %s: could not post its Warning: %s", meta["name"], exc)

    # --- running ---

    async def prime(self) -> None:
        """Fill the store before any worker acts, as an informer syncs before its controller
        runs: slots already held are counted, and every record is checked after a restart."""
        for body in await self.api.list_namespaces():
            await self.namespace_event(body, gone=False)
        listed = []
        for namespace in self.namespaces or (None,):
            listed += await self.api.list_agents(namespace)
        for body in listed:
            self.agent_event(body, gone=False, listed=True)
        for body in await self.api.list_killswitches():
            self.switch_event(body, gone=False)
        self.mirroring.resync_all()

    async def run(self) -> None:
        """The workers and the anti-entropy timer, until cancelled or a part dies."""
        async with asyncio.TaskGroup() as group:
            group.create_task(
                workqueue.run_workers(
                    self.agents_queue, self.agents.reconcile, AGENT_WORKERS, _retrying
                )
            )
            group.create_task(
                workqueue.run_workers(
                    self.switches_queue, self.killswitches.reconcile, SWITCH_WORKERS, _retrying
                )
            )
            group.create_task(
                workqueue.run_workers(
                    self.mirror_queue, self.mirroring.reconcile, MIRROR_WORKERS, _retrying
                )
            )
            group.create_task(self.mirroring.resync_every(self.resync_interval))
            group.create_task(self.relist_every(self.resync_interval))

    async def relist(self) -> None:
        """List the agents afresh and play the deletion of every one the store still holds
        that is gone: kopf's watch, restarted after 410 Gone, lists again but sends nothing
        for what vanished meanwhile, and such a ghost would hold its slot and its Valkey
        record open for good (client-go's informers do the same on a relist)."""
        listed: set[str] = set()
        as_of = ""
        for namespace in self.namespaces or (None,):
            keys, version = await self.api.agent_keys(namespace)
            listed |= keys
            as_of = version if not as_of else min(as_of, version, key=_revision)
        for body in self.store.missing_from(listed, as_of):
            log.info(
                "%s: gone while the watch was away; its deletion is played now", store.key_of(body)
            )
            self.agent_event(dict(body), gone=True)

    async def relist_every(self, interval: float) -> None:
        """``relist`` every ``interval`` seconds, until cancelled; a failed one waits for the
        next."""
        while True:
            await asyncio.sleep(interval)
            try:
                await self.relist()
            except (kube.ApiError, kube.KubernetesUnavailable) as exc:
                log.warning("could not list the agents to find ones gone unseen: %s", exc)
            except Exception:  # a bug here must not stop the operator: the next one tries again
                log.exception("could not list the agents to find ones gone unseen")

    async def drain(self) -> None:
        """Take no new work; let the passes under way finish."""
        await asyncio.gather(
            self.agents_queue.shut_down_with_drain(),
            self.switches_queue.shut_down_with_drain(),
            self.mirror_queue.shut_down_with_drain(),
        )

    def fleet(self) -> metrics.Fleet:
        """The agents as this process knows them, for the metrics' gauges."""
        phases: dict[str, int] = {}
        for body in self.store.agents():
            phase = (body.get("status") or {}).get("phase") or "Pending"
            phases[phase] = phases.get(phase, 0) + 1
        behind, backlog = self.mirroring.behind()
        return metrics.Fleet(
            phases,
            mirror_behind=behind,
            mirror_backlog=backlog,
            queue_depth=len(self.agents_queue) + len(self.switches_queue),
            queue_busy=self.agents_queue.processing + self.switches_queue.processing,
            mirror_queue_depth=len(self.mirror_queue),
        )


def _type(gone: bool) -> str:
    return "deleted" if gone else "changed"


_EXPECTED: Final = (kube.ApiError, kube.KubernetesUnavailable, mirror.MirrorError)


def _retrying(key: str, exc: BaseException, delay: float) -> None:
    """One line for a failure the operator expects (the API or Valkey said no); a
    traceback for anything else, which is a bug. The key is tried again either way."""
    if isinstance(exc, _EXPECTED):
        log.warning("%s: %s; trying again in %.1f s", key, exc, delay)
    else:
        log.error("%s: reconcile failed; trying again in %.1f s", key, delay, exc_info=exc)


async def run(config: settings.Settings) -> int:
    kube_config = kube.load_config(config.kubeconfig)
    api = kube.Kube(kube_config, connections=API_CONNECTIONS)
    conn = mirror.connect(config)
    try:
        server = await api.server_info()
        log.info("connected to Kubernetes %s at %s", server.version, server.host)
        await _greet(conn, config)
        return await _serve(config, kube_config, api, conn)
    finally:
        await api.close()
        await mirror.close(conn)


async def _greet(conn: mirror.Connection, config: settings.Settings) -> None:
    """Name the Valkey the mirror writes to. One that does not answer, or refuses, does not
    stop start-up: Kubernetes work never waits on Valkey, so an operator restarted during an
    outage must still kill. It gets one warning line, /readyz says so, and the mirror tries
    again with backoff."""
    try:
        valkey = await mirror.server_info(
            conn, config.valkey_url, timeout=config.valkey_timeout_seconds
        )
    except mirror.ValkeyUnavailable as exc:
        log.warning("%s; starting without it: /readyz says so, and the mirror tries again", exc)
        return
    where = valkey.address
    if config.valkey_sentinels:
        named = ",".join(f"{s.host}:{s.port}" for s in config.valkey_sentinels)
        where = f"the primary of {config.valkey_sentinel_master} (sentinels {named})"
    elif config.valkey_cluster:
        where = f"a cluster (seed {valkey.address})"
    log.info("connected to %s %s at %s", valkey.server, valkey.version, where)


async def _serve(
    config: settings.Settings,
    kube_config: credentials.Credentials,
    api: kube.Kube,
    conn: Any,
) -> int:
    """Probes from the start; then, once leading (at once without an election), the work."""
    measures = metrics.Metrics()
    valkey = mirror.Mirror(
        conn,
        prefix=config.valkey_key_prefix,
        stream_maxlen=config.valkey_stream_maxlen,
        deleted_ttl_seconds=config.valkey_deleted_ttl_seconds,
        timeout=config.valkey_timeout_seconds,
    )
    operator = Operator(
        api,
        valkey,
        namespaces=config.watch_namespaces,
        max_concurrent=config.max_concurrent_agents,
        ttl_after_finished=config.agent_ttl_seconds_after_finished,
        resync_interval=config.valkey_resync_interval_seconds,
        audit_annotations=config.audit_annotations,
        metrics_=measures,
    )
    workers: asyncio.Task[None] | None = None
    probes_ = probes.Probes(
        config.http_host,
        config.http_port,
        measures.registry,
        ready=lambda: probes.problems(api, valkey),
        live=lambda: workers is None or not workers.done(),
    )
    port = await probes_.start()
    log.info("serving /healthz, /readyz and /metrics on %s:%d", config.http_host, port)
    stop = asyncio.Event()
    _on_signals(stop)
    lease = None
    if config.leader_election_namespace:
        lease = leader.Lease(
            api,
            config.leader_election_namespace,
            config.lease_name,
            config.pod_name,
            duration=config.lease_duration_seconds,
            deadline=config.lease_duration_seconds * 2 / 3,
            retry=max(1.0, config.lease_duration_seconds / 7),
        )
    try:
        if lease is not None:
            log.info("standby: waiting for lease %s/%s", lease.namespace, lease.name)
            if not await _until_first(lease.acquire(), stop.wait()):
                return 0  # stopped while standing by
        measures.leader.set(1)
        # The Lease is renewed from now on: priming can take a while (CRDs installed a
        # moment ago), and losing the Lease at any point stops this process from acting.
        holding = asyncio.create_task(lease.hold()) if lease is not None else None
        primed = asyncio.create_task(_prime(operator))
        stopped = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait(
            {primed, stopped, *_present(holding)}, return_when=asyncio.FIRST_COMPLETED
        )
        for task in (primed, stopped):
            await _cancelled(task)
        if primed not in done:
            await _cancelled(holding)
            if holding is not None and holding in done:
                log.error("stopping at once: %s", holding.exception() or "the Lease holder ended")
                return 1
            if lease is not None:
                await lease.release()
            return 0  # stopped before the work began
        primed.result()
        registry = kopf.OperatorRegistry()
        handlers.register(registry, operator, kube_config)
        where = ", ".join(config.watch_namespaces) or "all namespaces"
        log.info("ready; watching agents in %s; waiting for SIGINT or SIGTERM", where)
        workers = asyncio.create_task(operator.run())
        watching = asyncio.create_task(
            kopf.operator(
                registry=registry,
                standalone=True,
                clusterwide=not config.watch_namespaces,
                namespaces=config.watch_namespaces,
                stop_flag=stop,
            )
        )
        # Until a signal ends kopf, the Lease is lost, or something dies.
        done, _ = await asyncio.wait(
            {workers, watching, *_present(holding)}, return_when=asyncio.FIRST_COMPLETED
        )
        failure = next(
            (t.exception() or "ended" for t in done if t is not watching and not t.cancelled()),
            None,
        )
        if failure is None:
            # A clean stop: the passes under way finish (unless the Lease goes meanwhile).
            drained = asyncio.create_task(operator.drain())
            done, _ = await asyncio.wait(
                {drained, *_present(holding)},
                timeout=STOP_TIMEOUT,
                return_when=asyncio.FIRST_COMPLETED,
            )
            await _cancelled(drained)
            if holding is not None and holding in done:
                failure = holding.exception() or "the Lease holder ended"
            elif drained not in done:
                log.warning("work under way did not finish within %g s; leaving it", STOP_TIMEOUT)
        # Stop acting first: the workers are what writes.
        await _cancelled(workers)
        await _cancelled(holding)
        stop.set()
        try:
            await asyncio.wait_for(asyncio.gather(watching, return_exceptions=True), STOP_TIMEOUT)
        except TimeoutError:
            log.warning("kopf did not stop within %g s; leaving it", STOP_TIMEOUT)
        if failure is not None:
            log.error("stopping at once: %s", failure)
            return 1  # restarted, as a standby if another replica leads by then
        if lease is not None:
            await lease.release()  # a rolling update hands over at once
        log.info("stopping")
        return 0
    finally:
        measures.leader.set(0)
        await probes_.stop()


def _on_signals(stop: asyncio.Event) -> None:
    """SIGINT and SIGTERM set ``stop``: the one way this process is asked to end.

    kopf installs handlers of its own for both as it starts, replacing ours, and a
    second Ctrl-C then fails inside kopf (``InvalidStateError`` from a future set
    twice). So on this loop, later handlers for these two signals are not installed:
    ours stay the only ones, and ``stop`` (kopf's ``stop_flag``) stops kopf too.
    """
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    install = loop.add_signal_handler

    def install_unless_ours(sig: int, callback: Callable[..., object], *args: Any) -> None:
        if sig not in (signal.SIGINT, signal.SIGTERM):
            install(sig, callback, *args)

    loop.add_signal_handler = install_unless_ours  # type: ignore[method-assign,assignment]


async def _prime(operator: Operator) -> None:
    """``operator.prime()``, tried again until the API server serves Agents (CRDs installed a
    moment ago are not served at once) and answers."""
    while True:
        try:
            await operator.prime()
            return
        except (kube.ApiError, kube.KubernetesUnavailable) as exc:
            log.info("waiting for the API server to serve agents: %s", exc)
            await asyncio.sleep(PRIME_RETRY)


def _revision(version: str) -> int:
    """A resourceVersion as a number to compare (etcd's revisions); 0 if it is not one."""
    return int(version) if version.isdigit() else 0


def _present(task: asyncio.Task[None] | None) -> set[asyncio.Task[None]]:
    return {task} if task is not None else set()


async def _cancelled(task: asyncio.Future[Any] | None) -> None:
    """Cancel ``task`` unless it is done, and wait until it is."""
    if task is not None and not task.done():
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def _until_first(first: Awaitable[None], other: Awaitable[Any]) -> bool:
    """Run both until one ends; the other is cancelled. True if ``first`` ended first (its
    exception, if any, is raised)."""
    a, b = asyncio.ensure_future(first), asyncio.ensure_future(other)
    done, _ = await asyncio.wait({a, b}, return_when=asyncio.FIRST_COMPLETED)
    for task in (a, b):
        if task not in done:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    if a in done:
        a.result()
        return True
    b.result()
    return False
