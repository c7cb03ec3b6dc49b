"""``python -m controller run``: the operator process.

Until the reconciler exists (issue 4) ``run`` proves its two connections: it
reads the settings, asks the API server for its version and Valkey for its
INFO, logs both, and then waits for SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from controller import kube, mirror, settings

log = logging.getLogger("controller")


async def run(config: settings.Settings) -> None:
    kube_config = kube.load_config(config.kubeconfig)
    api = await asyncio.to_thread(kube.server_info, kube_config)
    log.info("connected to Kubernetes %s at %s", api.version, api.host)
    conn = mirror.client(config.valkey_url)
    try:
        valkey = await mirror.server_info(conn, config.valkey_url)
        log.info("connected to %s %s at %s", valkey.server, valkey.version, valkey.address)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        log.info("ready; waiting for SIGINT or SIGTERM")
        await stop.wait()
        log.info("stopping")
    finally:
        await conn.aclose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m controller", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="run the operator against KUBECONFIG (or in-cluster) and VALKEY_URL")
    parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        config = settings.load()
        asyncio.run(run(config))
    except (settings.SettingsError, kube.KubernetesUnavailable, mirror.ValkeyUnavailable) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
