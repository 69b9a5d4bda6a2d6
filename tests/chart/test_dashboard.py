"""The Grafana dashboard graphs metrics the code really exports, under their real names."""

from __future__ import annotations

import importlib
import json
import re

from prometheus_client import REGISTRY
from tests.chart.support import CHART

from paddock.proxy.audit import Audit

DASHBOARD = json.loads((CHART / "dashboards" / "paddock.json").read_text())
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


def exported_series() -> set[str]:
    """Series names of the operator, gateway and harness metrics, and of the proxy's /metrics."""
    for module in (
        "paddock.operator.metrics",
        "paddock.gateway.metrics",
        "paddock.harness.metrics",
    ):
        importlib.import_module(module)
    names = {
        family.name + suffix
        for family in REGISTRY.collect()
        if family.name.startswith("paddock_")
        for suffix in SUFFIXES.get(family.type, ("",))
    }
    for line in Audit().metrics().splitlines():
        if line.startswith("# TYPE "):
            names.add(line.split()[2])
    return names


def test_every_queried_metric_exists() -> None:
    exported = exported_series()
    panels = [p for p in DASHBOARD["panels"] if p["type"] != "row"]
    queried = {
        name
        for panel in panels
        for target in panel["targets"]
        for name in re.findall(r"\bpaddock_[a-z_]+", target["expr"])
    }
    assert queried, "the dashboard queries nothing"
    assert queried <= exported, f"not exported by any component: {sorted(queried - exported)}"
    # Each component's metrics are on the dashboard.
    for prefix in ("operator", "gateway", "harness", "proxy"):
        assert any(name.startswith(f"paddock_{prefix}_") for name in queried), prefix


def test_the_dashboard_is_well_formed() -> None:
    assert DASHBOARD["uid"] == "paddock"
    ids = [p["id"] for p in DASHBOARD["panels"]]
    assert len(ids) == len(set(ids))
    variables = {v["name"]: v for v in DASHBOARD["templating"]["list"]}
    assert variables["datasource"]["query"] == "prometheus"
    for panel in DASHBOARD["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert all(t["expr"] and t["refId"] for t in panel["targets"]), panel["title"]
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24, panel["title"]
