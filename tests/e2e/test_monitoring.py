"""Operator pictures (deploy/monitoring): the Grafana dashboard and the alert rules parse, use only
metrics and labels the server exports, and the PrometheusRule of the prod overlay equals the
plain Prometheus rules file."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase
from seqlens.metrics import Metrics

promql = pytest.importorskip("promql_parser", reason="promql-parser (a test dependency) is not installed")

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy/monitoring/grafana-dashboard.json"
ALERTS = ROOT / "deploy/monitoring/alerts.yaml"
RULE = ROOT / "deploy/k8s/overlays/prod/prometheusrule.yaml"
_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}


def exported() -> dict[str, set[str]]:
    """Series name -> label names, as the server's registry exposes them."""
    series: dict[str, set[str]] = {}
    metrics = Metrics()
    for collector in vars(metrics).values():
        if not isinstance(collector, MetricWrapperBase):
            continue
        for fam in collector.describe():
            labels = set(getattr(collector, "_labelnames", ()))
            for suffix in _SUFFIXES.get(fam.type, ("",)):
                series[fam.name + suffix] = labels | ({"le"} if suffix == "_bucket" else set())
    return series


def dashboard_exprs() -> list[str]:
    board = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in board["panels"] for t in p["targets"]]
    exprs += [v["query"] for v in board["templating"]["list"] if v["type"] == "query"]
    return exprs


def rule_exprs(groups: dict[str, Any]) -> list[str]:
    return [r["expr"] for g in groups["groups"] for r in g["rules"]]


def _check(expr: str, series: dict[str, set[str]]) -> None:
    text = expr.replace("$model", ".*")
    if text.startswith("label_values("):  # a Grafana template function, not PromQL
        text = re.sub(r"^label_values\(([\w]+),\s*\w+\)$", r"\1", text)
    promql.parse(text)  # raises ValueError on a syntax error
    names = set(re.findall(r"\bseqlens_\w+", text))
    assert names, f"no seqlens metric in {expr!r}"
    for name in names:
        assert name in series, f"{name} (in {expr!r}) is not exported by the server"
    labels = set().union(*(series[n] for n in names))
    for group in re.findall(r"\bby \(([^)]*)\)", text):
        for label in (x.strip() for x in group.split(",")):
            assert label in labels, f"label {label!r} of {expr!r} is not on {sorted(names)}"
    for label in re.findall(r"(\w+)\s*(?:=~|!~|!=|=)\s*\"", text):
        assert label in labels, f"matcher label {label!r} of {expr!r} is not on {sorted(names)}"


def test_dashboard_queries_parse_and_use_exported_metrics() -> None:
    series = exported()
    exprs = dashboard_exprs()
    assert len(exprs) >= 10
    for expr in exprs:
        _check(expr, series)
    used = {n for e in exprs for n in re.findall(r"\bseqlens_\w+", e)}
    # latency by RPC and stage, queue/in flight, batch sizes, quality, readiness
    for needed in ("seqlens_request_duration_seconds_bucket", "seqlens_stage_duration_seconds_bucket",
                   "seqlens_inflight_requests", "seqlens_batch_size_bucket",
                   "seqlens_attribution_relative_delta_bucket", "seqlens_model_ready"):
        assert needed in used, needed


def test_dashboard_is_importable_grafana_json() -> None:
    board = json.loads(DASHBOARD.read_text())
    assert board["uid"] and board["title"] and board["schemaVersion"] >= 30
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    for p in board["panels"]:
        assert p["datasource"]["uid"] == "${datasource}" and p["targets"], p["title"]
        assert {"x", "y", "w", "h"} <= set(p["gridPos"])


def test_alert_rules_are_well_formed_and_use_exported_metrics() -> None:
    groups = yaml.safe_load(ALERTS.read_text())
    series = exported()
    names = []
    for g in groups["groups"]:
        assert g["name"] and g["rules"]
        for r in g["rules"]:
            assert set(r) <= {"alert", "expr", "for", "labels", "annotations"}, r
            assert re.fullmatch(r"[A-Z][A-Za-z0-9]+", r["alert"])
            assert re.fullmatch(r"\d+[smh]", r["for"])
            assert r["labels"]["severity"] in {"page", "warn"}
            assert r["annotations"]["summary"]
            _check(r["expr"], series)
            names.append(r["alert"])
    assert {"SeqlensHighErrorRatio", "SeqlensHighLatencyP99", "SeqlensModelNotReady", "SeqlensShedding"} <= set(names)


def test_prometheus_rule_equals_the_rules_file() -> None:
    rule = yaml.safe_load(RULE.read_text())
    assert rule["apiVersion"] == "monitoring.coreos.com/v1" and rule["kind"] == "PrometheusRule"
    assert rule["spec"] == yaml.safe_load(ALERTS.read_text())
    prod = yaml.safe_load((ROOT / "deploy/k8s/overlays/prod/kustomization.yaml").read_text())
    assert "prometheusrule.yaml" in prod["resources"]
