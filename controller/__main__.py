"""``python -m controller run``: the operator process.

Reads the settings, proves both connections (the API server's version, Valkey's
HELLO), serves its probes and metrics, waits for the Lease if replicas elect a
leader, then runs kopf's watches and the reconciler's workers until SIGINT or
SIGTERM (exit 0), or until the Lease is lost (exit 1: a restart makes it a
standby).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Awaitable
from typing import Any, Final

import kopf
import kubernetes
import redis.asyncio

from controller import handlers, kube, leader, metrics, mirror, probes, reconciler, settings

log = logging.getLogger("controller")
STOP_TIMEOUT: Final = 10.0


async def run(config: settings.Settings) -> int:
    kube_config = kube.load_config(config.kubeconfig)
    api = kube.Kube(kube_config)
    conn = mirror.connect(config)
    try:
        server = await api.server_info()
        log.info("connected to Kubernetes %s at %s", server.version, server.host)
        valkey = await mirror.server_info(conn, config.valkey_url)
        log.info("connected to %s %s at %s", valkey.server, valkey.version, valkey.address)
        return await _serve(config, kube_config, api, conn)
    finally:
        await api.close()
        await conn.aclose()


async def _serve(
    config: settings.Settings,
    kube_config: kubernetes.client.Configuration,
    api: kube.Kube,
    conn: redis.asyncio.Redis,
) -> int:
    """Probes from the start; then, once leading (at once without an election), the work."""
    measures = metrics.Metrics()
    mirror_ = mirror.Mirror(
        conn,
        prefix=config.valkey_key_prefix,
        stream_maxlen=config.valkey_stream_maxlen,
        deleted_ttl_seconds=config.valkey_deleted_ttl_seconds,
    )
    work = reconciler.Reconciler(
        api,
        mirror_,
        namespaces=config.watch_namespaces,
        max_concurrent=config.max_concurrent_agents,
        metrics_=measures,
    )
    workers: asyncio.Task[None] | None = None
    probes_ = probes.Probes(
        config.http_host,
        config.http_port,
        measures.registry,
        ready=lambda: probes.problems(api, conn),
        live=lambda: workers is None or not workers.done(),
    )
    port = await probes_.start()
    log.info("serving /healthz, /readyz and /metrics on %s:%d", config.http_host, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
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
        registry = kopf.OperatorRegistry()
        handlers.register(registry, work, kube_config)
        where = ", ".join(config.watch_namespaces) or "all namespaces"
        log.info("ready; watching agents in %s; waiting for SIGINT or SIGTERM", where)
        workers = asyncio.create_task(work.run())
        operator = asyncio.create_task(
            kopf.operator(
                registry=registry,
                standalone=True,
                clusterwide=not config.watch_namespaces,
                namespaces=config.watch_namespaces,
                stop_flag=stop,
            )
        )
        running = {workers, operator}
        holding = asyncio.create_task(lease.hold()) if lease is not None else None
        if holding is not None:
            running.add(holding)
        # Until a signal ends kopf, the Lease is lost, or something dies.
        done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
        # Stop acting first: the workers are what writes.
        for task in (workers, holding):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        stop.set()
        try:
            await asyncio.wait_for(asyncio.gather(operator, return_exceptions=True), STOP_TIMEOUT)
        except TimeoutError:
            log.warning("kopf did not stop within %g s; leaving it", STOP_TIMEOUT)
        failure = next(
            (t.exception() or "ended" for t in done if t is not operator and not t.cancelled()),
            None,
        )
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m controller", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="run the operator against KUBECONFIG (or in-cluster) and VALKEY_URL")
    parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # kopf reports every handled watch event at INFO; the reconciler logs what matters.
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    try:
        config = settings.load()
        return asyncio.run(run(config))
    except (settings.SettingsError, kube.KubernetesUnavailable, mirror.ValkeyUnavailable) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
