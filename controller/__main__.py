"""``python -m controller run``: the operator's command line.

Reads the settings, then runs the operator (``controller.app``) until SIGINT or
SIGTERM (exit 0), or until the Lease is lost (exit 1: a restart makes it a
standby). A bad setting or an unreachable API server at start-up is one line on
stderr and exit 2; an unreachable Valkey is not (see ``app._greet``).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from asyncio import sslproto
from typing import Final

from controller import app, kube, logs, settings

# What asyncio reads off a TLS socket at a time. Its default, 256 KiB, is a buffer per
# connection, zeroed when made, so all of it in memory: kopf's watches and up to
# app.API_CONNECTIONS writers' (35 in all at a 1000-agent burst with 20 workers: 9 MiB).
# A TLS record is at most 16 KiB.
TLS_READ_SIZE: Final = 64 * 1024


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m controller", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="run the operator against KUBECONFIG (or in-cluster) and VALKEY_URL")
    parser.parse_args(argv)
    # A setting of the whole process: the command's to make, not the library's.
    sslproto.SSLProtocol.max_size = TLS_READ_SIZE
    try:
        config = settings.load()
        logs.configure(config.log_format)
        return asyncio.run(app.run(config))
    except (settings.SettingsError, kube.KubernetesUnavailable) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
