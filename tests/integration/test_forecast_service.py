"""The origin's forecast loop against a real Redis: it reads the real edge registry
(heartbeats written by edge_node.neighbours.registry.Registry), sums regions, takes message rates
from counters (restarts included), and saves/restores its models."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from edge_node.neighbours.registry import Registry
from origin.forecast import ForecastSettings
from origin.forecast_service import STATE_KEY, ForecastService
from tests.helpers import uid

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def r(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    c = aioredis.Redis.from_url(redis_url, socket_timeout=5.0)
    await c.delete(STATE_KEY)
    yield c
    await c.delete(STATE_KEY)
    await c.aclose()


async def _beat(r: aioredis.Redis, edge: str, region: str, conns: int, msgs: int) -> Registry:
    reg = Registry(r, edge, url=f"ws://127.0.0.1:1/{edge}", region=region, interval=1.0,
                   ttl=30.0, load=lambda: {"connections": conns, "rooms": 1, "draining": 0,
                                           "msgs_out": msgs})
    await reg.beat()
    return reg


async def test_sums_regions_and_rates_from_the_registry(r: aioredis.Redis) -> None:
    eu, us = uid("eu"), uid("us")
    s = ForecastSettings(step=10, season=100, capacity_connections=100, min_replicas=1)
    svc = ForecastService(r, s, edge_ttl=30.0)
    regs = [await _beat(r, f"{eu}-a", eu, 100, 1_000), await _beat(r, f"{eu}-b", eu, 50, 500),
            await _beat(r, f"{us}-a", us, 10, 0)]
    try:
        first = {x.region: x for x in await svc.tick(1000.0)}
        assert first[eu].connections == 150 and first[us].connections == 10
        assert first[eu].messages == 0  # no previous counter yet
        assert first[eu].reactive_replicas == 2  # 150 * 1.2 / 100
        await _beat(r, f"{eu}-a", eu, 120, 1_500)  # +500 in 10 s
        await _beat(r, f"{eu}-b", eu, 50, 100)  # restarted: counted from zero
        second = {x.region: x for x in await svc.tick(1010.0)}
        assert second[eu].messages == pytest.approx((500 + 100) / 10)
        assert second[eu].connections == 170
        body = svc.as_dict()
        assert {x["region"] for x in body["regions"]} >= {eu, us}
        # A region whose edges are gone goes to zero load (its model keeps running).
        for reg in regs[2:]:
            await reg.stop()
        third = {x.region: x for x in await svc.tick(1020.0)}
        assert third[us].connections == 0 and third[us].replicas >= 1
    finally:
        for reg in regs:
            await reg.stop()


async def test_models_survive_a_restart_and_fill_missed_steps(r: aioredis.Redis) -> None:
    region = uid("rs")
    s = ForecastSettings(step=10, season=100)
    svc = ForecastService(r, s, edge_ttl=30.0)
    reg = await _beat(r, f"{region}-a", region, 40, 0)
    try:
        for i in range(15):
            await svc.tick(2000.0 + 10 * i)
        svc.updated = 2140.0
        await svc.save()
        saved = json.loads(await r.get(STATE_KEY))
        assert saved["regions"][region]["conn"]["n"] == 15
        again = ForecastService(r, s, edge_ttl=30.0)
        await again.load(2140.0 + 35)  # three steps missed while down
        assert again.forecaster.regions[region].conn.n == 18
        stale = ForecastService(r, s, edge_ttl=30.0)
        await stale.load(2140.0 + 10 * 11)  # longer than a season: start afresh
        assert stale.forecaster.regions == {}
        other = ForecastService(r, ForecastSettings(step=5, season=100), edge_ttl=30.0)
        await other.load(2150.0)  # another step: ignored
        assert other.forecaster.regions == {}
        await r.set(STATE_KEY, b"{not json")
        broken = ForecastService(r, s, edge_ttl=30.0)
        await broken.load(2150.0)
        assert broken.forecaster.regions == {}
    finally:
        await reg.stop()


def test_bad_forecast_setting_stops_the_api_with_one_line() -> None:
    env = {**os.environ, "ORIGIN_FORECAST_HEADROOM": "lots", "ORIGIN_API_KEYS": "k"}
    p = subprocess.run([sys.executable, "-m", "origin", "api", "--port", "0"], env=env,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2
    assert "ORIGIN_FORECAST_HEADROOM must be a number" in p.stderr
    assert "Traceback" not in p.stderr
