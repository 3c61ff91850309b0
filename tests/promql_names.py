"""Metric names used by the Grafana dashboard and the Prometheus rules (for the deploy tests).

Expressions are parsed with ``promql-parser`` (a real PromQL parser: a syntax error
fails the test), after Grafana's template variables are replaced by values
Prometheus would accept.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import promql_parser
import yaml

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "deploy/grafana/dashboards/edge-relay.json"
RULES = ROOT / "deploy/prometheus/alerts.yml"

#: Series Prometheus makes itself (not exported by our processes).
SYNTHETIC = {"up", "ALERTS", "ALERTS_FOR_STATE"}

_GRAFANA_VARS = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "1h"}


def grafana_to_promql(expr: str) -> str:
    """Replace Grafana's interval variables; ``$var`` inside label matchers stays a string."""
    for k, v in _GRAFANA_VARS.items():
        expr = expr.replace(k, v)
    if "$" in re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr):
        # A variable outside a quoted label value would not be valid PromQL.
        raise ValueError(f"unexpected Grafana variable in {expr!r}")
    return expr


def metric_names(expr: str) -> set[str]:
    """Names of every vector selector in a PromQL expression (``ValueError`` if invalid)."""
    tree = promql_parser.parse(expr)
    names: set[str] = set()

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            if node.name:
                names.add(node.name)
            for m in node.matchers.matchers:
                if m.name == "__name__":
                    names.add(m.value)

    promql_parser.walk(tree, visit)
    return names


def dashboard_exprs() -> list[tuple[str, str]]:
    """``(panel title, PromQL)`` of every target in the dashboard, variables replaced."""
    dash = json.loads(DASHBOARD.read_text())
    out = []
    for panel in dash["panels"]:
        for t in panel.get("targets", []):
            out.append((panel["title"], grafana_to_promql(t["expr"])))
    for var in dash.get("templating", {}).get("list", []):
        m = re.fullmatch(r"label_values\((\w+),\s*\w+\)", var.get("definition", ""))
        if m:
            out.append((f"variable {var['name']}", m.group(1)))
    return out


def rule_exprs() -> list[tuple[str, str]]:
    """``(alert name, PromQL)`` of every alerting rule."""
    doc = yaml.safe_load(RULES.read_text())
    return [(r["alert"], r["expr"]) for g in doc["groups"] for r in g["rules"]]


def used_metrics() -> dict[str, set[str]]:
    """Metric name -> where it is used (panel titles / alert names)."""
    used: dict[str, set[str]] = {}
    for where, expr in [*dashboard_exprs(), *rule_exprs()]:
        for name in metric_names(expr):
            used.setdefault(name, set()).add(where)
    return used
