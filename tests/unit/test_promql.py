"""The PromQL reader the monitoring tests rely on: it finds every metric, and only metrics."""

from __future__ import annotations

import pytest

from tests.promql import exported_series, metric_names


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ("absent(agent_operator_leader)", {"agent_operator_leader"}),
        (
            "histogram_quantile(0.99, sum by (le) (rate(lag_seconds_bucket[5m]))) > 5",
            {"lag_seconds_bucket"},
        ),
        (
            'max(agents{phase="Spawning"}) > 0 and (sum(increase(t_total{from_phase="a"}[15m]))'
            " or vector(0)) == 0",
            {"agents", "t_total"},
        ),
        ("deriv(max(depth)[15m:1m]) > 0", {"depth"}),
        ('sum by (pod) (q{namespace=~"$namespace"}[$__rate_interval])', {"q"}),
        ("a / on (pod) group_left (phase) b offset 5m", {"a", "b"}),
        ("label_replace(up_now, 'dst', `$1`, 'src', '(.*)')", {"up_now"}),
    ],
)
def test_metric_names_are_what_the_expression_selects(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def test_exported_series_follow_each_familys_type() -> None:
    page = "\n".join(
        (
            "# HELP x_total things",
            "# TYPE x_total counter",
            "# TYPE lag histogram",
            "# TYPE up_now gauge",
            "up_now 1",
        )
    )
    assert exported_series(page) == {
        "x_total",
        "x_created",
        "lag_bucket",
        "lag_sum",
        "lag_count",
        "lag_created",
        "up_now",
    }
