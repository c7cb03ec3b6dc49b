"""A work queue for controllers, with client-go's ``util/workqueue`` semantics, in asyncio.

Why not a plain ``asyncio.Queue``: a controller needs more of its queue than order.
A burst of events for one object must become one reconcile, not many; no object
may be reconciled by two workers at once; a failure must be retried with backoff
per object, under an overall rate limit so that many failing objects cannot flood
the API server; and a reconcile must be able to ask to look again later without a
later request postponing a sooner one. client-go's workqueue (queue.go,
delaying_queue.go, default_rate_limiters.go) is the well-trodden answer; this is
its model, for one event loop (so there are no locks):

- a key waits at most once (the dirty set); a key added while it is being
  processed is put back only when ``done`` is called, so no two workers hold it;
- ``add_after`` keeps, per key, the earliest time asked for;
- ``RateLimiter`` is ``MaxOfRateLimiter(ItemExponentialFailureRateLimiter,
  BucketRateLimiter)``, client-go's default controller rate limiter;
- ``run_workers`` is controller-runtime's worker loop around a reconcile;
- ``slow_limit`` caps the workers on the slow lane, so that slow work never holds
  them all: a change observed never waits behind a backlog of slow work.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import Final

log = logging.getLogger(__name__)

# client-go's DefaultControllerRateLimiter backs off 5 ms .. 1000 s under 10 qps, burst 100;
# a failed key here is retried after half a second at first and never waits minutes.
BASE_DELAY: Final = 0.5
MAX_DELAY: Final = 30.0
QPS: Final = 50.0
BURST: Final = 200


class ShutDown(Exception):
    """get() on a queue that is shut down and empty."""


class RateLimiter:
    """Per-key exponential backoff (base, doubling, capped) combined with an overall token bucket
    (qps, burst): when(key) returns the larger of the two delays, as client-go's
    MaxOfRateLimiter(ItemExponentialFailureRateLimiter, BucketRateLimiter)."""

    def __init__(
        self,
        base: float = BASE_DELAY,
        cap: float = MAX_DELAY,
        qps: float = QPS,
        burst: int = BURST,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if base < 0 or cap < base or qps <= 0 or burst < 0:
            raise ValueError(
                f"rate limiter needs 0 <= base <= cap, qps > 0 and burst >= 0;"
                f" got base={base}, cap={cap}, qps={qps}, burst={burst}"
            )
        self._base = base
        self._cap = cap
        self._qps = qps
        self._burst = burst
        self._monotonic = monotonic
        self._failures: dict[str, int] = {}
        # The bucket starts full, as golang.org/x/time/rate's; it goes negative when
        # reservations are made ahead of time (each one waits its turn at qps).
        self._tokens = float(burst)
        self._last = monotonic()

    def when(self, key: str) -> float:
        """Seconds to wait before retrying ``key``; counts one more failure for it."""
        return max(self._backoff(key), self._reserve())

    def forget(self, key: str) -> None:
        """Reset ``key``'s failures: its next ``when`` waits ``base`` again."""
        self._failures.pop(key, None)

    def failures(self, key: str) -> int:
        """How many times ``when(key)`` was called since ``key`` was last forgotten."""
        return self._failures.get(key, 0)

    def _backoff(self, key: str) -> float:
        exponent = self._failures.get(key, 0)
        self._failures[key] = exponent + 1
        try:
            backoff = math.ldexp(self._base, exponent)  # base * 2**exponent
        except OverflowError:  # past any float: only the cap matters
            return self._cap
        return min(backoff, self._cap)

    def _reserve(self) -> float:
        """Take a token from the bucket; the wait until it is really there (0 if it is)."""
        now = self._monotonic()
        self._tokens = min(float(self._burst), self._tokens + (now - self._last) * self._qps)
        self._last = now
        self._tokens -= 1
        return max(0.0, -self._tokens / self._qps)


