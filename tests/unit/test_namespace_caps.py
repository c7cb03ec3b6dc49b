"""A Namespace's annotation caps its agents: read from the watch (and the first listing), a
bad value reported on the Namespace, a change looked at at once."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

from controller import admission
from tests.unit.fakes import KEY, FakeKube, agent_body, operator


def status(api: FakeKube) -> dict[str, Any]:
    assert api.body is not None
    found: dict[str, Any] = api.body.get("status", {})
    return found


def namespace(name: str = "team-a", cap: str | None = None) -> dict[str, Any]:
    annotations = {admission.ANNOTATION: cap} if cap is not None else {}
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "uid": f"ns-{name}", "annotations": annotations},
    }


def drain(op: Any) -> list[str]:
    async def keys() -> list[str]:
        found = []
        while len(op.agents_queue):
            key = await op.agents_queue.get()
            op.agents_queue.done(key)
            found.append(key)
        return found

    return asyncio.run(keys())


def test_a_capped_namespaces_agent_waits_and_says_which_limit_holds_it() -> None:
    api = FakeKube(agent_body())
    running = agent_body()
    running["metadata"].update(name="running", uid="uid-0")
    running["status"] = {"phase": "Running", "podName": "running-pod", "seq": 2}
    api.namespace_bodies = [namespace(cap="1")]
    op, _ = operator(api, max_concurrent=10)
    asyncio.run(op.prime())
    op.agent_event(running, gone=False)
    drain(op)

    asyncio.run(op.agents.reconcile(KEY))

    assert api.pod is None
    assert status(api)["reason"] == "Queued"
    assert status(api)["message"] == (
        f"waiting for a slot: namespace team-a allows 1 agents at once ({admission.ANNOTATION})"
    )


def test_lifting_the_cap_wakes_the_namespaces_waiting_agents() -> None:
    api = FakeKube(agent_body())
    op, _ = operator(api)
    asyncio.run(op.namespace_event(namespace(cap="1"), gone=False))
    holder = agent_body()
    holder["metadata"].update(name="holder", uid="uid-0")
    holder["status"] = {"phase": "Running", "podName": "holder-pod", "seq": 2}
    op.agent_event(holder, gone=False)
    op.agent_event(copy.deepcopy(api.body), gone=False)  # type: ignore[arg-type]
    drain(op)

    asyncio.run(op.namespace_event(namespace(cap=None), gone=False))

    assert drain(op) == [KEY]
    assert op.store.caps() == {}


def test_a_bad_annotation_is_a_warning_on_the_namespace_and_caps_nothing() -> None:
    api = FakeKube(agent_body())
    op, _ = operator(api, max_concurrent=3)
    asyncio.run(op.namespace_event(namespace(cap="two"), gone=False))
    asyncio.run(op.namespace_event(namespace(cap="two"), gone=False))

    assert op.store.caps() == {}
    (warning,) = api.events  # once, however often the watch repeats it
    kind, reason, message = warning
    assert (kind, reason) == ("Warning", "InvalidAnnotation")
    assert message.startswith(f"{admission.ANNOTATION}='two' is not a whole number")
    # The agent is held by the operator's limit only: it starts.
    asyncio.run(op.agents.reconcile(KEY))
    assert api.pod is not None


def test_a_deleted_namespace_drops_its_cap() -> None:
    op, _ = operator(FakeKube(agent_body()))
    asyncio.run(op.namespace_event(namespace(cap="2"), gone=False))
    assert op.store.caps() == {"team-a": 2}
    asyncio.run(op.namespace_event(namespace(cap="2"), gone=True))
    assert op.store.caps() == {}


def test_namespaces_outside_watch_namespaces_are_neither_capped_nor_warned_about() -> None:
    api = FakeKube(agent_body())
    op, _ = operator(api, namespaces=("team-a",))
    asyncio.run(op.namespace_event(namespace("elsewhere", cap="two"), gone=False))
    asyncio.run(op.namespace_event(namespace("elsewhere", cap="2"), gone=False))
    assert op.store.caps() == {}
    assert api.events == []


def test_a_mistake_fixed_then_made_again_is_said_again() -> None:
    api = FakeKube(agent_body())
    op, _ = operator(api)
    for cap in ("two", "2", "two"):
        asyncio.run(op.namespace_event(namespace(cap=cap), gone=False))
    assert [reason for _, reason, _ in api.events] == ["InvalidAnnotation"] * 2
