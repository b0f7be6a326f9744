"""The Grafana dashboard shows every metric the operator exports, and only metrics it exports."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from controller.metrics import GpuVmSample, Metrics
from controller.power import PowerState

DASHBOARD = Path(__file__).parents[2] / "deploy" / "grafana" / "gpuvm-operator-dashboard.json"
# A PromQL identifier that starts with our prefix: metric names only (labels and functions never do).
METRIC = re.compile(r"\bgpuvm_[a-zA-Z0-9_]+")


def exported_families() -> dict[str, str]:
    """Family name -> type, straight from the operator's registry (the per-GpuVm collector included)."""
    metrics = Metrics()
    sample = GpuVmSample(namespace="ml", name="g", vm="vm-1", size="Standard_NC24ads_A100_v4",
                         power_state=PowerState.RUNNING, billed_seconds=1.0)
    metrics.watch(lambda: iter([sample]))
    return {family.name: family.type for family in metrics.registry.collect()}


def exposed_names(families: dict[str, str]) -> set[str]:
    """The series names Prometheus stores for each family."""
    names: set[str] = set()
    for name, kind in families.items():
        if kind == "counter":
            names |= {f"{name}_total", f"{name}_created"}
        elif kind == "histogram":
            names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count", f"{name}_created"}
        else:
            names.add(name)
    return names


def base_name(series: str, families: dict[str, str]) -> str | None:
    for name in families:
        if series == name or (series.startswith(name + "_") and series[len(name) + 1:] in ("total", "created", "bucket", "sum", "count")):
            return name
    return None


def walk_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from walk_panels(panel.get("panels") or [])


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


@pytest.fixture(scope="module")
def expressions(dashboard: dict[str, Any]) -> list[str]:
    exprs = [t["expr"] for p in walk_panels(dashboard["panels"]) for t in p.get("targets") or [] if t.get("expr")]
    assert exprs, "the dashboard has no PromQL expressions"
    return exprs


def test_metric_families_are_the_ones_the_operator_defines() -> None:
    """The registry (what /metrics serves) and the names written in controller/metrics.py agree,
    so the checks below cover every metric the module defines."""
    source = (Path(__file__).parents[2] / "controller" / "metrics.py").read_text()
    defined = {re.sub(r"_total$", "", name) for name in re.findall(r'"(gpuvm_[a-z0-9_]+)"', source)}
    families = exported_families()
    assert len(families) >= 9  # a guard against an empty registry making the checks below vacuous
    assert set(families) == defined


def test_every_exported_metric_is_on_some_panel(expressions: list[str]) -> None:
    families = exported_families()
    used = {base_name(m, families) for e in expressions for m in METRIC.findall(e)}
    missing = sorted(set(families) - used)
    assert not missing, f"metrics without a panel: {missing}"


def test_every_expression_references_only_exported_series(expressions: list[str]) -> None:
    allowed = exposed_names(exported_families())
    unknown = sorted({m for e in expressions for m in METRIC.findall(e)} - allowed)
    assert not unknown, f"panels query series the operator does not export: {unknown}"


def test_histograms_are_read_through_buckets_sums_or_counts(expressions: list[str]) -> None:
    families = exported_families()
    for expr in expressions:
        for series in METRIC.findall(expr):
            name = base_name(series, families)
            if name is not None and families[name] == "histogram":
                assert series != name, f"{expr!r} uses the histogram {name} without _bucket/_sum/_count"


def test_dashboard_shape(dashboard: dict[str, Any]) -> None:
    assert 36 <= dashboard["schemaVersion"] <= 41
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    assert variables["namespace"]["type"] == "query"
    assert "gpuvm_" in json.dumps(variables["namespace"]["query"])
    float(variables["hourly_price"]["query"])  # a number, so cost = hours * $hourly_price is valid PromQL
    panels = [p for p in walk_panels(dashboard["panels"]) if p["type"] != "row"]
    ids = [p["id"] for p in walk_panels(dashboard["panels"])]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in panels:
        assert panel["datasource"]["uid"] == "${datasource}", f"panel {panel['title']!r} must use the datasource variable"
        grid = panel["gridPos"]
        assert 0 <= grid["x"] and grid["x"] + grid["w"] <= 24


def test_cost_panel_uses_billed_hours_and_the_price_variable(expressions: list[str]) -> None:
    cost = [e for e in expressions if "$hourly_price" in e]
    assert cost and all("gpuvm_billed_seconds_total" in e and "/ 3600" in e for e in cost)


def test_namespace_variable_filters_per_gpuvm_panels(expressions: list[str]) -> None:
    per_gpuvm = [e for e in expressions if "gpuvm_power_state" in e or "gpuvm_billed_seconds" in e]
    assert per_gpuvm and all('namespace=~"$namespace"' in e for e in per_gpuvm)


def test_brackets_balance(expressions: list[str]) -> None:
    for expr in expressions:
        for opening, closing in ("()", "[]", "{}"):
            assert expr.count(opening) == expr.count(closing), f"unbalanced {opening}{closing} in {expr!r}"
