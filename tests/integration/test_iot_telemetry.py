"""Device telemetry end to end: real edge processes, a real origin (API + worker) and a
real Redis server.  Samples reach the origin's rollups with exact counts, also across
an edge SIGKILLed mid-stream (the device's offline buffer is re-sent to another edge);
refused samples get TELEMETRY_ERROR; anomalies raise alerts to the alerts room and the
origin, a clean noisy signal raises none."""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import msgpack
import pytest

from client_sdk import connect
from client_sdk.device import Device
from client_sdk.protocol import mint_token
from edge_node.local.launch import EdgeProcess
from edge_node.local.origin_api import OriginProcess
from edge_node.local.redis_server import RedisServer
from tests.helpers import SECRET, origin_api, uid, wait_until

pytestmark = pytest.mark.timeout(90)
KEY = "iot-test-key"
H = {"Authorization": f"Bearer {KEY}"}
METRICS: dict[str, tuple[float | None, float | None]] = {"temp": (-40.0, 85.0),
                                                         "hum": (0.0, 100.0)}



@pytest.fixture(scope="module")
def origin(server: RedisServer, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[OriginProcess]:
    yield from origin_api(server.url, tmp_path_factory, KEY)


@pytest.fixture
def edges(server: RedisServer, edge_factory: Callable[..., EdgeProcess]
          ) -> Callable[..., EdgeProcess]:
    """``edges(edge_id, *extra)``: edges on this module's Redis (stopped after the test)."""

    def make(edge_id: str, *extra: str) -> EdgeProcess:
        return edge_factory(edge_id, *extra, redis_url=server.url)

    return make


@pytest.fixture
async def http(origin: OriginProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=origin.http_url, timeout=10.0) as c:
        yield c


def device_token(device: str, metrics: dict[str, tuple[float | None, float | None]] | None
                 = METRICS) -> str:
    return mint_token(SECRET, device, "device", [device], metrics=metrics, now=time.time(),
                      ttl=600)


async def device_samples(http: httpx.AsyncClient, device: str) -> int:
    resp = await http.get(f"/v1/devices/{device}", headers=H)
    return int(resp.json()["samples"]) if resp.status_code == 200 else -1


async def wait_samples(http: httpx.AsyncClient, device: str, n: int, timeout: float = 30.0
                       ) -> None:
    deadline = time.monotonic() + timeout
    got = -1
    while time.monotonic() < deadline:
        got = await device_samples(http, device)
        if got >= n:
            break
        await asyncio.sleep(0.1)
    # Settle: nothing more may arrive (no double counting from late re-sends).
    await asyncio.sleep(1.0)
    got = await device_samples(http, device)
    assert got == n, f"origin counted {got} samples of {device}, sent {n}"


async def test_samples_reach_origin_rollups_exactly(
        edges: Callable[..., EdgeProcess], http: httpx.AsyncClient) -> None:
    edge = edges("iot-a")
    dev_id = uid("dev")
    dev = await Device.connect(edge.url, device_token(dev_id), batch_max=50, linger=0.05)
    try:
        now = time.time_ns() // 1_000_000
        n = 3000
        for i in range(n):
            dev.send_telemetry("temp", 20.0 + (i % 7) * 0.1, now - n + i)
            if i % 500 == 0:
                await asyncio.sleep(0)
        await dev.flush()
        assert await dev.wait_acked(20.0), f"{dev.buffered} samples not acknowledged"
        assert dev.acked_samples == n
        await wait_samples(http, dev_id, n)
        view = (await http.get(f"/v1/devices/{dev_id}", headers=H)).json()
        total = sum(int(r["metrics"]["temp"]["count"]) for r in view["rollups"])
        assert total == n
        win = view["windows"][0]["m"]["temp"]
        assert {"count", "min", "max", "mean", "last", "p50", "p95", "p99"} <= set(win)
        assert 20.0 <= win["min"] <= win["p50"] <= win["p99"] <= win["max"] <= 20.61
    finally:
        await dev.close()


async def test_exact_counts_across_edge_sigkill(
        edges: Callable[..., EdgeProcess], http: httpx.AsyncClient) -> None:
    a, b = edges("iot-kill-a"), edges("iot-kill-b")
    dev_id = uid("dev")
    dev = await Device.connect([a.url, b.url], device_token(dev_id), batch_max=20,
                               linger=0.05, client_options={"backoff_base": 0.05})
    sent = 0
    try:
        start = time.time_ns() // 1_000_000
        killed = False
        deadline = time.monotonic() + 20
        while sent < 4000 and time.monotonic() < deadline:
            for _ in range(20):
                dev.send_telemetry("hum", 40.0 + (sent % 10), start + sent)
                sent += 1
            await asyncio.sleep(0.005)
            if sent >= 1500 and not killed:
                a.kill()  # SIGKILL: its memory queue and open windows are gone
                killed = True
        assert killed
        await dev.flush()
        assert await dev.wait_acked(30.0), f"{dev.buffered} samples not acknowledged"
        assert dev.client.edge_id == "iot-kill-b"
        assert dev.dropped == 0
        await wait_samples(http, dev_id, sent)
        assert dev.resent_batches > 0
    finally:
        await dev.close()


async def test_validation_errors(edges: Callable[..., EdgeProcess],
                                 http: httpx.AsyncClient) -> None:
    edge = edges("iot-val")
    dev_id = uid("dev")
    dev = await Device.connect(edge.url, device_token(dev_id), batch_max=100, linger=5.0)
    try:
        now = time.time_ns() // 1_000_000
        dev.send_telemetry("temp", 21.0, now)                  # ok
        dev.send_telemetry("pressure", 1.0, now)               # unknown metric
        dev.send_telemetry("temp", 120.0, now)                 # out of range
        dev.send_telemetry("hum", True, now)                   # bad type  # type: ignore[arg-type]
        dev.send_telemetry("hum", math.nan, now)               # bad type (NaN)
        dev.send_telemetry("hum", 50.0, now - 7_200_000)       # too old
        dev.send_telemetry("hum", 50.0, now + 3_600_000)       # too new
        dev.send_telemetry("hum", 55.5, now)                   # ok
        dev.client._send(msgpack.packb([20, 1, [["temp"], "junk", [1, 2, 3, 4]]]))
        await dev.flush()
        assert await dev.wait_acked(10.0)
        reasons = [(r.index, r.metric, r.reason) for r in dev.rejected if r.batch_id != 1]
        assert reasons == [(1, "pressure", "unknown_metric"), (2, "temp", "out_of_range"),
                           (3, "hum", "bad_type"), (4, "hum", "bad_type"),
                           (5, "hum", "too_old"), (6, "hum", "too_new")]
        assert [r.reason for r in dev.rejected if r.batch_id == 1] == ["bad_sample"] * 3
        assert dev.acked_samples == 2
        await wait_samples(http, dev_id, 2)
        # The edge still serves: a ping answers, and another batch is accepted.
        assert await dev.client.ping() > 0
    finally:
        await dev.close()


async def test_non_device_cannot_send_telemetry(edges: Callable[..., EdgeProcess]) -> None:
    edge = edges("iot-forbid")
    c = await connect(edge.url, mint_token(SECRET, "p1", "player", ["*"], now=time.time()))
    try:
        errors: list[tuple[int, str]] = []
        c.on_error = lambda code, msg: errors.append((code, msg))
        c._send(msgpack.packb([20, 5, [["temp", 1.0, time.time_ns() // 1_000_000]]]))
        await wait_until(lambda: bool(errors), 5.0, "an error frame")
        assert errors[0][0] == 4403
    finally:
        await c.close()


def _noisy(rng: random.Random, n: int, start: int) -> list[tuple[float, int]]:
    return [(20.0 + rng.gauss(0, 0.5), start + i * 100) for i in range(n)]


async def test_spike_and_level_shift_raise_alerts_clean_signal_none(
        edges: Callable[..., EdgeProcess], http: httpx.AsyncClient) -> None:
    edge = edges("iot-alerts")
    watcher = await connect(edge.url, mint_token(SECRET, "ops", "service", ["alerts"],
                                                 now=time.time()))
    payloads: list[bytes] = []
    await watcher.join("alerts", on_message=lambda m: payloads.append(m.payload))
    noisy_id, clean_id = uid("noisy"), uid("clean")
    noisy = await Device.connect(edge.url, device_token(noisy_id), batch_max=100, linger=0.05)
    clean = await Device.connect(edge.url, device_token(clean_id), batch_max=100, linger=0.05)
    try:
        rng = random.Random(7)
        start = time.time_ns() // 1_000_000 - 60_000
        series = _noisy(rng, 600, start)
        spike_at, shift_at = 300, 450
        series[spike_at] = (series[spike_at][0] + 10.0, series[spike_at][1])
        series[shift_at:] = [(v + 6.0, ts) for v, ts in series[shift_at:]]
        for v, ts in series:
            noisy.send_telemetry("temp", v, ts)
        for v, ts in _noisy(random.Random(8), 600, start):
            clean.send_telemetry("temp", v, ts)
        await noisy.flush()
        await clean.flush()
        assert await noisy.wait_acked(15.0) and await clean.wait_acked(15.0)

        def raised() -> list[dict[str, Any]]:
            return [a for a in (msgpack.unpackb(p) for p in payloads)
                    if a["state"] == "raised"]

        await wait_until(lambda: len(raised()) >= 2, 10.0, "two alerts in the alerts room")
        got = raised()
        assert {a["device"] for a in got} == {noisy_id}
        first, second = sorted(a["ts"] for a in got)[:2]
        assert first == series[spike_at][1]  # a spike beyond anything seen: at once
        # A shift into a range already seen (the spike went higher): within 10 samples,
        # once the likelihood of the recent errors says it is not noise.
        assert series[shift_at][1] <= second <= series[shift_at + 10][1]
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            resp = await http.get("/v1/alerts", headers=H)
            at_origin = [a for a in resp.json()["alerts"] if a["key"] == noisy_id
                         and a["body"]["state"] == "raised"]
            if len(at_origin) >= 2:
                break
            await asyncio.sleep(0.1)
        assert len(at_origin) >= 2
        resp = await http.get("/v1/alerts", headers=H)
        assert not [a for a in resp.json()["alerts"] if a["key"] == clean_id]
    finally:
        await noisy.close()
        await clean.close()
        await watcher.close()


async def test_origin_counts_each_piece_once_whichever_edge_sends_it(
        server: RedisServer, http: httpx.AsyncClient) -> None:
    """The same (window, batch) piece from two edges (a batch re-sent after a failover),
    and a rollup mixing an old and a new piece: each piece is counted once."""
    from edge_node.uplink import Uplink, UplinkSettings

    dev_id = uid("dev")
    w = (time.time_ns() // 1_000_000) // 1000 * 1000
    p1 = [1, {"temp": [3, 60.0, 19.0, 21.0]}]
    p2 = [2, {"temp": [2, 50.0, 24.0, 26.0]}]
    alert = {"device": dev_id, "metric": "temp", "state": "raised", "value": 99.0,
             "ts": w + 5, "detector": "any"}
    for edge, pieces in (("edge-x", [p1]), ("edge-y", [p1, p2])):
        up = Uplink(UplinkSettings(redis_url=server.url, edge_id=edge, shards=4))
        await up.start()
        up.submit("rollup", dev_id, {"w": w, "len": 1000, "n": 5, "m": {}, "p": pieces})
        up.submit("alert", dev_id, alert)
        await wait_until(lambda up=up: up.backlog == 0, 10.0, "uplink drained")
        await up.stop()
    await wait_samples(http, dev_id, 5)
    resp = await http.get("/v1/alerts", headers=H)
    assert len([a for a in resp.json()["alerts"] if a["key"] == dev_id]) == 1
    stats = (await http.get("/v1/stats", headers=H)).json()
    assert stats["iot"]["pieces_duplicate"] >= 1 and stats["iot"]["alerts_duplicate"] >= 1


async def test_alerts_reach_a_dashboard_on_another_edge(
        edges: Callable[..., EdgeProcess]) -> None:
    """Nobody on the device's edge joined the alerts room: its alerts still reach a
    dashboard joined to it on another edge (the edge activates the room to publish)."""
    e1, e2 = edges(uid("iot-a1")), edges(uid("iot-a2"))
    dashboard = await connect(e2.url, mint_token(SECRET, "ops", "service", ["alerts"],
                                                 now=time.time()))
    payloads: list[bytes] = []
    await dashboard.join("alerts", on_message=lambda m: payloads.append(m.payload))
    dev_id = uid("far")
    dev = await Device.connect(e1.url, device_token(dev_id), batch_max=100, linger=0.05)
    try:
        series = _noisy(random.Random(11), 400, time.time_ns() // 1_000_000 - 60_000)
        series[300] = (series[300][0] + 10.0, series[300][1])
        for v, ts in series:
            dev.send_telemetry("temp", v, ts)
        await dev.flush()
        assert await dev.wait_acked(15.0)

        def mine() -> list[dict[str, Any]]:
            return [a for a in (msgpack.unpackb(p) for p in payloads) if a["device"] == dev_id]
        await wait_until(lambda: bool(mine()), 10.0, "the alert on the other edge")
        got = mine()[0]
        assert (got["state"], got["ts"], got["edge"]) == ("raised", series[300][1], e1.edge_id)
    finally:
        await dev.close()
        await dashboard.close()
