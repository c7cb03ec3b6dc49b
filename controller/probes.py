"""The operator's HTTP endpoints: ``/healthz`` (liveness), ``/readyz`` (readiness), ``/metrics``.

One small aiohttp server, up from start-up to exit, on the leader and on a
standby alike (kopf's own liveness endpoint exists only while kopf runs, and a
standby runs no kopf). Readiness says whether this process could do its work:
Valkey answers and the CRDs are installed; the body names what is missing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Final

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from controller import kube, mirror, models

CHECK_TIMEOUT: Final = 2.0
KINDS: Final = frozenset({"agents", "killswitches"})


async def problems(
    api: kube.Kube, valkey: mirror.Mirror, api_version: str = models.API_VERSION
) -> list[str]:
    """Why this process is not ready: one sentence per problem, none when ready."""
    found = []
    try:
        async with asyncio.timeout(CHECK_TIMEOUT):
            await valkey.ping()
    except mirror.MirrorError as exc:
        found.append(str(exc))
    except TimeoutError:
        found.append("Valkey is unreachable: no answer in time")
    try:
        async with asyncio.timeout(CHECK_TIMEOUT):
            missing = set(KINDS) - await api.served_resources(api_version)
    except (kube.ApiError, kube.KubernetesUnavailable, TimeoutError) as exc:
        found.append(f"the Kubernetes API is unreachable: {str(exc) or 'no answer in time'}")
        missing = set()
    if missing:
        found.append(f"CRDs not installed: {', '.join(sorted(missing))} ({api_version})")
    return found


class Probes:
    def __init__(
        self,
        host: str,
        port: int,
        registry: CollectorRegistry,
        ready: Callable[[], Awaitable[list[str]]],
        live: Callable[[], bool],
    ) -> None:
        self.host, self.port = host, port
        self.registry = registry
        self.ready, self.live = ready, live
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        self._runner = web.AppRunner(app, access_log=None)

    async def start(self) -> int:
        """Serve; return the port bound (``port`` 0 picks a free one)."""
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        sockets = self._runner.addresses
        return int(sockets[0][1]) if sockets else self.port

    async def stop(self) -> None:
        await self._runner.cleanup()

    async def _healthz(self, _: web.Request) -> web.Response:
        if self.live():
            return web.Response(text="ok\n")
        return web.Response(status=500, text="the operator's workers have stopped\n")

    async def _readyz(self, _: web.Request) -> web.Response:
        found = await self.ready()
        if not found:
            return web.Response(text="ready\n")
        return web.Response(status=503, text="".join(f"{p}\n" for p in found))

    async def _metrics(self, _: web.Request) -> web.Response:
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
