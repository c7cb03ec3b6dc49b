"""Leader election on a coordination.k8s.io Lease: of several replicas, one acts.

As client-go's leaderelection: a candidate takes the Lease when it is free or
its holder has not renewed it for ``duration``, measured on the candidate's own
clock from when it last saw the record change (so clock skew between nodes does
not matter); the holder renews it every ``retry`` seconds. Every write carries
the resourceVersion it was decided on, so two candidates never both win.

A holder that cannot renew within ``deadline`` (shorter than ``duration``)
stops acting before anyone else may take over: ``hold`` raises ``LostLease``
and the process exits, to come back as a candidate.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import logging
import time
from collections.abc import Callable
from typing import Any

from controller import kube

log = logging.getLogger(__name__)


class LostLease(RuntimeError):
    """This process could not renew its Lease in time: it must stop acting."""


def _micro_time(at: datetime.datetime) -> str:
    return at.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclasses.dataclass
class Lease:
    api: kube.Kube
    namespace: str
    name: str
    identity: str
    duration: float = 15.0
    deadline: float = 10.0
    retry: float = 2.0
    monotonic: Callable[[], float] = time.monotonic
    # What was last seen of the record, and when (on our own clock).
    _seen: tuple[str, str] | None = None
    _seen_at: float = 0.0
    _renewed_at: float = 0.0

    async def acquire(self) -> None:
        """Return once this process holds the Lease (a standby waits here). An API server
        that does not answer is waited out, never fatal: it is often why a leader failed."""
        while True:
            try:
                async with asyncio.timeout(self.duration):
                    if await self.try_acquire_or_renew():
                        break
            except (kube.ApiError, kube.KubernetesUnavailable, TimeoutError) as exc:
                log.warning("leader: cannot read lease %s: %s", self.name, _why(exc))
            await asyncio.sleep(self.retry)
        log.info("leader: %s holds lease %s/%s", self.identity, self.namespace, self.name)

    async def hold(self) -> None:
        """Renew the Lease until cancelled. Raise ``LostLease`` once another holder shows, or
        by ``deadline`` seconds after the last renewal began (another candidate may take the
        Lease ``duration`` after it saw that renewal, which is later): by then this process
        must stop acting. No try may run past the deadline."""
        while True:
            await asyncio.sleep(max(0.0, min(self.retry, self._left())))
            left = self._left()
            if left <= 0:
                raise LostLease(
                    f"lease {self.namespace}/{self.name} not renewed for {self.deadline:g} s"
                )
            try:
                async with asyncio.timeout(left):
                    if await self.try_acquire_or_renew():
                        continue
            except (kube.ApiError, kube.KubernetesUnavailable, TimeoutError) as exc:
                log.warning("leader: cannot renew lease %s: %s", self.name, _why(exc))
            holder = self._seen[0] if self._seen else ""
            if holder not in ("", self.identity):
                raise LostLease(f"lease {self.namespace}/{self.name} is held by {holder} now")

    def _left(self) -> float:
        return self._renewed_at + self.deadline - self.monotonic()

    async def try_acquire_or_renew(self) -> bool:
        """One round: take or renew the Lease if it is ours to have; whether we hold it.

        A success counts from when the round began: the record others see cannot be
        older than that.
        """
        began = self.monotonic()
        now = datetime.datetime.now(datetime.UTC)
        current = await self.api.get_lease(self.namespace, self.name)
        if current is None:
            return await self._write(self._record(now, now, transitions=0), began, create=True)
        spec = current.get("spec") or {}
        holder = spec.get("holderIdentity") or ""
        seen = (holder, str(spec.get("renewTime") or ""))
        if seen != self._seen:
            self._seen, self._seen_at = seen, began
        transitions = int(spec.get("leaseTransitions") or 0)
        # The holder's own promise, if it made one; else ours.
        duration = float(spec.get("leaseDurationSeconds") or self.duration)
        if holder == self.identity:
            acquired = spec.get("acquireTime") or _micro_time(now)
            record = self._record(now, acquired, transitions)
        elif holder and self.monotonic() - self._seen_at < duration:
            return False  # held, and renewed recently as far as we have seen
        else:
            record = self._record(now, _micro_time(now), transitions + 1)
        record["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        return await self._write(record, began)

    async def release(self) -> None:
        """Give the Lease up on a clean exit, so a standby need not wait for it to expire."""
        try:
            current = await self.api.get_lease(self.namespace, self.name)
            if (
                current is None
                or (current.get("spec") or {}).get("holderIdentity") != self.identity
            ):
                return
            current["spec"] = {**current["spec"], "holderIdentity": None}
            await self.api.replace_lease(current)
        except (kube.ApiError, kube.KubernetesUnavailable) as exc:
            log.warning("leader: could not release lease %s: %s", self.name, exc)

    def _record(
        self, now: datetime.datetime, acquired: datetime.datetime | str, transitions: int
    ) -> dict[str, Any]:
        return {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": self.name, "namespace": self.namespace},
            "spec": {
                "holderIdentity": self.identity,
                "leaseDurationSeconds": max(1, round(self.duration)),
                "acquireTime": acquired if isinstance(acquired, str) else _micro_time(acquired),
                "renewTime": _micro_time(now),
                "leaseTransitions": transitions,
            },
        }

    async def _write(self, record: dict[str, Any], began: float, create: bool = False) -> bool:
        try:
            if create:
                await self.api.create_lease(record)
            else:
                await self.api.replace_lease(record)
        except kube.Conflict:
            return False  # another candidate wrote first
        self._renewed_at = began
        return True


def _why(exc: BaseException) -> str:
    return str(exc) or f"no answer in time ({type(exc).__name__})"
