"""Who gets the next slot: the oldest first, as many as there are free slots."""

from __future__ import annotations

import pytest

from controller import admission, store

LINE = [
    store.Waiting("b/young", "2026-01-01T10:00:03Z"),
    store.Waiting("a/old", "2026-01-01T10:00:01Z"),
    store.Waiting("c/middle", "2026-01-01T10:00:02Z"),
    store.Waiting("a/also-old", "2026-01-01T10:00:01Z"),
]


@pytest.mark.parametrize(
    ("held", "limit", "up"),
    [
        (0, 0, ["b/young", "a/old", "c/middle", "a/also-old"]),
        (3, 3, []),
        (4, 3, []),
        (2, 3, ["a/also-old"]),
        (0, 2, ["a/also-old", "a/old"]),
        (0, 10, ["a/also-old", "a/old", "c/middle", "b/young"]),
    ],
    ids=[
        "no limit: everyone",
        "every slot held: no one",
        "more held than the limit (it was lowered): no one",
        "one free slot: the oldest, ties broken by key",
        "two free slots: the two oldest",
        "more slots than waiting: all of them, oldest first",
    ],
)
def test_next_up(held: int, limit: int, up: list[str]) -> None:
    assert admission.next_up(LINE, held, limit) == up


@pytest.mark.parametrize(
    ("key", "held", "limit", "admitted"),
    [
        ("b/young", 0, 0, True),
        ("a/also-old", 2, 3, True),
        ("a/old", 2, 3, False),
        ("c/middle", 0, 3, True),
        ("b/young", 0, 3, False),
    ],
    ids=[
        "no limit admits anyone",
        "the oldest gets the one free slot",
        "the next oldest waits for the one free slot",
        "third oldest fits in three slots",
        "the youngest waits behind three older ones",
    ],
)
def test_admits(key: str, held: int, limit: int, admitted: bool) -> None:
    assert admission.admits(key, LINE, held, limit) is admitted
