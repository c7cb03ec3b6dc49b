"""The client's connections to the API server: at most ``connections`` requests in flight."""

from __future__ import annotations

import asyncio
from pathlib import Path

from aiohttp import web

from controller import app, kube
from tests.unit.test_kube_credentials import kubeconfig


def test_no_more_requests_are_in_flight_than_connections(tmp_path: Path) -> None:
    """A real HTTP server holds the first two requests: the third comes only after they
    are let go."""

    async def scenario() -> list[bool]:
        arrived: list[bool] = []  # per request, in arrival order: were the first two let go?
        two_in, let_go = asyncio.Event(), asyncio.Event()

        async def answer(_: web.Request) -> web.Response:
            arrived.append(let_go.is_set())
            if len(arrived) == 2:
                two_in.set()
            if len(arrived) <= 2:
                await let_go.wait()
            return web.json_response({"gitVersion": "v1.37.2"})

        server = web.Application()
        server.router.add_get("/version", answer)
        runner = web.AppRunner(server)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        cluster = {"server": f"http://127.0.0.1:{runner.addresses[0][1]}"}
        path = kubeconfig(tmp_path / "config", {}, cluster=cluster)
        api = kube.Kube(kube.load_config(str(path)), connections=2)
        try:
            asks = [asyncio.create_task(api.server_info()) for _ in range(3)]
            await two_in.wait()
            let_go.set()
            assert [info.version for info in await asyncio.gather(*asks)] == ["v1.37.2"] * 3
        finally:
            await api.close()
            await runner.cleanup()
        return arrived

    assert asyncio.run(scenario()) == [False, False, True]


def test_the_operator_has_a_connection_for_every_worker_and_some_to_spare() -> None:
    workers = app.AGENT_WORKERS + app.MIRROR_WORKERS + app.SWITCH_WORKERS
    assert workers < app.API_CONNECTIONS
