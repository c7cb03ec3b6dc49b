from __future__ import annotations

import itertools

import pytest

from tests.helpers import WaitTimeout, wait_for


def test_returns_the_first_truthy_value() -> None:
    values = iter([None, 0, "", "found"])
    assert wait_for(lambda: next(values), timeout=5, interval=0) == "found"


def test_reports_the_last_value_seen_when_time_runs_out() -> None:
    counter = itertools.count(start=-3)
    with pytest.raises(WaitTimeout, match=r"waiting for the count; last saw: \[\]"):
        # Truthy while negative would stop early; so map every value to an empty list.
        wait_for(lambda: [] if next(counter) < 1000 else [1], timeout=0.01, what="the count")


def test_reports_the_last_exception_seen() -> None:
    def broken() -> bool:
        raise ConnectionError("refused")

    with pytest.raises(WaitTimeout, match=r"last saw: ConnectionError\('refused'\)"):
        wait_for(broken, timeout=0.01, interval=0)