class WorkQueue:
    """Keys to reconcile: each waits at most once and is held by at most one worker.

    ``monotonic`` is the clock ``scheduled_at`` answers on (and the default rate
    limiter's); timers run on the event loop's own clock, for the same delays.
    """

    def __init__(
        self,
        name: str = "",
        rate_limiter: RateLimiter | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        slow_limit: int | None = None,
    ) -> None:
        if slow_limit is not None and slow_limit < 1:
            raise ValueError(f"a work queue's slow_limit must be at least 1, got {slow_limit}")
        self.name = name
        self.slow_limit = slow_limit  # None: any number of slow keys may be held at once
        self._rate_limiter = (
            RateLimiter(monotonic=monotonic) if rate_limiter is None else rate_limiter
        )
        self._monotonic = monotonic
        # Handed out in insertion order, the urgent lane first; a key is in at most one lane.
        self._ready: dict[str, None] = {}
        self._urgent: dict[str, None] = {}
        self._urgent_keys: set[str] = set()  # keys added urgent, until handed out
        self._held_urgent: set[str] = set()  # handed out urgent: a requeue keeps the lane
        # Keys that need processing: those in _ready, and those added while processing.
        self._dirty: set[str] = set()
        self._processing: set[str] = set()  # handed out by get(), not yet done()
        self._due: dict[str, float] = {}  # delayed keys: when (on `monotonic`) they are added
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._getters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._drainers: collections.deque[asyncio.Future[None]] = collections.deque()
        self._shutting_down = False

    def add(self, key: str, urgent: bool = False) -> None:
        """Queue ``key`` unless it is already waiting; ignored once shut down. ``urgent``
        keys are handed out before the others (a key waiting already moves up), as
        controller-runtime's priority queue puts events before its initial listing."""
        if self._shutting_down:
            return
        if key in self._dirty:
            if urgent and key not in self._urgent_keys:
                self._urgent_keys.add(key)
                if self._ready.pop(key, False) is None:  # it was waiting: it moves up
                    self._urgent[key] = None
                    # A worker asleep because the slow lane was full may take it now.
                    self._wake_one_getter()
            return
        self._dirty.add(key)
        if urgent:
            self._urgent_keys.add(key)
        if key in self._processing:
            return  # done() puts it back: never two workers on one key
        self._put_back(key)

    def was_urgent(self, key: str) -> bool:
        """Whether ``key``, now with a worker, was handed out from the urgent lane."""
        return key in self._held_urgent

    def _lane(self, key: str) -> dict[str, None]:
        return self._urgent if key in self._urgent_keys else self._ready

    def _slow_open(self) -> bool:
        """Whether a slow key may be handed out now (fewer than ``slow_limit`` are held: those
        processing that were not handed out urgent)."""
        held_slow = len(self._processing) - len(self._held_urgent)
        return self.slow_limit is None or held_slow < self.slow_limit

    def _put_back(self, key: str) -> None:
        """Into its lane, waking a worker if one may take it now (a slow key while the slow
        lane is full waits for a slow pass to end, which wakes one then)."""
        self._lane(key)[key] = None
        if key in self._urgent_keys or self._slow_open():
            self._wake_one_getter()

    def _pop_ready(self) -> str | None:
        """The next key to hand out, urgent ones first, slow ones only while fewer than
        ``slow_limit`` are held; None if there is none."""
        for lane in (self._urgent, self._ready) if self._slow_open() else (self._urgent,):
            if lane:
                key = next(iter(lane))
                del lane[key]
                return key
        return None

    def add_after(self, key: str, delay: float, urgent: bool = False) -> None:
        """Add ``key`` in ``delay`` seconds (at once if <= 0). Of two times asked for one
        key, the earlier stands. Needs a running event loop for a positive delay."""
        if self._shutting_down:
            return
        if delay <= 0:
            self.add(key, urgent)
            return
        due = self._monotonic() + delay
        scheduled = self._due.get(key)
        if scheduled is not None:
            if scheduled <= due:
                return  # a later time never postpones a sooner one
            self._timers[key].cancel()
        self._due[key] = due
        self._timers[key] = asyncio.get_running_loop().call_later(delay, self._fire, key, urgent)

    def add_rate_limited(self, key: str, urgent: bool = False) -> None:
        """Add ``key`` after the rate limiter's delay for it (one more failure counted)."""
        self.add_after(key, self._rate_limiter.when(key), urgent)

    def forget(self, key: str) -> None:
        """Stop the backoff for ``key`` (it succeeded): its next failure waits the base delay."""
        self._rate_limiter.forget(key)

    def num_requeues(self, key: str) -> int:
        """How many times ``key`` was added rate-limited since it was last forgotten."""
        return self._rate_limiter.failures(key)

    async def get(self) -> str:
        """Wait for a key and mark it processing; the caller must call ``done`` with it.
        Raise ``ShutDown`` once the queue is shut down and has nothing left to hand out."""
        while (key := self._pop_ready()) is None:
            if self._shutting_down:
                raise ShutDown(f"work queue {self.name!r} is shut down")
            getter = asyncio.get_running_loop().create_future()
            self._getters.append(getter)
            try:
                await getter
            except asyncio.CancelledError:
                if getter.done() and not getter.cancelled():
                    self._wake_one_getter()  # woken for a key, but not taking it: pass it on
                else:
                    with contextlib.suppress(ValueError):  # unless a waker dropped it already
                        self._getters.remove(getter)
                raise
        self._dirty.discard(key)
        if key in self._urgent_keys:
            self._urgent_keys.discard(key)
            self._held_urgent.add(key)
        self._processing.add(key)
        return key

    def done(self, key: str) -> None:
        """``key`` is processed; if it was added meanwhile it goes back on the queue."""
        if key not in self._processing:
            return  # not handed out (or done twice): nothing to finish, nothing to re-queue
        self._processing.remove(key)
        if key in self._held_urgent:
            self._held_urgent.discard(key)
        elif self._ready:
            self._wake_one_getter()  # a slow key may be waiting for the place it held
        if key in self._dirty:
            self._put_back(key)
        if not self._processing:
            _wake_all(self._drainers)

    def __len__(self) -> int:
        """Keys waiting to be handed out now (not the delayed ones, nor those that go back
        on when their worker is done)."""
        return len(self._ready) + len(self._urgent)

    @property
    def processing(self) -> int:
        """Keys handed out by ``get`` and not yet ``done``: with a worker now."""
        return len(self._processing)

    @property
    def delayed(self) -> int:
        """Keys scheduled by ``add_after`` that are not due yet."""
        return len(self._due)

    def scheduled_at(self, key: str) -> float | None:
        """When (on the queue's ``monotonic`` clock) delayed ``key`` will be added, if it is."""
        return self._due.get(key)

    def shut_down(self) -> None:
        """Take no more keys (delayed ones are dropped); keys waiting are still handed out
        (a slow one only to a worker within the slow limit), then ``get`` raises
        ``ShutDown``."""
        self._shutting_down = True
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        self._due.clear()
        _wake_all(self._getters)  # those with nothing left to take raise ShutDown

    async def shut_down_with_drain(self) -> None:
        """Shut down, drop the keys still waiting, and return once every key handed out by
        ``get`` is ``done``: workers finish what they hold and start nothing new."""
        self.shut_down()
        self._ready.clear()
        self._urgent.clear()
        self._urgent_keys.clear()
        self._held_urgent.clear()
        self._dirty.clear()  # nor does done() put a key back
        if self._processing:
            drained = asyncio.get_running_loop().create_future()
            self._drainers.append(drained)
            await drained

    @property
    def shutting_down(self) -> bool:
        return self._shutting_down

    def _fire(self, key: str, urgent: bool) -> None:
        del self._due[key], self._timers[key]
        self.add(key, urgent)

    def _due_in(self, key: str) -> float:
        """Seconds until delayed ``key`` is added; 0 if it is not delayed."""
        due = self._due.get(key)
        return 0.0 if due is None else due - self._monotonic()

    def _wake_one_getter(self) -> None:
        while self._getters:
            getter = self._getters.popleft()
            if not getter.done():  # a cancelled one is skipped
                getter.set_result(None)
                return


