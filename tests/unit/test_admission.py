"""Who gets the next slot: oldest first within a namespace, the fewest-held namespace first
between them, under the operator's limit and each namespace's cap."""

from __future__ import annotations

import pytest

from controller import admission, store
from controller.admission import Limits

LINE = [
    store.Waiting("b/young", "2026-01-01T10:00:03Z"),
    store.Waiting("a/old", "2026-01-01T10:00:01Z"),
    store.Waiting("c/middle", "2026-01-01T10:00:02Z"),
    store.Waiting("a/also-old", "2026-01-01T10:00:01Z"),
]


def held(count: int, namespace: str = "z") -> set[str]:
    return {f"{namespace}/running-{i}" for i in range(count)}


@pytest.mark.parametrize(
    ("holding", "limit", "up"),
    [
        (0, 0, ["b/young", "a/old", "c/middle", "a/also-old"]),
        (3, 3, []),
        (4, 3, []),
        (2, 3, ["a/also-old"]),
        (0, 2, ["a/also-old", "c/middle"]),
        (0, 10, ["a/also-old", "c/middle", "b/young", "a/old"]),
    ],
    ids=[
        "no limit: everyone",
        "every slot held: no one",
        "more held than the limit (it was lowered): no one",
        "one free slot: the oldest, ties broken by key",
        "two free slots: the oldest of each namespace before a second of one",
        "more slots than waiting: all of them, one namespace at a time",
    ],
)
def test_next_up_under_the_operators_limit(holding: int, limit: int, up: list[str]) -> None:
    assert admission.next_up(LINE, held(holding), Limits(limit)) == up


def test_a_namespace_never_goes_over_its_cap() -> None:
    line = [store.Waiting(f"a/{i}", f"2026-01-01T10:00:0{i}Z") for i in range(5)]
    assert admission.next_up(line, held(1, "a"), Limits(0, {"a": 3})) == ["a/0", "a/1"]
    assert admission.next_up(line, held(3, "a"), Limits(10, {"a": 3})) == []
    # Other namespaces are not capped by a's annotation.
    line.append(store.Waiting("b/0", "2026-01-01T10:00:09Z"))
    assert admission.next_up(line, held(3, "a"), Limits(0, {"a": 3})) == ["b/0"]


def test_the_fewest_held_namespace_gets_the_free_slot_first() -> None:
    # a holds 3, b holds 1: b's young agent goes before a's older ones.
    line = [
        store.Waiting("a/old", "2026-01-01T10:00:00Z"),
        store.Waiting("b/young", "2026-01-01T10:00:05Z"),
    ]
    holding = held(3, "a") | held(1, "b")
    assert admission.next_up(line, holding, Limits(5)) == ["b/young"]
    assert admission.next_up(line, holding, Limits(6)) == ["b/young", "a/old"]


def test_two_namespaces_share_the_global_limit_evenly() -> None:
    line = [store.Waiting(f"{ns}/{i}", f"2026-01-01T10:00:0{i}Z") for ns in "ab" for i in range(5)]
    up = admission.next_up(line, set(), Limits(4, {"a": 2, "b": 3}))
    assert sorted(up) == ["a/0", "a/1", "b/0", "b/1"]


@pytest.mark.parametrize(
    ("key", "holding", "limits", "admitted"),
    [
        ("b/young", 0, Limits(), True),
        ("a/also-old", 2, Limits(3), True),
        ("a/old", 2, Limits(3), False),
        ("c/middle", 0, Limits(3), True),
        ("a/old", 0, Limits(0, {"a": 1}), False),
        ("b/young", 0, Limits(0, {"a": 1}), True),
    ],
    ids=[
        "no limit admits anyone",
        "the oldest gets the one free slot",
        "the next oldest waits for the one free slot",
        "three slots: the oldest of each of three namespaces",
        "a cap of one: the second of its namespace waits",
        "a cap on another namespace does not hold this one",
    ],
)
def test_admits(key: str, holding: int, limits: Limits, admitted: bool) -> None:
    assert admission.admits(key, LINE, held(holding), limits) is admitted


