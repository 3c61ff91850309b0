"""Every metric the Grafana dashboard and the Prometheus rules use is exported by a real
running edge or origin."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from client_sdk import connect
from edge_node.local.origin_api import spawn_api
from tests.helpers import PAIR, Recorder, http_get, uid, wait_until
from tests.promql_names import SYNTHETIC, used_metrics

pytestmark = pytest.mark.timeout(90)
KEY = "metrics-test-key"


def exported_names(text: str) -> set[str]:
    """Series names a scrape of ``text`` yields.  Histograms count only by the samples
    they really carry (a histogram without ``_sum`` has none); a counter or gauge family
    declared without samples yet (e.g. errors by code before any error) counts as its
    series name."""
    names: set[str] = set()
    for fam in text_string_to_metric_families(text):
        names.update(s.name for s in fam.samples)
        if fam.type == "counter":
            names.add(fam.name + "_total")
        elif fam.type == "gauge":
            names.add(fam.name)
    return names


async def test_every_metric_the_dashboard_and_rules_use_is_exported(
        edge_factory: Any, redis_url: str, token: Any, tmp_path: Any) -> None:
    edge = edge_factory("edge-mx1")
    api = spawn_api(redis_url, "--workers", "1", command="run",
                    env={"ORIGIN_API_KEYS": KEY, "ORIGIN_FORECAST_STEP": "0.5"},
                    log_path=str(tmp_path / "origin.log"))
    a = await connect(edge.url, token("mx-a"))
    b = await connect(edge.url, token("mx-b"))
    try:
        room = uid("mx")
        rec = Recorder()
        await b.join(room, on_message=rec)
        await a.join(room)
        for k in range(20):
            await a.publish(room, PAIR.pack(0, k))
        await wait_until(lambda: len(rec.seen) == 20, 10, "deliveries")
        async with httpx.AsyncClient(base_url=api.http_url, timeout=10.0,
                                     headers={"X-API-Key": KEY}) as http:
            deadline = time.monotonic() + 20
            regions: list[dict[str, Any]] = []
            while time.monotonic() < deadline:
                body = (await http.get("/v1/forecast")).json()
                regions = [r for r in body["regions"] if r["region"] == "local"]
                if regions and regions[0]["connections"] >= 2:
                    break
                await asyncio.sleep(0.2)
            assert regions and regions[0]["connections"] >= 2, body
            assert regions[0]["recommended_replicas"] >= regions[0]["reactive_replicas"] >= 2
            origin_text = (await http.get("/metrics")).text
            assert (await http.get("/metrics", headers={"X-API-Key": "wrong"})).status_code \
                == 403
        status, _, raw = await http_get(edge.http_url + "/metrics")
        assert status == 200
        edge_text = raw.decode()
        exported = exported_names(edge_text) | exported_names(origin_text)
        missing = {name: sorted(where) for name, where in used_metrics().items()
                   if name not in exported and name not in SYNTHETIC}
        assert not missing, f"used by the dashboard/rules but not exported: {missing}"
        assert 'origin_recommended_replicas{region="local"}' in origin_text
    finally:
        await a.close()
        await b.close()
        api.stop()