def _wake_all(waiters: collections.deque[asyncio.Future[None]]) -> None:
    for waiter in waiters:
        if not waiter.done():
            waiter.set_result(None)
    waiters.clear()


@dataclasses.dataclass(frozen=True)
class Result:
    """What a reconcile asks of its queue, as controller-runtime's Result."""

    requeue_after: float | None = None  # look again after this many seconds (if nothing else)
    requeue: bool = False  # look again at once (e.g. decided on a stale read)


async def run_workers(
    queue: WorkQueue,
    reconcile: Callable[[str], Awaitable[Result]],
    workers: int,
    on_error: Callable[[str, BaseException, float], None] | None = None,
) -> None:
    """Reconcile keys from ``queue`` with ``workers`` coroutines until it is shut down and
    drained. A reconcile that raises is retried with backoff (``on_error`` is told the key,
    the exception and the seconds until the retry; without it, a warning is logged); one
    that returns has its backoff forgotten and is requeued as its ``Result`` asks. An
    ``on_error`` that raises ends them all (the TaskGroup's ExceptionGroup)."""
    if workers < 1:
        raise ValueError(f"run_workers needs at least one worker, got {workers}")

    async def worker() -> None:
        while True:
            try:
                key = await queue.get()
            except ShutDown:
                return
            # A retry, a requeue or a look later keeps the key's lane.
            urgent = queue.was_urgent(key)
            try:
                result = await reconcile(key)
            except Exception as exc:
                queue.add_rate_limited(key, urgent)
                delay = queue._due_in(key)  # the earlier-time rule may make it sooner
                if on_error is not None:
                    on_error(key, exc, delay)
                else:
                    log.warning(
                        "work queue %r: reconcile of %s failed, retrying in %.3g s: %s",
                        queue.name,
                        key,
                        delay,
                        exc,
                        exc_info=exc,
                    )
            else:
                queue.forget(key)
                if result.requeue:
                    queue.add(key, urgent)
                elif result.requeue_after is not None:
                    queue.add_after(key, result.requeue_after, urgent)
            finally:
                queue.done(key)
            # A pass that never waited on I/O must not starve the loop (watches, timers,
            # the Lease, probes) by taking the next key at once.
            await asyncio.sleep(0)

    async with asyncio.TaskGroup() as group:
        for _ in range(workers):
            group.create_task(worker())