def test_why_waiting_names_the_limit_that_holds() -> None:
    ann = admission.ANNOTATION
    by_cap = f"waiting for a slot: namespace a allows 2 agents at once ({ann})"
    by_operator = "waiting for a slot: 4 agents may run at once (MAX_CONCURRENT_AGENTS)"
    me = store.Waiting("a/x", "2026-01-01T10:00:05Z")
    older = store.Waiting("a/older", "2026-01-01T10:00:01Z")
    assert admission.why_waiting("a/x", [me], {"a/1", "a/2"}, Limits(4, {"a": 2})) == by_cap
    assert (
        admission.why_waiting("a/x", [me], {"b/1", "b/2", "b/3", "a/1"}, Limits(4, {"a": 2}))
        == by_operator
    )
    assert admission.why_waiting("a/x", [me], set(), Limits(0, {"a": 2})) == by_cap
    # One running and one older waiting fill a cap of 2, though the operator has room.
    assert (
        admission.why_waiting("a/x", [me, older], {"a/1"}, Limits(10, {"a": 2}))
        == "waiting for a slot: namespace a allows 2 agents at once "
        f"({ann})"
    )
    # Two free under the operator's 4, three under a cap of 3, nine older agents of the
    # namespace waiting: the operator's limit holds it, and says so whether 0, 1 or 2 of
    # those nine hold their slots yet (their passes run beside this one's).
    cap_3 = f"waiting for a slot: namespace a allows 3 agents at once ({ann})"
    elders = [store.Waiting(f"a/{i}", "2026-01-01T10:00:01Z") for i in range(9)]
    for promised in ({""}, {"a/0"}, {"a/0", "a/1"}):
        held = {"b/1", "b/2"} | (promised - {""})
        said = admission.why_waiting("a/x", [*elders, me], held, Limits(4, {"a": 3}))
        assert said == by_operator, (promised, said)
    # Room for as many under the cap as under the operator: the cap is named.
    assert admission.why_waiting("a/x", [*elders, me], {"b/1"}, Limits(4, {"a": 3})) == cap_3
    # One free slot, and the older agent of its namespace would fill its cap, but b holds
    # fewer and has one waiting: b's agent gets the slot, so the operator's limit holds it.
    b_waiting = store.Waiting("b/w", "2026-01-01T10:00:09Z")
    held = {"a/1", "a/2", "b/1"}
    line = [older, me, b_waiting]
    assert admission.next_up(line, held, Limits(4, {"a": 3})) == ["b/w"]
    assert admission.why_waiting("a/x", line, held, Limits(4, {"a": 3})) == by_operator
    # Without b's agent waiting the slot is the older one's, which fills the cap of 3.
    assert admission.why_waiting("a/x", [older, me], held, Limits(4, {"a": 3})) == cap_3
    # No cap at all: only the operator's limit can hold it.
    assert admission.why_waiting("a/x", [older, me], {"b/1"}, Limits(2, {})) == (
        "waiting for a slot: 2 agents may run at once (MAX_CONCURRENT_AGENTS)"
    )


def test_an_agent_promised_a_slot_is_not_chosen_again() -> None:
    # a/failed's Pod creation failed and is retried: it holds its promised slot meanwhile.
    line = [
        store.Waiting("a/failed", "2026-01-01T10:00:00Z"),
        store.Waiting("a/young", "2026-01-01T10:00:05Z"),
    ]
    assert admission.next_up(line, {"a/failed"}, Limits(0, {"a": 2})) == ["a/young"]


@pytest.mark.parametrize(
    ("value", "cap", "bad"),
    [(None, None, False), ("3", 3, False), (" 2 ", 2, False)]
    + [(v, None, True) for v in ("0", "-1", "two", "1.5", "", "²", "١٢", "9" * 5000)],
)
def test_namespace_cap_from_its_annotation(value: str | None, cap: int | None, bad: bool) -> None:
    found, problem = admission.namespace_cap(value)
    assert found == cap
    assert bool(problem) is bad
    if bad:
        shown = value if len(value or "") <= 64 else f"{(value or '')[:61]}..."
        assert problem.startswith(f"{admission.ANNOTATION}={shown!r} is not a whole number")
