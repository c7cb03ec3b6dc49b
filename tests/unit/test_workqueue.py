"""The work queue's promises (controller/workqueue.py), against its own event loop.

Timers are real but short and every wait is bounded; the rate limiter's clock is a
fake that moves only when told, so its arithmetic is checked exactly.
"""

from __future__ import annotations

import asyncio
import collections
import logging

import pytest

from controller import workqueue

KEYS = ("a", "b", "c")


class Clock:
    """A monotonic clock that moves only when told."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Failed(Exception):
    """What a reconcile in these tests raises."""


# --- queued once, held once ---


def test_a_key_added_twice_is_handed_out_once() -> None:
    async def scenario() -> None:
        queue = workqueue.WorkQueue()
        queue.add("a")
        queue.add("b")
        queue.add("a")
        assert len(queue) == 2
        assert [await queue.get(), await queue.get()] == ["a", "b"]
        assert len(queue) == 0

    asyncio.run(scenario())


def test_a_key_added_while_processing_comes_back_only_after_done() -> None:
    async def scenario() -> None:
        queue = workqueue.WorkQueue()
        queue.add("a")
        assert await queue.get() == "a"
        queue.add("a")
        queue.add("a")
        assert len(queue) == 0  # not while a worker holds it
        queue.done("a")
        assert len(queue) == 1  # once, however often it was added
        assert await queue.get() == "a"
        queue.done("a")
        assert len(queue) == 0  # not added meanwhile: not back

    asyncio.run(scenario())


def test_done_for_a_key_not_handed_out_changes_nothing() -> None:
    queue = workqueue.WorkQueue()
    queue.add("a")
    queue.done("a")  # waiting, not processing: must not be queued a second time
    queue.done("never")
    assert len(queue) == 1


def test_workers_never_hold_one_key_at_once() -> None:
    holders: collections.Counter[str] = collections.Counter()
    most_per_key = most_at_once = calls = 0

    async def scenario() -> None:
        queue = workqueue.WorkQueue()

        async def reconcile(key: str) -> workqueue.Result:
            nonlocal most_per_key, most_at_once, calls
            holders[key] += 1
            most_per_key = max(most_per_key, holders[key])
            most_at_once = max(most_at_once, holders.total())
            calls += 1
            if calls < 100:
                for other in KEYS:  # its own key too, while this worker holds it
                    queue.add(other)
            else:
                queue.shut_down()
            for _ in range(3):  # let the other workers run meanwhile
                await asyncio.sleep(0)
            holders[key] -= 1
            return workqueue.Result()

        for key in KEYS:
            queue.add(key)
        async with asyncio.timeout(5):
            await workqueue.run_workers(queue, reconcile, workers=4)

    asyncio.run(scenario())
    assert calls >= 100
    assert most_at_once > 1  # the workers did run side by side...
    assert most_per_key == 1  # ...but never two on one key


# --- delayed adds ---


@pytest.mark.parametrize(
    ("first", "second"),
    [(10.0, 0.01), (0.01, 10.0)],
    ids=[
        "a sooner add_after replaces a later one",
        "a later add_after does not postpone a sooner one",
    ],
)
def test_add_after_keeps_the_earlier_time(first: float, second: float) -> None:
    clock = Clock(100.0)

    async def scenario() -> None:
        queue = workqueue.WorkQueue(monotonic=clock)
        queue.add_after("k", first)
        queue.add_after("k", second)
        assert queue.scheduled_at("k") == pytest.approx(100.01)
        assert (len(queue), queue.delayed) == (0, 1)  # delayed keys are not waiting yet
        async with asyncio.timeout(1):
            assert await queue.get() == "k"
        assert (queue.delayed, queue.scheduled_at("k")) == (0, None)

    asyncio.run(scenario())


@pytest.mark.parametrize("delay", [0.0, -1.0], ids=["no delay", "a delay in the past"])
def test_add_after_without_a_delay_adds_at_once(delay: float) -> None:
    queue = workqueue.WorkQueue()
    queue.add_after("k", delay)
    assert (len(queue), queue.delayed, queue.scheduled_at("k")) == (1, 0, None)


# --- the rate limiter ---


def test_backoff_doubles_per_key_up_to_the_cap_and_forget_resets_it() -> None:
    limiter = workqueue.RateLimiter(base=0.5, cap=4.0, burst=1000, monotonic=Clock())
    assert [limiter.when("a") for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert limiter.failures("a") == 6
    assert [limiter.when("b") for _ in range(2)] == [0.5, 1.0]  # each key its own
    limiter.forget("a")
    assert limiter.failures("a") == 0
    assert limiter.when("a") == 0.5
    assert limiter.when("b") == 2.0  # forgetting one key leaves the others


def test_backoff_stays_at_the_cap_however_many_failures() -> None:
    limiter = workqueue.RateLimiter(base=0.5, cap=30.0, burst=2000, monotonic=Clock())
    delays = [limiter.when("a") for _ in range(1100)]  # past 2**1024: beyond any float
    assert delays[-1] == 30.0
    assert max(delays) == 30.0


def test_the_overall_rate_limit_spaces_new_keys_at_qps_after_the_burst() -> None:
    clock = Clock()
    limiter = workqueue.RateLimiter(base=0.001, cap=1.0, qps=10.0, burst=3, monotonic=clock)
    delays = [limiter.when(f"key-{i}") for i in range(6)]
    assert delays == pytest.approx([0.001, 0.001, 0.001, 0.1, 0.2, 0.3])
    clock.now = 0.25  # 2.5 tokens come back, against 3 owed: the next one waits 1.5 / qps
    assert limiter.when("key-6") == pytest.approx(0.15)
    clock.now = 100.0  # a full bucket, never fuller than the burst
    delays = [limiter.when(f"key-{i}") for i in range(7, 11)]
    assert delays == pytest.approx([0.001, 0.001, 0.001, 0.1])


@pytest.mark.parametrize(
    ("base", "cap", "qps", "burst"),
    [(-1.0, 30.0, 50.0, 200), (2.0, 1.0, 50.0, 200), (0.5, 30.0, 0.0, 200), (0.5, 30.0, 50.0, -1)],
    ids=["a negative base", "a cap below the base", "no rate at all", "a negative burst"],
)
def test_a_rate_limiter_refuses_settings_that_make_no_sense(
    base: float, cap: float, qps: float, burst: int
) -> None:
    with pytest.raises(ValueError, match="rate limiter needs"):
        workqueue.RateLimiter(base, cap, qps, burst)


# --- run_workers ---


@pytest.mark.parametrize(
    ("outcome", "expected"),
    [
        (Failed("boom"), (0, 1, 4.0, 3)),
        (workqueue.Result(), (0, 0, None, 0)),
        (workqueue.Result(requeue=True), (1, 0, None, 0)),
        (workqueue.Result(requeue_after=30.0), (0, 1, 30.0, 0)),
        (workqueue.Result(requeue_after=0.0), (1, 0, None, 0)),
        (workqueue.Result(requeue=True, requeue_after=30.0), (1, 0, None, 0)),
    ],
    ids=[
        "an exception re-adds the key after its backoff",
        "a success forgets the key",
        "requeue re-adds the key at once",
        "requeue_after schedules the key",
        "requeue_after of zero re-adds the key at once",
        "requeue wins over requeue_after",
    ],
)
def test_run_workers_requeues_as_the_reconcile_asks(
    outcome: workqueue.Result | Exception, expected: tuple[int, int, float | None, int]
) -> None:
    clock = Clock()
    limiter = workqueue.RateLimiter(base=1.0, cap=60.0, monotonic=clock)
    limiter.when("k")
    limiter.when("k")  # it failed twice before: a third failure waits 4 s
    seen: list[tuple[int, int, float | None, int]] = []
    errors: list[tuple[str, BaseException, float]] = []

    async def scenario() -> None:
        queue = workqueue.WorkQueue(rate_limiter=limiter, monotonic=clock)

        async def reconcile(key: str) -> workqueue.Result:
            if key == "probe":  # one worker: runs once "k" is through
                seen.append(
                    (len(queue), queue.delayed, queue.scheduled_at("k"), queue.num_requeues("k"))
                )
                queue.shut_down()
                return workqueue.Result()
            if isinstance(outcome, Exception):
                raise outcome
            return outcome

        queue.add("k")
        queue.add("probe")
        async with asyncio.timeout(5):
            await workqueue.run_workers(
                queue, reconcile, 1, on_error=lambda *error: errors.append(error)
            )

    asyncio.run(scenario())
    assert seen == [expected]  # (waiting, delayed, "k" due at, "k" requeues)
    assert errors == ([("k", outcome, 4.0)] if isinstance(outcome, Exception) else [])


def test_failures_back_off_and_a_success_forgets_them() -> None:
    queue = workqueue.WorkQueue(rate_limiter=workqueue.RateLimiter(base=0.01))
    requeues: list[int] = []
    errors: list[tuple[str, str, float]] = []

    async def reconcile(key: str) -> workqueue.Result:
        requeues.append(queue.num_requeues(key))
        if len(requeues) <= 2:
            raise Failed(f"attempt {len(requeues)}")
        queue.shut_down()
        return workqueue.Result()

    async def scenario() -> None:
        queue.add("k")
        async with asyncio.timeout(5):
            await workqueue.run_workers(
                queue, reconcile, 2, on_error=lambda k, e, d: errors.append((k, str(e), d))
            )

    asyncio.run(scenario())
    assert requeues == [0, 1, 2]
    assert queue.num_requeues("k") == 0
    assert [error[:2] for error in errors] == [("k", "attempt 1"), ("k", "attempt 2")]
    assert [error[2] for error in errors] == pytest.approx([0.01, 0.02], abs=0.005)


def test_a_failure_is_logged_when_no_on_error_is_given(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    limiter = workqueue.RateLimiter(base=2.0, monotonic=clock)
    queue = workqueue.WorkQueue("agents", rate_limiter=limiter, monotonic=clock)
    boom = Failed("boom")

    async def reconcile(key: str) -> workqueue.Result:
        if key == "k":
            raise boom
        queue.shut_down()
        return workqueue.Result()

    async def scenario() -> None:
        queue.add("k")
        queue.add("probe")
        async with asyncio.timeout(5):
            await workqueue.run_workers(queue, reconcile, 1)

    caplog.set_level(logging.WARNING, logger=workqueue.__name__)
    asyncio.run(scenario())
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    assert (
        record.getMessage() == "work queue 'agents': reconcile of k failed, retrying in 2 s: boom"
    )
    assert record.exc_info is not None
    assert record.exc_info[1] is boom


def test_run_workers_needs_a_worker() -> None:
    async def reconcile(key: str) -> workqueue.Result:
        raise AssertionError("never called")

    with pytest.raises(ValueError, match="at least one worker"):
        asyncio.run(workqueue.run_workers(workqueue.WorkQueue(), reconcile, 0))


def test_cancelling_run_workers_releases_the_key_being_reconciled() -> None:
    async def scenario() -> None:
        queue = workqueue.WorkQueue()
        started = asyncio.Event()

        async def reconcile(key: str) -> workqueue.Result:
            started.set()
            await asyncio.Event().wait()  # until cancelled
            raise AssertionError("not reached")

        queue.add("k")
        runner = asyncio.create_task(workqueue.run_workers(queue, reconcile, 2))
        async with asyncio.timeout(1):
            await started.wait()
        runner.cancel()
        with pytest.raises(asyncio.CancelledError):
            await runner
        assert queue.num_requeues("k") == 0  # cancelled is not failed
        queue.add("k")
        assert len(queue) == 1  # done() was called: the key is no longer held

    asyncio.run(scenario())


# --- getters that are cancelled ---


@pytest.mark.parametrize(
    "settle", [True, False], ids=["cancelled before the key comes", "cancelled as the key comes"]
)
def test_a_cancelled_getter_is_not_given_a_key(settle: bool) -> None:
    async def scenario() -> None:
        queue = workqueue.WorkQueue()
        first = asyncio.create_task(queue.get())
        second = asyncio.create_task(queue.get())
        await asyncio.sleep(0)  # both are waiting
        first.cancel()
        if settle:
            await asyncio.sleep(0)  # the first has left
        queue.add("k")
        async with asyncio.timeout(1):
            assert await second == "k"
        with pytest.raises(asyncio.CancelledError):
            await first

    asyncio.run(scenario())


def test_a_getter_woken_then_cancelled_passes_the_key_on() -> None:
    async def scenario() -> None:
        queue = workqueue.WorkQueue()
        first = asyncio.create_task(queue.get())
        second = asyncio.create_task(queue.get())
        await asyncio.sleep(0)  # both are waiting
        queue.add("k")  # wakes the first...
        first.cancel()  # ...which is cancelled before it takes the key
        async with asyncio.timeout(1):
            assert await second == "k"
        with pytest.raises(asyncio.CancelledError):
            await first

    asyncio.run(scenario())


# --- shutting down ---


def test_get_on_an_empty_shut_down_queue_raises() -> None:
    async def scenario() -> None:
        queue = workqueue.WorkQueue()
        assert not queue.shutting_down
        queue.shut_down()
        assert queue.shutting_down
        with pytest.raises(workqueue.ShutDown):
            await queue.get()

    asyncio.run(scenario())


def test_shut_down_wakes_the_waiting_getters() -> None:
    async def scenario() -> None:
        queue = workqueue.WorkQueue()
        getters = [asyncio.create_task(queue.get()) for _ in range(3)]
        await asyncio.sleep(0)  # all are waiting
        getters[0].cancel()  # and one is cancelled as the queue shuts down
        queue.shut_down()
        async with asyncio.timeout(1):
            results = await asyncio.gather(*getters, return_exceptions=True)
        assert [type(result) for result in results] == [
            asyncio.CancelledError,
            workqueue.ShutDown,
            workqueue.ShutDown,
        ]

    asyncio.run(scenario())


def test_adds_after_shut_down_are_ignored_and_delayed_keys_dropped() -> None:
    async def scenario() -> None:
        queue = workqueue.WorkQueue()
        queue.add("a")
        queue.add_after("later", 10.0)
        queue.shut_down()
        queue.add("b")
        queue.add_after("c", 0.01)
        queue.add_after("d", 0.0)
        queue.add_rate_limited("e")
        assert (len(queue), queue.delayed, queue.scheduled_at("later")) == (1, 0, None)
        assert await queue.get() == "a"  # what was waiting is still handed out
        with pytest.raises(workqueue.ShutDown):
            await queue.get()

    asyncio.run(scenario())


def test_shut_down_with_drain_waits_for_the_key_being_processed() -> None:
    reconciled: list[str] = []

    async def scenario() -> None:
        queue = workqueue.WorkQueue()
        started = asyncio.Event()
        release = asyncio.Event()

        async def reconcile(key: str) -> workqueue.Result:
            started.set()
            await release.wait()
            reconciled.append(key)
            return workqueue.Result()

        queue.add("k")
        queue.add("waiting")
        runner = asyncio.create_task(workqueue.run_workers(queue, reconcile, 1))
        async with asyncio.timeout(1):
            await started.wait()
        queue.add("k")  # again, while it is processed
        drain = asyncio.create_task(queue.shut_down_with_drain())
        for _ in range(5):
            await asyncio.sleep(0)
        assert not drain.done()  # "k" is still being processed
        queue.add("late")
        assert len(queue) == 0  # "waiting" dropped, "late" ignored
        release.set()
        async with asyncio.timeout(1):
            await drain
            await runner

    asyncio.run(scenario())
    assert reconciled == ["k"]  # neither the dropped keys nor "k" once more


def test_shut_down_with_drain_returns_at_once_when_nothing_is_processed() -> None:
    async def scenario() -> None:
        queue = workqueue.WorkQueue()
        queue.add("waiting")
        async with asyncio.timeout(1):
            await queue.shut_down_with_drain()
        assert len(queue) == 0
        with pytest.raises(workqueue.ShutDown):
            await queue.get()

    asyncio.run(scenario())


# --- the urgent lane: observed changes before new spawns ---


def test_urgent_keys_are_handed_out_before_the_others() -> None:
    async def order() -> list[str]:
        queue = workqueue.WorkQueue()
        for key in ("new-1", "new-2"):
            queue.add(key)
        queue.add("pod-started", urgent=True)
        assert len(queue) == 3
        return [await queue.get() for _ in range(3)]

    assert asyncio.run(order()) == ["pod-started", "new-1", "new-2"]


def test_a_waiting_key_made_urgent_moves_up_once() -> None:
    async def handed_out() -> tuple[list[str], int]:
        queue = workqueue.WorkQueue()
        for key in ("a", "b", "c"):
            queue.add(key)
        queue.add("c", urgent=True)
        assert len(queue) == 3, "moving up is not a second entry"
        keys = [await queue.get() for _ in range(3)]
        for key in keys:
            queue.done(key)
        return keys, len(queue)

    keys, left = asyncio.run(handed_out())
    assert keys == ["c", "a", "b"]
    assert left == 0, "the entry left behind in the other lane is never handed out"


def test_a_key_made_urgent_while_processing_goes_back_urgent() -> None:
    async def order() -> list[str]:
        queue = workqueue.WorkQueue()
        queue.add("a")
        held = await queue.get()
        queue.add("b")
        queue.add("a", urgent=True)
        queue.done(held)
        return [await queue.get() for _ in range(2)]

    assert asyncio.run(order()) == ["a", "b"]


def test_an_urgent_key_requeued_after_a_conflict_stays_urgent() -> None:
    order: list[str] = []

    async def scenario() -> None:
        queue = workqueue.WorkQueue()

        async def reconcile(key: str) -> workqueue.Result:
            order.append(key)
            if key == "kill" and order.count("kill") == 1:
                for i in range(3):
                    queue.add(f"new-{i}")
                return workqueue.Result(requeue=True)  # decided on a stale read
            if len(order) == 5:
                queue.shut_down()
            return workqueue.Result()

        queue.add("kill", urgent=True)
        async with asyncio.timeout(5):
            await workqueue.run_workers(queue, reconcile, 1)

    asyncio.run(scenario())
    assert order[:2] == ["kill", "kill"]


# --- the slow lane's limit: workers kept for observed changes ---


def test_a_slow_limit_keeps_workers_free_for_urgent_keys() -> None:
    """Two workers, at most one on the slow lane: while a slow pass hangs, the second
    worker takes urgent keys at once and never a second slow one."""
    ran: list[str] = []

    async def scenario() -> None:
        queue = workqueue.WorkQueue(slow_limit=1)
        spawning = asyncio.Event()
        release = asyncio.Event()

        async def reconcile(key: str) -> workqueue.Result:
            ran.append(key)
            if key == "new-1":
                spawning.set()
                await release.wait()  # a spawn that takes its time
            if key == "pod-started":
                release.set()
            if len(ran) == 4:
                queue.shut_down()
            return workqueue.Result()

        for key in ("new-1", "new-2", "new-3"):
            queue.add(key)
        async with asyncio.timeout(5), asyncio.TaskGroup() as group:
            group.create_task(workqueue.run_workers(queue, reconcile, 2))
            await spawning.wait()
            await asyncio.sleep(0)  # the other worker has come back for a key
            assert ran == ["new-1"], "the second worker must not take a slow key"
            queue.add("pod-started", urgent=True)

    asyncio.run(scenario())
    assert ran == ["new-1", "pod-started", "new-2", "new-3"]


def test_a_slow_key_waiting_for_a_place_gets_it_when_a_slow_pass_ends() -> None:
    async def handed_out() -> list[str]:
        queue = workqueue.WorkQueue(slow_limit=1)
        queue.add("a")
        queue.add("b")
        first = await queue.get()
        waiting = asyncio.create_task(queue.get())
        await asyncio.sleep(0)
        assert not waiting.done(), "a second slow key while the one place is taken"
        queue.done(first)
        async with asyncio.timeout(5):
            second = await waiting
        return [first, second]

    assert asyncio.run(handed_out()) == ["a", "b"]


def test_an_urgent_key_requeued_holds_no_slow_place() -> None:
    async def handed_out() -> list[str]:
        queue = workqueue.WorkQueue(slow_limit=1)
        queue.add("kill", urgent=True)
        queue.add("new-1")
        queue.add("new-2")
        kill = await queue.get()
        first_new = await queue.get()
        queue.done(kill)  # an urgent pass ending frees no slow place
        queue.add(kill, urgent=True)
        again = await queue.get()
        assert len(queue) == 1, "new-2 waits for new-1's place"
        queue.done(first_new)
        async with asyncio.timeout(5):
            return [kill, first_new, again, await queue.get()]

    assert asyncio.run(handed_out()) == ["kill", "new-1", "kill", "new-2"]


def test_a_slow_limit_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="slow_limit must be at least 1, got 0"):
        workqueue.WorkQueue(slow_limit=0)


def test_a_waiting_key_made_urgent_wakes_a_worker_the_slow_limit_kept_asleep() -> None:
    async def handed_out() -> str:
        queue = workqueue.WorkQueue(slow_limit=1)
        queue.add("spawning")
        queue.add("new-agent")
        await queue.get()  # the one slow place is taken
        idle = asyncio.create_task(queue.get())
        await asyncio.sleep(0)
        assert not idle.done(), "the slow lane is full: the idle worker sleeps"
        queue.add("new-agent", urgent=True)  # e.g. a kill of an agent not yet spawned
        async with asyncio.timeout(5):
            return await idle

    assert asyncio.run(handed_out()) == "new-agent"
