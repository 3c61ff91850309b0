"""The Kubernetes TLS overlay (deploy/k8s/tls): its patch, applied to the edge
Deployment the way kustomize merges it, is still a valid Deployment (official schema,
strict), and the edge reads its settings as ``wss://`` with the mounted Secret."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from edge_node.cli import settings_from_args
from edge_node.local.launcher import build_parser
from edge_node.transports.tls import tls_files
from tests.unit.test_deploy_k8s import VERSIONS, container, find

OVERLAY = Path(__file__).resolve().parents[2] / "deploy/k8s/tls"


def merge(base: Any, patch: Any) -> Any:
    """A strategic merge as kustomize does it for these fields: mappings merge key by
    key, lists of mappings with a ``name`` merge by name, anything else is replaced."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for k, v in patch.items():
            out[k] = merge(base[k], v) if k in base else v
        return out
    if (isinstance(base, list) and isinstance(patch, list)
            and all(isinstance(x, dict) and "name" in x for x in base + patch)):
        merged = [dict(x) for x in base]
        index = {x["name"]: i for i, x in enumerate(merged)}
        for item in patch:
            if item["name"] in index:
                merged[index[item["name"]]] = merge(merged[index[item["name"]]], item)
            else:
                merged.append(item)
        return merged
    return copy.deepcopy(patch)


def patched() -> dict[str, Any]:
    k = yaml.safe_load((OVERLAY / "kustomization.yaml").read_text())
    assert k["resources"] == ["../"]
    (entry,) = k["patches"]
    patch = yaml.safe_load((OVERLAY / entry["path"]).read_text())
    assert (patch["kind"], patch["metadata"]["name"]) == ("Deployment", "edge")
    result: dict[str, Any] = merge(find("Deployment", "edge"), patch)
    return result


@pytest.mark.parametrize("version", VERSIONS)
def test_the_patched_edge_is_a_valid_deployment(version: str) -> None:
    kubernetes_validate.validate(patched(), version, strict=True)


def test_the_patched_edge_serves_wss_with_the_mounted_secret() -> None:
    dep = patched()
    c = container(dep)
    env = {e["name"]: e.get("value") for e in c["env"]}
    names = [e["name"] for e in c["env"]]
    assert names.index("POD_IP") < names.index("EDGE_RELAY_PUBLIC_URL")  # $(POD_IP) expands
    assert env["EDGE_RELAY_PUBLIC_URL"].startswith("wss://")
    mount = next(m for m in c["volumeMounts"] if m["name"] == "tls")
    volume = next(v for v in dep["spec"]["template"]["spec"]["volumes"] if v["name"] == "tls")
    assert volume["secret"]["secretName"] == "edge-tls" and mount["readOnly"]
    for var in ("EDGE_RELAY_TLS_CERT", "EDGE_RELAY_TLS_KEY"):
        assert env[var].startswith(mount["mountPath"] + "/")
    for probe in ("readinessProbe", "livenessProbe"):
        assert c[probe]["httpGet"]["scheme"] == "HTTPS"
        assert c[probe]["httpGet"]["path"] == "/healthz"  # the base's fields stay
    cm = find("ConfigMap", "edge-relay-edge")["data"]
    old = dict(os.environ)
    try:
        os.environ.update({k: v for k, v in cm.items() if k != "EDGE_RELAY_QUIC_PORT"})
        os.environ.update({k: env[k] for k in ("EDGE_RELAY_TLS_CERT", "EDGE_RELAY_TLS_KEY")})
        s = settings_from_args(build_parser().parse_args(["edge"]))
    finally:
        os.environ.clear()
        os.environ.update(old)
    assert tls_files(s) == (env["EDGE_RELAY_TLS_CERT"], env["EDGE_RELAY_TLS_KEY"])
    assert s.ws_scheme == "wss"
