"""docker-compose.yml, the Prometheus config and rules, and the Grafana provisioning,
checked offline (Docker does not run here): the Compose schema, what ``docker compose
config`` would reject (unset required variables, references to services, volumes and
files that do not exist), and that the pieces point at each other correctly."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.promql_names import (
    DASHBOARD,
    RULES,
    dashboard_exprs,
    metric_names,
    rule_exprs,
)

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
ENV = {"EDGE_RELAY_SECRET": "s3cret", "ORIGIN_API_KEYS": "key-1,key-2"}

_VAR = re.compile(r"\$(?:\$|\{(\w+)(?:(:?[-?])([^}]*))?\}|(\w+))")


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose's variable interpolation: ``${V}``, ``${V:-d}``, ``${V-d}``, ``${V:?e}``,
    ``${V?e}``, ``$V``; ``$$`` is a literal ``$``.  A required variable that is unset
    raises ``KeyError`` (``docker compose config`` fails the same way)."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1) or m.group(4)
        op, arg = m.group(2), m.group(3)
        cur = env.get(name)
        empty = cur is None or (op is not None and op.startswith(":") and cur == "")
        if op and op.endswith("?") and empty:
            raise KeyError(f"{name}: {arg}")
        if op and op.endswith("-") and empty:
            return arg
        return cur or ""

    return _VAR.sub(sub, value)


def load(env: dict[str, str] = ENV) -> dict[str, Any]:
    """docker-compose.yml as ``docker compose config`` would see it (anchors merged)."""
    raw = yaml.safe_load(COMPOSE.read_text())
    doc = interpolate(raw, env)
    assert isinstance(doc, dict)
    return doc


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load()


def test_matches_the_compose_schema(compose: dict[str, Any]) -> None:
    schema = json.loads((ROOT / "tests/schemas/compose-spec.json").read_text())
    v = jsonschema.Draft201909Validator(schema)
    errors = sorted(v.iter_errors(compose), key=lambda e: list(e.path))
    assert not errors, [f"{list(e.path)}: {e.message}" for e in errors]
    # The check is real: a typo is caught.
    bad = json.loads(json.dumps(compose))
    bad["services"]["edge-1"]["heathcheck"] = bad["services"]["edge-1"].pop("healthcheck")
    assert list(v.iter_errors(bad))


def test_required_variables_fail_like_compose() -> None:
    for missing in ENV:
        env = {k: v for k, v in ENV.items() if k != missing}
        with pytest.raises(KeyError, match=missing):
            load(env)
    doc = load()
    cmd = doc["services"]["prometheus"]["command"][0]
    assert '"${ORIGIN_API_KEYS%%,*}"' in cmd  # $$ reaches the shell as $
    assert doc["services"]["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD"] == "admin"


def test_services_refer_to_things_that_exist(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {"redis", "origin", "edge-1", "edge-2", "edge-3", "prometheus",
            "grafana"} <= set(services)
    named = set(compose.get("volumes") or {})
    host_ports: list[str] = []
    for name, svc in services.items():
        assert "image" in svc or "build" in svc, name
        if "build" in svc:
            ctx = ROOT / svc["build"]["context"]
            assert (ctx / svc["build"].get("dockerfile", "Dockerfile")).is_file(), name
        deps = svc.get("depends_on") or {}
        for dep, cond in (deps.items() if isinstance(deps, dict) else
                          ((d, {"condition": "service_started"}) for d in deps)):
            assert dep in services, f"{name} depends on unknown {dep}"
            if cond["condition"] == "service_healthy":
                assert "healthcheck" in services[dep], f"{dep} has no healthcheck"
        for vol in svc.get("volumes") or []:
            source = vol.split(":", 1)[0]
            if source.startswith((".", "/")):
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"
            else:
                assert source in named, f"{name} uses undeclared volume {source}"
        for port in svc.get("ports") or []:
            parts = str(port).split(":")
            assert len(parts) == 3 and parts[0] == "127.0.0.1", f"{name}: bind {port} to loopback"
            host_ports.append(parts[1])
    assert len(host_ports) == len(set(host_ports)), "a host port is published twice"
    used = {v.split(":", 1)[0] for s in services.values() for v in s.get("volumes") or []}
    assert named <= used, f"declared but unused volumes: {named - used}"


def _container_port(svc: dict[str, Any], default: int) -> int:
    cmd = svc.get("command") or []
    if "--port" in cmd:
        return int(cmd[cmd.index("--port") + 1])
    return default


def test_prometheus_scrapes_every_edge_and_the_origin(compose: dict[str, Any]) -> None:
    services = compose["services"]
    prom = services["prometheus"]
    mounts = dict(v.split(":")[:2][::-1] for v in prom["volumes"])  # target -> source
    cfg_src = mounts["/etc/prometheus/prometheus.yml"]
    cfg = yaml.safe_load((ROOT / cfg_src).read_text())
    for rf in cfg["rule_files"]:
        assert rf in mounts and (ROOT / mounts[rf]).samefile(RULES)
    jobs = {j["job_name"]: j for j in cfg["scrape_configs"]}
    # The Dockerfile's CMD runs edges on 8700.
    dockerfile = (ROOT / "deploy/Dockerfile").read_text()
    edge_port = int(re.search(r'"--port", "(\d+)"', dockerfile).group(1))  # type: ignore[union-attr]
    targets = {t for sc in jobs["edge"]["static_configs"] for t in sc["targets"]}
    edges = {n for n in services if n.startswith("edge-")}
    assert targets == {f"{n}:{edge_port}" for n in edges}
    origin_port = _container_port(services["origin"], 8780)
    assert [t for sc in jobs["origin"]["static_configs"] for t in sc["targets"]] == \
        [f"origin:{origin_port}"]
    # The origin's /metrics needs an API key: the file the job reads is written by the
    # service's command inside the prometheus-data volume.
    key_file = jobs["origin"]["authorization"]["credentials_file"]
    assert key_file in prom["command"][0]
    assert any(v.endswith(":" + str(Path(key_file).parent)) for v in prom["volumes"])


def test_grafana_provisioning_points_at_the_dashboard(compose: dict[str, Any]) -> None:
    graf = compose["services"]["grafana"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in graf["volumes"]}
    prov = ROOT / mounts["/etc/grafana/provisioning"]
    ds = yaml.safe_load((prov / "datasources/prometheus.yml").read_text())["datasources"][0]
    assert ds["url"] == "http://prometheus:9090" and "prometheus" in compose["services"]
    providers = yaml.safe_load((prov / "dashboards/edge-relay.yml").read_text())["providers"]
    path = providers[0]["options"]["path"]
    assert (ROOT / mounts[path]).samefile(DASHBOARD.parent)
    home = graf["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home.startswith(path) and (DASHBOARD.parent / Path(home).name).is_file()
    dash = json.loads(DASHBOARD.read_text())
    uids = {t["datasource"]["uid"] for p in dash["panels"] for t in p.get("targets", [])}
    assert uids == {ds["uid"]}


def test_dashboard_layout_and_queries() -> None:
    dash = json.loads(DASHBOARD.read_text())
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    for p in dash["panels"]:
        g = p["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24, p["title"]
    titles = " ".join(p["title"] for p in dash["panels"]).lower()
    for topic in ("connections", "deliveries", "fan-out latency", "recoveries", "handover",
                  "failover", "sync lag", "backlog", "spool", "alerts", "replicas"):
        assert topic in titles, topic
    exprs = dashboard_exprs()
    assert len(exprs) > 30
    for title, expr in exprs:
        assert metric_names(expr), f"{title}: {expr} selects no metric"


def test_alert_rules_parse_and_cover_the_required_cases() -> None:
    doc = yaml.safe_load(RULES.read_text())
    names = set()
    for group in doc["groups"]:
        for rule in group["rules"]:
            assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule
            assert rule["labels"]["severity"] in ("critical", "warning", "info")
            assert rule["annotations"]["summary"]
            if "for" in rule:
                assert re.fullmatch(r"\d+[smh]", rule["for"])
            names.add(rule["alert"])
    for required in ("EdgeDown", "EdgeSyncLagHigh", "OriginSyncLagHigh", "UplinkSpoolGrowing",
                     "RecoveryFailures"):
        assert required in names
    for alert, expr in rule_exprs():
        assert metric_names(expr), alert
    with pytest.raises(ValueError):
        metric_names("rate(edge_messages_out_total[5m]")  # the parser is strict
