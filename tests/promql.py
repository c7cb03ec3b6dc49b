"""The metric names a PromQL expression reads, and those a /metrics page exports.

Enough of PromQL for the operator's own rules and dashboard: label matchers, ranges,
grouping clauses, strings and Grafana's variables are set aside; what remains that is
neither a function, a keyword nor a number is a metric name.
"""

from __future__ import annotations

import re
from typing import Final

KEYWORDS: Final = frozenset(
    {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right"}
    | {"bool", "offset", "inf", "nan", "le"}
)
_STRING: Final = re.compile(r'"(?:[^"\\]|\\.)*"' r"|'(?:[^'\\]|\\.)*'" r"|`[^`]*`")
_SET_ASIDE: Final = re.compile(
    r"\{[^}]*\}"  # label matchers
    r"|\[[^\]]*\]"  # ranges and subqueries
    r"|\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)"  # grouping labels
    r"|\$\w+"  # Grafana's variables
    r"|(?<![\w:])\d[\w.]*"  # numbers and durations (5m, 0.99, 1e3)
)
_NAME: Final = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*(?!\s*\()")
_FUNCTION: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\s*\(")
# The series a metric family of each type exposes.
_SUFFIXES: Final = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("_sum", "_count", "_created"),
    "gauge": ("",),
    "untyped": ("",),
    "info": ("_info",),
}


def metric_names(expr: str) -> set[str]:
    """The metric names ``expr`` selects."""
    rest = _SET_ASIDE.sub(" ", _STRING.sub(" ", expr))
    rest = _FUNCTION.sub(" ", rest)
    return {name for name in _NAME.findall(rest) if name.lower() not in KEYWORDS}


def exported_series(page: str) -> set[str]:
    """The series names a Prometheus text page declares with ``# TYPE``, samples or not."""
    names: set[str] = set()
    for line in page.splitlines():
        if line.startswith("# TYPE "):
            _, _, family, kind = line.split(" ", 3)
            base = family.removesuffix("_total") if kind == "counter" else family
            names.update(base + suffix for suffix in _SUFFIXES[kind])
    return names
