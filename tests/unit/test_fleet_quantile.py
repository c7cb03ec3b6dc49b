"""The benchmark's reading of the API server's latency histogram: the bucket bound, and the
estimate inside the bucket that Prometheus's ``histogram_quantile`` makes."""

from __future__ import annotations

import math

import pytest

from benchmarks.fleet import interpolated, quantile

INF = math.inf


def test_the_estimate_is_linear_inside_the_bucket_the_rank_falls_in() -> None:
    # 40 requests under 0.1 s, 60 between 0.1 and 0.2 s: the 99th of 100 is the 59th of the
    # 60 in (0.1, 0.2], 59/60 of the way across it.
    after = {0.1: 40.0, 0.2: 100.0, 0.4: 100.0, INF: 100.0}
    assert quantile({}, after, 0.99) == 0.2
    assert interpolated({}, after, 0.99) == pytest.approx(0.1 + 0.1 * 59 / 60)
    # The first bucket starts at 0.
    assert interpolated({}, after, 0.2) == pytest.approx(0.1 * 20 / 40)


def test_only_the_observations_between_the_two_scrapes_count() -> None:
    before = {0.1: 1000.0, 0.2: 1000.0, INF: 1000.0}  # an earlier burst, all fast
    after = {0.1: 1000.0, 0.2: 1010.0, INF: 1010.0}  # this one's 10, all in (0.1, 0.2]
    assert interpolated(before, after, 0.5) == pytest.approx(0.15)
    assert quantile(before, after, 0.5) == 0.2


def test_in_the_open_bucket_the_highest_finite_bound_and_nothing_observed_is_nan() -> None:
    after = {0.1: 1.0, 0.2: 1.0, INF: 10.0}
    assert interpolated({}, after, 0.99) == 0.2
    assert math.isnan(interpolated({}, {0.1: 0.0, INF: 0.0}, 0.99))
    assert math.isnan(interpolated({}, {}, 0.99))
