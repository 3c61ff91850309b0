"""Kubernetes manifests (deploy/k8s): valid against the official schemas (offline, from
the ``kubernetes-validate`` package, strict: unknown fields fail), and consistent with
each other and with the settings the processes really read."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from edge_node.local.launcher import build_parser
from origin.forecast import ForecastSettings

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy/k8s"
#: Oldest and newest Kubernetes minor versions the manifests are checked against.
VERSIONS = ("1.28.0", "1.33.0")


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def manifests() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for p in sorted(K8S.glob("*.yaml")):
        if p.name == "kustomization.yaml":
            continue
        out.extend((p.name, d) for d in _docs(p))
    return out


def find(kind: str, name: str) -> dict[str, Any]:
    for _, d in manifests():
        if d["kind"] == kind and d["metadata"]["name"] == name:
            return d
    raise AssertionError(f"no {kind} {name}")


def container(deploy: dict[str, Any]) -> dict[str, Any]:
    cs = deploy["spec"]["template"]["spec"]["containers"]
    assert len(cs) == 1
    c: dict[str, Any] = cs[0]
    return c


@pytest.mark.parametrize("version", VERSIONS)
def test_every_manifest_matches_the_official_schema(version: str) -> None:
    docs = manifests()
    assert {d["kind"] for _, d in docs} >= {
        "Namespace", "ConfigMap", "Secret", "Deployment", "Service", "PodDisruptionBudget",
        "HorizontalPodAutoscaler"}
    for fname, d in docs:
        try:
            kubernetes_validate.validate(d, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{fname} {d['kind']}/{d['metadata']['name']}: {exc}")


def test_the_schema_check_is_strict() -> None:
    d = find("Deployment", "edge")
    bad = yaml.safe_load(yaml.safe_dump(d))
    bad["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, VERSIONS[-1], strict=True)


def test_kustomization_lists_the_manifests() -> None:
    k = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = set(k["resources"])
    for r in listed:
        assert (K8S / r).is_file(), r
    # Not applied by kustomize: the Secret example (holds placeholders) and the
    # prometheus-adapter config (belongs to the monitoring stack's namespace).
    assert {p.name for p in K8S.glob("*.yaml")} - listed == {
        "kustomization.yaml", "secret.example.yaml", "prometheus-adapter.yaml"}
    gen = {g["name"] for g in k["secretGenerator"]}
    assert gen == {"edge-relay-secrets"}
    assert (ROOT / ".gitignore").is_file() and "deploy/k8s/secrets.env" in (
        ROOT / ".gitignore").read_text()


def test_services_and_budgets_select_their_pods() -> None:
    for name in ("edge", "origin"):
        dep = find("Deployment", name)
        labels = dep["spec"]["template"]["metadata"]["labels"]
        assert dep["spec"]["selector"]["matchLabels"].items() <= labels.items()
        svc = find("Service", name)
        assert svc["spec"]["selector"].items() <= labels.items()
        ports = {p["name"]: p for p in container(dep)["ports"]}
        for sp in svc["spec"]["ports"]:
            assert ports[sp["targetPort"]]["protocol"] == sp["protocol"]
        pdb = find("PodDisruptionBudget", name)
        assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    edge_ports = {(p["port"], p["protocol"]) for p in find("Service", "edge")["spec"]["ports"]}
    assert edge_ports == {(8700, "TCP"), (8701, "UDP")}


def test_env_names_are_ones_the_processes_read() -> None:
    cm = find("ConfigMap", "edge-relay-edge")["data"]
    # Every EDGE_RELAY_* variable of the edge ConfigMap is a documented setting.
    doc = (ROOT / "docs/configuration.md").read_text()
    for k in cm:
        if k != "EDGE_RELAY_QUIC_PORT":  # the QUIC transport's setting (docs/quic.md)
            assert f"`{k}`" in doc, k
    ocm = find("ConfigMap", "edge-relay-origin")["data"]
    fs = ForecastSettings.from_env(ocm)  # parses: no typo in a value
    assert fs.step == float(ocm["ORIGIN_FORECAST_STEP"])
    forecast_env = {f"ORIGIN_FORECAST_{n.upper()}" for n in ForecastSettings.__dataclass_fields__}
    for k in ocm:
        assert k in forecast_env or k in ("ORIGIN_SHARDS", "ORIGIN_LOG_LEVEL"), k
    assert cm["EDGE_RELAY_UPLINK_SHARDS"] == ocm["ORIGIN_SHARDS"]
    secret = find("Secret", "edge-relay-secrets")["stringData"]
    assert set(secret) == {"REDIS_URL", "EDGE_RELAY_SECRET", "ORIGIN_API_KEYS"}
    for name, cmname in (("edge", "edge-relay-edge"), ("origin", "edge-relay-origin")):
        refs = container(find("Deployment", name))["envFrom"]
        assert {"configMapRef": {"name": cmname}} in refs
        assert {"secretRef": {"name": "edge-relay-secrets"}} in refs


def test_edge_container_runs_the_edge_command_with_those_settings() -> None:
    c = container(find("Deployment", "edge"))
    assert c["args"] == ["edge"]
    cm = find("ConfigMap", "edge-relay-edge")["data"]
    # The CLI accepts the settings (the parser reads EDGE_RELAY_* at build time).
    import os
    old = dict(os.environ)
    try:
        os.environ.update({k: v for k, v in cm.items() if k != "EDGE_RELAY_QUIC_PORT"})
        a = build_parser().parse_args(["edge"])
    finally:
        os.environ.clear()
        os.environ.update(old)
    assert a.port == int(cm["EDGE_RELAY_PORT"]) and a.host == "0.0.0.0"
    assert a.drain_window == float(cm["EDGE_RELAY_DRAIN_WINDOW"])
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports["ws"] == a.port and ports["quic"] == int(cm["EDGE_RELAY_QUIC_PORT"])
    env = {e["name"]: e for e in c["env"]}
    assert env["EDGE_RELAY_EDGE_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["EDGE_RELAY_PUBLIC_URL"]["value"] == f"ws://$(POD_IP):{a.port}"


def test_probes_prestop_and_grace_period_cover_the_drain() -> None:
    dep = find("Deployment", "edge")
    spec = dep["spec"]["template"]["spec"]
    c = container(dep)
    cm = find("ConfigMap", "edge-relay-edge")["data"]
    drain = float(cm["EDGE_RELAY_DRAIN_WINDOW"]) + float(cm["EDGE_RELAY_DRAIN_TIMEOUT"])
    # After the drain the edge closes what is left (<= 1.5 s), waits for its server
    # (<= 3 s) and flushes the uplink (<= 5 s): 10 s of margin.
    assert spec["terminationGracePeriodSeconds"] >= drain + 10
    for probe in ("readinessProbe", "livenessProbe"):
        assert c[probe]["httpGet"]["path"] == "/healthz"
        assert c[probe]["httpGet"]["port"] == "ws"
    live = c["livenessProbe"]
    assert live["periodSeconds"] * live["failureThreshold"] > drain, \
        "liveness must not kill a draining edge (/healthz is 503 while draining)"
    cmd = c["lifecycle"]["preStop"]["exec"]["command"]
    assert cmd[:2] == ["/bin/sh", "-c"] and re.search(r"kill -TERM 1\b", cmd[2])
    # Rolling updates never take an edge away before its replacement is up.
    assert dep["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_origin_consumers_are_unique_per_pod() -> None:
    c = container(find("Deployment", "origin"))
    args = c["args"]
    assert args[:2] == ["origin", "run"]
    assert args[args.index("--consumer-prefix") + 1] == "$(POD_NAME)"
    env = {e["name"]: e for e in c["env"]}
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert int(args[args.index("--port") + 1]) == c["ports"][0]["containerPort"]


def test_hpa_scales_the_edges_on_the_forecast() -> None:
    hpa = find("HorizontalPodAutoscaler", "edge")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                             "name": "edge"}
    ext = [m["external"] for m in hpa["spec"]["metrics"] if m["type"] == "External"]
    assert len(ext) == 1
    metric = ext[0]["metric"]
    region = find("ConfigMap", "edge-relay-edge")["data"]["EDGE_RELAY_REGION"]
    assert metric["selector"]["matchLabels"] == {"region": region}
    assert ext[0]["target"] == {"type": "AverageValue", "averageValue": "1"}
    # The metric exists in the origin's exposition and the adapter serves it.
    from origin.forecast import Forecaster
    from origin.metrics import render_metrics
    rec = Forecaster().observe(region, 10.0, 1.0)
    text = render_metrics({"applied": 0, "duplicates_ignored": 0, "dead": 0, "trimmed": 0,
                           "claimed": 0, "lag_buckets": {}, "shards": [],
                           "pending_by_consumer": {}}, [rec]).decode()
    assert f'{metric["name"]}{{region="{region}"}}' in text
    adapter = yaml.safe_load(find("ConfigMap", "prometheus-adapter")["data"]["config.yaml"])
    assert adapter["externalRules"][0]["name"]["as"] == metric["name"]
    assert metric["name"] in adapter["externalRules"][0]["seriesQuery"]
    ocm = find("ConfigMap", "edge-relay-origin")["data"]
    assert hpa["spec"]["maxReplicas"] >= int(ocm["ORIGIN_FORECAST_MAX_REPLICAS"])
    assert hpa["spec"]["minReplicas"] <= int(ocm["ORIGIN_FORECAST_MIN_REPLICAS"])
