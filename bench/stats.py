"""The one percentile every bench reports (benches run as scripts: `bench/` is on sys.path)."""

from __future__ import annotations

import statistics


def percentile(values: list[float], q: int) -> float:
    """The ``q``-th percentile, inclusive method; a single value is every percentile."""
    if len(values) < 2:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]
