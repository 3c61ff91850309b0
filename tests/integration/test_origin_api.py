"""The origin HTTP API: a real ``python -m origin run`` process (API + 1 worker), a real
Redis server, data sent through a real Uplink; auth failures and malformed bodies."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from client_sdk.protocol import verify_token
from edge_node.local.origin_api import OriginProcess
from edge_node.local.redis_server import RedisServer
from edge_node.uplink import Uplink, UplinkSettings, downlink_key
from origin.api import create_app
from origin.settings import OriginSettings
from tests.helpers import origin_api, uid

pytestmark = pytest.mark.timeout(60)
KEY = "test-api-key"
#: Scoped keys (origin/scopes.py).
DISCOVER, READ, MINT = "game-client-key", "dashboard-key", "token-service-key"
SECRET = b"api-test-secret"
H = {"Authorization": f"Bearer {KEY}"}



@pytest.fixture(scope="module")
def origin(server: RedisServer, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[OriginProcess]:
    yield from origin_api(server.url, tmp_path_factory,
                          f"other,{KEY},{DISCOVER}:discover,{READ}:read,{MINT}:mint", SECRET)


@pytest.fixture
async def http(origin: OriginProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=origin.http_url, timeout=10.0) as c:
        yield c


@pytest.fixture
async def r(server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    c = aioredis.Redis.from_url(server.url, socket_timeout=5.0)
    yield c
    await c.aclose()


async def send(url: str, *items: tuple[str, str, Any]) -> None:
    up = Uplink(UplinkSettings(redis_url=url, edge_id="edge-api", shards=4))
    await up.start()
    for kind, key, body in items:
        up.submit(kind, key, body)
    for _ in range(1000):
        if not up.backlog:
            break
        await asyncio.sleep(0.01)
    await up.stop()


async def poll(http: httpx.AsyncClient, path: str, ok: Any, timeout: float = 15.0
               ) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while True:
        resp = await http.get(path, headers=H)
        if resp.status_code == 200 and ok(resp.json()):
            return resp
        if time.monotonic() > deadline:
            raise AssertionError(f"{path}: {resp.status_code} {resp.text[:300]}")
        await asyncio.sleep(0.05)


async def test_healthz_needs_no_key(http: httpx.AsyncClient) -> None:
    resp = await http.get("/healthz")
    assert resp.status_code == 200 and resp.json()["status"] == "ok"


@pytest.mark.parametrize("path", ["/v1/edges", "/v1/alerts", "/v1/rooms/x", "/v1/devices/x",
                                  "/metrics", "/v1/stats"])
async def test_auth_required(http: httpx.AsyncClient, path: str) -> None:
    resp = await http.get(path)
    assert resp.status_code == 401 and "API key required" in resp.json()["detail"]
    assert resp.headers["www-authenticate"] == "Bearer"
    resp = await http.get(path, headers={"Authorization": "Bearer wrong"})
    assert resp.status_code == 403 and resp.json()["detail"] == "API key not accepted"
    resp = await http.get(path, headers={"Authorization": f"Basic {KEY}"})
    assert resp.status_code == 401 and "Bearer" in resp.json()["detail"]
    resp = await http.get(path, headers={"X-API-Key": KEY})
    assert resp.status_code in (200, 404)


async def test_auth_on_writes(http: httpx.AsyncClient) -> None:
    resp = await http.post("/v1/tokens", json={"subject": "svc"})
    assert resp.status_code == 401
    resp = await http.put("/v1/devices/d/desired", json={"state": {"a": 1}},
                          headers={"X-API-Key": "nope"})
    assert resp.status_code == 403


@pytest.mark.parametrize(("key", "allowed"), [
    (DISCOVER, {"edges"}),
    (READ, {"edges", "stats", "alerts"}),
    (MINT, {"tokens"}),
    (KEY, {"edges", "stats", "alerts", "tokens", "desired"}),
])
async def test_a_key_only_does_what_its_scopes_allow(http: httpx.AsyncClient, key: str,
                                                     allowed: set[str]) -> None:
    h = {"X-API-Key": key}
    calls = {
        "edges": lambda: http.get("/v1/edges", headers=h),
        "stats": lambda: http.get("/v1/stats", headers=h),
        "alerts": lambda: http.get("/v1/alerts", headers=h),
        "tokens": lambda: http.post("/v1/tokens", json={"subject": "svc"}, headers=h),
        "desired": lambda: http.put(f"/v1/devices/{uid('scoped')}/desired",
                                    json={"state": {"a": 1}}, headers=h),
    }
    for name, call in calls.items():
        resp = await call()
        if name in allowed:
            assert resp.status_code in (200, 201, 202), (name, resp.text)
        else:
            assert resp.status_code == 403, (name, resp.text)
            assert "may not do that" in resp.json()["detail"]


async def test_openapi_served_and_matches(http: httpx.AsyncClient) -> None:
    resp = await http.get("/openapi.json")
    assert resp.status_code == 200
    doc = resp.json()
    expected = create_app(OriginSettings(shards=4, api_keys=(KEY,))).openapi()
    assert doc == expected
    assert {"/v1/edges", "/v1/rooms/{room_id}", "/v1/devices/{device_id}",
            "/v1/devices/{device_id}/desired", "/v1/devices/{device_id}/commands",
            "/v1/alerts", "/v1/tokens", "/metrics", "/healthz"} <= set(doc["paths"])


async def test_rooms_devices_alerts_from_the_uplink(http: httpx.AsyncClient,
                                                    server: RedisServer) -> None:
    assert (await http.get("/v1/rooms/api-room", headers=H)).status_code == 404
    assert (await http.get("/v1/devices/api-dev", headers=H)).status_code == 404
    await send(server.url,
               ("room_snapshot", "api-room", {"score": [1, 2]}),
               ("room_event", "api-room", {"goal": "red"}),
               ("presence", "api-room", {"member": "alice", "online": True}),
               ("telemetry", "api-dev", {"temp": 20.0}),
               ("telemetry", "api-dev", {"temp": 22.0}),
               ("shadow", "api-dev", {"fw": "1.2"}),
               ("alert", "api-dev", {"msg": "too hot"}))
    room = (await poll(http, "/v1/rooms/api-room", lambda j: j["members"])).json()
    assert room["snapshot"]["state"] == {"score": [1, 2]}
    assert room["events"][0]["body"] == {"goal": "red"} and room["events_total"] == 1
    assert "alice" in room["members"]
    dev = (await poll(http, "/v1/devices/api-dev", lambda j: j["version"] >= 1)).json()
    assert dev["reported"] == {"fw": "1.2"} and dev["latest"] == {"temp": 22.0}
    temp = dev["rollups"][-1]["metrics"]["temp"]
    assert (temp["count"], temp["min"], temp["max"], temp["avg"]) == (2, 20.0, 22.0, 21.0)
    alerts = (await poll(http, "/v1/alerts", lambda j: j["alerts"])).json()["alerts"]
    assert alerts[0]["body"] == {"msg": "too hot"} and alerts[0]["key"] == "api-dev"
    assert (await http.get("/v1/alerts?limit=0", headers=H)).status_code == 422
    metrics = await http.get("/metrics", headers=H)
    assert metrics.status_code == 200 and "origin_applied_total" in metrics.text
    assert "origin_lag_seconds_bucket" in metrics.text


async def test_edges_nearest_first_or_by_load(http: httpx.AsyncClient,
                                              r: aioredis.Redis) -> None:
    now = time.time()
    for eid, lat, lon, conns in (("ed-paris", 48.85, 2.35, 50), ("ed-nyc", 40.71, -74.0, 5),
                                 ("ed-nopos", None, None, 1), ("ed-drain", 51.5, -0.1, 0)):
        info: dict[str, Any] = {"id": eid, "url": f"ws://{eid}", "connections": conns,
                                "draining": int(eid == "ed-drain")}
        if lat is not None:
            info |= {"lat": lat, "lon": lon}
        await r.hset(f"er:{{edge:{eid}}}:info", mapping={k: str(v) for k, v in info.items()})
        await r.zadd("er:edges", {eid: now})
    await r.zadd("er:edges", {"ed-stale": now - 60})
    resp = await http.get("/v1/edges", headers=H)
    ids = [e["id"] for e in resp.json()["edges"]]
    assert ids == ["ed-nopos", "ed-nyc", "ed-paris", "ed-drain"]  # by load, draining last
    health = {e["id"]: (e["healthy"], e["draining"]) for e in resp.json()["edges"]}
    assert health["ed-drain"] == (False, 1) and health["ed-nyc"] == (True, 0)
    resp = await http.get("/v1/edges?lat=51.5&lon=-0.12", headers=H)  # London
    ids = [e["id"] for e in resp.json()["edges"]]
    assert ids == ["ed-paris", "ed-nyc", "ed-nopos", "ed-drain"]  # the nearest is draining
    assert resp.json()["edges"][0]["distance_km"] < 400
    assert (await http.get("/v1/edges?lat=51.5", headers=H)).status_code == 422
    assert (await http.get("/v1/edges?lat=91&lon=0", headers=H)).status_code == 422


async def test_commands_wait_for_offline_device_then_delivered_or_expire(
        http: httpx.AsyncClient, server: RedisServer, r: aioredis.Redis) -> None:
    resp = await http.post("/v1/devices/cmd-dev/commands", headers=H,
                           json={"name": "reboot", "args": {"delay": 1}, "ttl": 60})
    assert resp.status_code == 202, resp.text
    cmd = resp.json()
    assert cmd["status"] == "pending"
    short = (await http.post("/v1/devices/cmd-dev/commands", headers=H,
                             json={"name": "blink", "ttl": 0.05})).json()
    await asyncio.sleep(0.2)
    # The device comes online at edge-api (a live registry entry), the worker pushes.
    await r.hset("er:{edge:edge-api}:info", mapping={"id": "edge-api", "url": "ws://x"})
    await r.zadd("er:edges", {"edge-api": time.time()})
    await send(server.url, ("session", "cmd-dev", {"online": True, "kind": "device"}))
    dev = (await poll(http, "/v1/devices/cmd-dev", lambda j: j["online"] and any(
        c["status"].startswith("sent:") for c in j["commands"]))).json()
    states = {c["id"]: c["status"] for c in dev["commands"]}
    assert states[cmd["id"]] == "sent:edge-api" and states[short["id"]] == "expired"
    down = await r.xrange(downlink_key("edge-api"))
    assert [f[b"id"].decode() for _, f in down] == [cmd["id"]]
    # Online now: a new command goes out at once; the device's ack flows back up.
    now_cmd = (await http.post("/v1/devices/cmd-dev/commands", headers=H,
                               json={"name": "ping"})).json()
    assert now_cmd["status"] == "sent:edge-api"
    await send(server.url, ("command_ack", "cmd-dev", {"id": cmd["id"], "status": "done"}))
    await poll(http, "/v1/devices/cmd-dev", lambda j: {c["id"]: c["status"] for c in
                                                        j["commands"]}[cmd["id"]] == "done")
    resp = await http.put("/v1/devices/cmd-dev/desired", headers=H,
                          json={"state": {"led": "on"}})
    assert resp.status_code == 202 and resp.json()["desired_version"] == 1
    dev = (await http.get("/v1/devices/cmd-dev", headers=H)).json()
    assert dev["desired"] == {"led": "on"}


@pytest.mark.parametrize(("method", "path", "body", "needle"), [
    ("put", "/v1/devices/d1/desired", {}, "state"),
    ("put", "/v1/devices/d1/desired", {"state": {}}, "state"),
    ("put", "/v1/devices/d1/desired", {"state": {"a": 1}, "extra": 1}, "extra"),
    ("put", "/v1/devices/d1/desired", "not json", "JSON"),
    ("put", "/v1/devices/d1/desired", '{"state": {"a": ' + "[" * 5000 + "]" * 5000 + "}}",
     "nested deeper than 32"),
    ("post", "/v1/devices/d1/commands", {"args": {}}, "name"),
    ("post", "/v1/devices/d1/commands", {"name": "x", "ttl": -1}, "ttl"),
    ("post", "/v1/devices/d1/commands", [1, 2], "dict"),
    ("post", "/v1/tokens", {"subject": "s", "kind": "admin"}, "kind"),
    ("post", "/v1/tokens", {"subject": ""}, "subject"),
])
async def test_malformed_bodies_get_422(http: httpx.AsyncClient, method: str, path: str,
                                        body: Any, needle: str) -> None:
    if isinstance(body, str):
        resp = await http.request(method, path, content=body,
                                  headers={**H, "Content-Type": "application/json"})
    else:
        resp = await http.request(method, path, json=body, headers=H)
    assert resp.status_code == 422
    assert needle.lower() in resp.text.lower()


async def test_body_over_the_limit_gets_413_and_the_api_lives_on(
        http: httpx.AsyncClient) -> None:
    big = {"state": {"blob": "x" * (70 * 1024)}}
    resp = await http.put("/v1/devices/d1/desired", json=big, headers=H)
    assert resp.status_code == 413 and "over 65536 bytes" in resp.json()["detail"]

    async def chunked() -> Any:  # no Content-Length: the bound applies as it streams
        yield b'{"state": {"blob": "'
        for _ in range(100):
            yield b"y" * 1024
        yield b'"}}'

    resp = await http.put("/v1/devices/d1/desired", content=chunked(),
                          headers={**H, "Content-Type": "application/json"})
    assert resp.status_code == 413
    nested = {"state": {"a": [[[[{"b": "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["}]]]]}}
    resp = await http.put("/v1/devices/d1/desired", json=nested, headers=H)
    assert resp.status_code == 202, resp.text  # brackets inside strings do not count
    assert (await http.get("/healthz")).status_code == 200


async def test_tokens_minted_for_edges(http: httpx.AsyncClient) -> None:
    resp = await http.post("/v1/tokens", headers=H,
                           json={"subject": "sensor-9", "kind": "device",
                                 "rooms": ["dev-sensor-9"], "ttl": 60})
    assert resp.status_code == 201
    out = resp.json()
    claims = verify_token(out["token"], (SECRET,), now=time.time())
    assert claims.subject == "sensor-9" and claims.kind == "device"
    assert out["expires"] > time.time()
    # Declared metric ranges (docs/iot.md), as the CLI's --metric mints them.
    resp = await http.post("/v1/tokens", headers=H, json={
        "subject": "sensor-9", "kind": "device", "rooms": ["dev-sensor-9"],
        "metrics": {"temp": [-40, 125], "hum": [0, None]}})
    assert resp.status_code == 201, resp.text
    claims = verify_token(resp.json()["token"], (SECRET,), now=time.time())
    assert sorted(claims.metrics or ()) == [("hum", 0.0, float("inf")),
                                            ("temp", -40.0, 125.0)]
    for bad in ({"temp": [125, -40]}, {"temp": [1]}, {"temp": "hot"}):
        resp = await http.post("/v1/tokens", headers=H, json={
            "subject": "s", "kind": "device", "metrics": bad})
        assert resp.status_code == 422, (bad, resp.text)
    resp = await http.post("/v1/tokens", headers=H, json={
        "subject": "p", "kind": "player", "metrics": {"temp": [0, 1]}})
    assert resp.status_code == 422 and "device" in resp.text


async def test_sdk_bootstraps_from_discovery(origin: OriginProcess, server: RedisServer,
                                             edge_factory: Any, token: Any) -> None:
    """The SDK asks the origin for edges (nearest first), then connects to the best."""
    from client_sdk import DiscoveryError, connect, discover_edges

    near = edge_factory("ed-disc-near", "--position", "48.85,2.35", redis_url=server.url)
    edge_factory("ed-disc-far", "--position", "40.71,-74.0", redis_url=server.url)
    urls: list[str] = []
    for _ in range(50):  # both heartbeats land within a second or two
        # The key a game ships: it may discover edges and nothing else.
        urls = await discover_edges(origin.http_url, DISCOVER, position=(51.5, -0.12))
        if near.url in urls and len([u for u in urls if "127.0.0.1" in u]) >= 2:
            break
        await asyncio.sleep(0.1)
    assert urls[0] == near.url
    c = await connect(urls, token("disc"), select="rtt")
    try:
        assert c.edge_id is not None
    finally:
        await c.close()
    with pytest.raises(DiscoveryError) as bad:
        await discover_edges(origin.http_url, "wrong-key")
    assert bad.value.status in (401, 403)
    with pytest.raises(DiscoveryError, match="unreachable"):
        await discover_edges("http://127.0.0.1:9", KEY, timeout=1.0)
    with pytest.raises(ValueError):
        await discover_edges("ftp://x", KEY)


async def test_admin_drain_hands_clients_over_and_the_edge_exits(
        http: httpx.AsyncClient, server: RedisServer, edge_factory: Any, token: Any) -> None:
    """``POST /v1/edges/{id}/drain`` drains a live edge exactly as SIGTERM would."""
    from client_sdk import connect

    victim = edge_factory("ed-admin-drain", redis_url=server.url)
    edge_factory("ed-admin-keep", redis_url=server.url)
    assert (await http.post("/v1/edges/ed-admin-drain/drain")).status_code == 401
    assert (await http.post("/v1/edges/no-such-edge/drain", headers=H)).status_code == 404
    c = await connect(victim.url, token("adm"))
    try:
        for _ in range(50):  # the other edge's heartbeat makes it a neighbour
            if c.neighbours:
                break
            await asyncio.sleep(0.1)
        resp = await http.post("/v1/edges/ed-admin-drain/drain", headers=H)
        assert resp.status_code == 202 and resp.json()["requested"] == "drain"
        for _ in range(150):
            if c.handoffs == 1 and c.edge_id == "ed-admin-keep" and not victim.alive():
                break
            await asyncio.sleep(0.1)
        assert c.handoffs == 1 and c.reconnects == 0 and c.edge_id == "ed-admin-keep"
        assert not victim.alive() and victim.proc.returncode == 0
    finally:
        await c.close()


async def test_game_rooms_listed_by_their_owner_edges(http: httpx.AsyncClient,
                                                      server: RedisServer, edge_factory: Any,
                                                      token: Any) -> None:
    """GET /v1/rooms: running game rooms as their owner edges publish them."""
    from client_sdk import connect

    e = edge_factory("ed-games", "--room-handler", "arena-*=edge_node.local.arena:Arena",
                     redis_url=server.url)
    room = f"arena-api-{int(time.time() * 1000)}"
    c = await connect(e.url, token("gamer", rooms=["arena-*"]))
    try:
        await c.join_game(room, {"name": "ada", "label": "ranked"})
        resp = await poll(http, "/v1/rooms?pattern=arena-api-*",
                          lambda d: any(x["name"] == room for x in d["rooms"]))
        (mine,) = [x for x in resp.json()["rooms"] if x["name"] == room]
        assert mine["players"] == 1 and mine["max_players"] == 16
        assert mine["edge"] == "ed-games" and mine["metadata"]["label"] == "ranked"
        assert (await http.get("/v1/rooms?pattern=nothing-*", headers=H)).json() == {"rooms": []}
        assert (await http.get("/v1/rooms?limit=0", headers=H)).status_code == 422
        await c.leave(room)
        await poll(http, "/v1/rooms?pattern=arena-api-*",
                   lambda d: all(x["name"] != room for x in d["rooms"]), timeout=20)
    finally:
        await c.close()
