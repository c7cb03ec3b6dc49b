"""``python -m controller run``: the operator process.

Reads the settings, proves both connections (the API server's version, Valkey's
INFO), then runs kopf's watches and the reconciler's workers until SIGINT or
SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

import kopf

from controller import handlers, kube, mirror, reconciler, settings

log = logging.getLogger("controller")


async def run(config: settings.Settings) -> None:
    kube_config = kube.load_config(config.kubeconfig)
    api = kube.Kube(kube_config)
    conn = mirror.client(
        config.valkey_url,
        ca_file=config.valkey_ca_file,
        cert_file=config.valkey_cert_file,
        key_file=config.valkey_key_file,
    )
    try:
        server = await api.server_info()
        log.info("connected to Kubernetes %s at %s", server.version, server.host)
        valkey = await mirror.server_info(conn, config.valkey_url)
        log.info("connected to %s %s at %s", valkey.server, valkey.version, valkey.address)
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
        )
        registry = kopf.OperatorRegistry()
        handlers.register(registry, work, kube_config)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        where = ", ".join(config.watch_namespaces) or "all namespaces"
        log.info("ready; watching agents in %s; waiting for SIGINT or SIGTERM", where)
        workers = asyncio.create_task(work.run())
        try:
            await kopf.operator(
                registry=registry,
                standalone=True,
                clusterwide=not config.watch_namespaces,
                namespaces=config.watch_namespaces,
                stop_flag=stop,
            )
        finally:
            workers.cancel()
            await asyncio.gather(workers, return_exceptions=True)
        log.info("stopping")
    finally:
        await api.close()
        await conn.aclose()


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
        asyncio.run(run(config))
    except (settings.SettingsError, kube.KubernetesUnavailable, mirror.ValkeyUnavailable) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
