"""The Killswitches controller: an engaged switch kills what it matches, and keeps count.

A switch's kills go through the agents' own queue (each agent's pass sees the
switch in the store and stops its Pod), so a kill is the same code whatever
asked for it. This controller, on its own queue keyed by switch name, puts every
live matching agent on that queue and writes the switch's status: when it was
engaged, how many agents it matched and how many of those are now terminal, and
when the last one was. The counts come from the store, not from LISTs: a switch
over thousands of agents is recounted about once a second while its kills land.
Its Valkey hash and event follow the status: each pass hands the switch to the
mirror (``mirror_switch``), which records it on its own queue.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Callable

from controller import killswitch, kube, lifecycle, models, store, workqueue

log = logging.getLogger(__name__)


class Killswitches:
    def __init__(
        self,
        api: kube.Kube,
        cache: store.Store,
        agents_queue: workqueue.WorkQueue,
        mirror_switch: Callable[[str], None],
        clock: Callable[[], datetime.datetime],
    ) -> None:
        self.kube = api
        self.store = cache
        self.agents_queue = agents_queue
        self.mirror_switch = mirror_switch  # the switch's status is to be mirrored
        self.clock = clock

    async def reconcile(self, name: str) -> workqueue.Result:
        try:
            return await self._reconcile(name)
        except kube.Conflict:
            # Our copy was stale: read the switch afresh and count again.
            fresh = await self.kube.get_killswitch(name)
            if fresh is not None:
                self.store.put_switch(fresh)
            return workqueue.Result(requeue=True)

    async def _reconcile(self, name: str) -> workqueue.Result:
        body = self.store.switch(name)
        if body is None:
            self.mirror_switch(name)  # deleted: nothing to kill or count; its record goes
            return workqueue.Result()
        switch = killswitch.Switch.of(body)
        before = models.KillswitchStatus.model_validate(body.get("status") or {})
        now = self.clock()
        if switch.spec.engaged:
            matched = await self._matched(switch)
            live = [key for key, phase in matched if phase not in lifecycle.TERMINAL]
            for key in live:
                # Kills go before spawns; an agent already stopping is driven by its Pod's
                # events, and a recount of it is no news.
                status = (self.store.agent(key) or {}).get("status") or {}
                self.agents_queue.add(key, urgent=not status.get("stopping"))
            # Never lowered while engaged: a killed agent deleted since (by its TTL, or by a
            # user) was matched and is finished all the same.
            counted = max(len(matched), before.matched if before.engaged_at else 0)
            after = models.KillswitchStatus(
                engaged_at=before.engaged_at or now,
                matched=counted,
                killed=counted - len(live),
                completed_at=before.completed_at or (None if live else now),
                engaged_by=switch.engaged_by or None,
                disengaged_by=switch.disengaged_by or None,
            )
        else:
            # Disengaged: no new kills, nothing revived; the last counts stay on record.
            after = before.model_copy(
                update={
                    "engaged_at": None,
                    "completed_at": None,
                    "engaged_by": switch.engaged_by or None,
                    "disengaged_by": switch.disengaged_by or None,
                }
            )
        if after != before:
            dumped = after.model_dump(by_alias=True, mode="json")
            written = await self.kube.write_killswitch_status(
                name, body["metadata"]["resourceVersion"], dumped
            )
            self.store.put_switch(written)
            if after.completed_at is not None and before.completed_at is None:
                log.info("killswitch %s: all %d matched agents are terminal", name, after.matched)
        self.mirror_switch(name)
        return workqueue.Result()

    async def _matched(self, switch: killswitch.Switch) -> list[tuple[str, str | None]]:
        """(namespace/name, phase) of every watched agent the switch matches."""
        spec = switch.spec
        allowed: set[str] | None = None
        if spec.namespace_selector != models.LabelSelector():
            allowed = await self.kube.namespaces(killswitch.query(spec.namespace_selector))
        matched = []
        for body in self.store.agents():
            meta = body["metadata"]
            if allowed is not None and meta["namespace"] not in allowed:
                continue
            if killswitch.matches(spec.agent_selector, meta.get("labels") or {}):
                phase = (body.get("status") or {}).get("phase")
                matched.append((f"{meta['namespace']}/{meta['name']}", phase))
        return matched
