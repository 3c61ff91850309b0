"""Device shadows and commands end to end: real edge processes, a real origin (API +
worker), a real Redis server.  Reported state with versions (stale ones refused),
desired state from the origin's API delivered as a delta (now, and on reconnect from
the edge's cache), commands delivered once and acknowledged, commands to an offline
device delivered when it comes back or expired when it stays away, finished commands
trimmed at the origin."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from prometheus_client.parser import text_string_to_metric_families

from client_sdk.device import Device
from client_sdk.errors import ServerError
from client_sdk.protocol import Command, ErrorCode, ShadowDelta, mint_token
from edge_node.local.launch import EdgeProcess, spawn_edge
from edge_node.local.origin_api import OriginProcess
from edge_node.local.redis_server import RedisServer
from origin.keys import ShardKeys
from tests.helpers import SECRET, http_get, origin_api, uid, wait_until

pytestmark = pytest.mark.timeout(90)
KEY = "iot-cmd-key"
H = {"Authorization": f"Bearer {KEY}"}



@pytest.fixture(scope="module")
def origin(server: RedisServer, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[OriginProcess]:
    yield from origin_api(server.url, tmp_path_factory, KEY)


@pytest.fixture(scope="module")
def edge(server: RedisServer, tmp_path_factory: pytest.TempPathFactory
         ) -> Iterator[EdgeProcess]:
    log = tmp_path_factory.mktemp("edge") / "edge.log"
    e = spawn_edge(redis_url=server.url, secret=SECRET, edge_id="iot-cmd",
                   log_path=str(log))
    try:
        yield e
    finally:
        e.stop()


@pytest.fixture
async def http(origin: OriginProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=origin.http_url, timeout=10.0) as c:
        yield c


@pytest.fixture
async def devices(edge: EdgeProcess) -> AsyncIterator[Callable[..., Any]]:
    made: list[Device] = []

    async def make(device: str, **kw: Any) -> Device:
        tok = mint_token(SECRET, device, "device", [device], now=time.time(), ttl=600)
        d = await Device.connect(edge.url, tok, **kw)
        made.append(d)
        return d

    yield make
    for d in made:
        await d.close()


async def poll(http: httpx.AsyncClient, path: str, ok: Callable[[Any], bool],
               timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    body: Any = None
    while time.monotonic() < deadline:
        resp = await http.get(path, headers=H)
        if resp.status_code == 200:
            body = resp.json()
            if ok(body):
                return body
        await asyncio.sleep(0.1)
    raise AssertionError(f"{path}: condition not met; last body {body}")


def status_of(view: dict[str, Any], cid: str) -> str | None:
    for c in view["commands"]:
        if c["id"] == cid:
            return str(c["status"])
    return None


async def online(http: httpx.AsyncClient, device: str) -> None:
    await poll(http, f"/v1/devices/{device}", lambda v: v["online"])


async def test_reported_state_versions(devices: Callable[..., Any],
                                       http: httpx.AsyncClient) -> None:
    dev_id = uid("dev")
    dev = await devices(dev_id)
    assert await dev.report_state({"fw": "1.0", "led": "off"}) == 1
    assert await dev.report_state({"fw": "1.1"}, version=5) == 5
    with pytest.raises(ServerError) as info:
        await dev.report_state({"fw": "0.9"}, version=4)
    assert info.value.code == ErrorCode.STALE_VERSION
    assert "current version 5" in str(info.value)
    # (The view's reads are not one snapshot: wait for both parts.)
    view = await poll(http, f"/v1/devices/{dev_id}",
                      lambda v: v["version"] == 5 and len(v["reported"]) == 2)
    assert view["reported"] == {"fw": "1.1", "led": "off"}


async def test_a_device_that_restarts_reports_state_again(
        devices: Callable[..., Any], http: httpx.AsyncClient) -> None:
    """A new SDK instance counts from 0: the edge tells it the version it holds."""
    dev_id = uid("dev")
    dev = await devices(dev_id)
    for v in (1, 2, 3):
        assert await dev.report_state({"fw": f"1.{v}"}) == v
    await dev.close()
    again = await devices(dev_id)  # a restart: a new Device, version 0
    assert await again.report_state({"fw": "2.0"}) == 4
    await again.close()
    # Even when the report crosses the edge's SHADOW_DELTA (sent at once, no wait):
    third = await devices(dev_id)
    third.version = 0  # as if the delta had not been read yet
    assert await third.report_state({"fw": "2.1"}) == 5
    with pytest.raises(ServerError) as info:  # an explicit version is the caller's
        await third.report_state({"fw": "0"}, version=2)
    assert info.value.code == ErrorCode.STALE_VERSION
    view = await poll(http, f"/v1/devices/{dev_id}", lambda v: v["version"] == 5)
    assert view["reported"] == {"fw": "2.1"}


async def test_desired_state_delta_now_and_on_reconnect(
        devices: Callable[..., Any], http: httpx.AsyncClient, edge: EdgeProcess) -> None:
    dev_id = uid("dev")
    dev = await devices(dev_id)
    deltas: list[tuple[dict[str, Any], ShadowDelta]] = []
    dev.on_delta = lambda d, f: deltas.append((d, f))
    await dev.report_state({"led": "off", "mode": "eco"})
    await online(http, dev_id)
    resp = await http.put(f"/v1/devices/{dev_id}/desired", headers=H,
                          json={"state": {"led": "on", "mode": "eco"}})
    assert resp.status_code == 202
    cid = resp.json()["command"]["id"]
    await wait_until(lambda: bool(deltas), 10.0, "a shadow delta")
    delta, frame = deltas[0]
    assert delta == {"led": "on"}  # mode already matches
    assert frame.command_id == cid and frame.desired_version == resp.json()["desired_version"]
    await poll(http, f"/v1/devices/{dev_id}", lambda v: status_of(v, cid) == "applied")
    await dev.close()
    # Reconnect (same edge): the edge's shadow cache sends the delta at once.
    again = await devices(dev_id)
    got: list[tuple[dict[str, Any], str]] = []
    # Set before the connection's frames are read (no await since connect returned).
    again.on_delta = lambda d, f: got.append((d, f.command_id))
    await wait_until(lambda: bool(got), 10.0, "the delta after reconnect")
    assert got == [({"led": "on"}, "")]  # from the edge's cache, not a command
    await again.report_state({"mode": "eco"}, version=2)  # still differs: delta again
    await wait_until(lambda: len(got) == 2, 10.0, "the delta after a report")
    await again.report_state({"led": "on"}, version=3)
    await asyncio.sleep(0.5)
    assert len(got) == 2  # no delta once reported matches desired


async def test_command_delivered_once_and_acknowledged(
        devices: Callable[..., Any], http: httpx.AsyncClient, edge: EdgeProcess) -> None:
    dev_id = uid("dev")
    dev = await devices(dev_id)
    seen: list[Command] = []

    def handler(cmd: Command) -> dict[str, Any]:
        seen.append(cmd)
        return {"rebooted": True}

    dev.on_command = handler
    await dev.report_state({"fw": "1"})
    await online(http, dev_id)
    resp = await http.post(f"/v1/devices/{dev_id}/commands", headers=H,
                           json={"name": "reboot", "args": {"delay": 1}})
    assert resp.status_code == 202
    cid = resp.json()["id"]
    view = await poll(http, f"/v1/devices/{dev_id}", lambda v: status_of(v, cid) == "done")
    assert [(c.command_id, c.name, c.args) for c in seen] == [(cid, "reboot", {"delay": 1})]
    assert view["commands"][0]["id"] == cid
    status, _ctype, body = await http_get(edge.http_url + "/metrics")
    m = {s.name: s.value for fam in text_string_to_metric_families(body.decode())
         for s in fam.samples if not s.labels}
    assert status == 200 and m["edge_downlink_received_total"] >= 1
    assert m["edge_iot_commands_delivered_total"] >= 1 and m["edge_iot_commands_acked_total"] >= 1


async def test_offline_command_waits_then_delivered(
        devices: Callable[..., Any], http: httpx.AsyncClient) -> None:
    dev_id = uid("dev")
    resp = await http.post(f"/v1/devices/{dev_id}/commands", headers=H,
                           json={"name": "calibrate", "ttl": 60})
    cid = resp.json()["id"]
    assert resp.json()["status"] == "pending"
    dev = await devices(dev_id)
    seen: list[str] = []
    dev.on_command = lambda c: seen.append(c.command_id) or None
    await poll(http, f"/v1/devices/{dev_id}", lambda v: status_of(v, cid) == "done")
    # The SDK may have got it before on_command was set (then it acks without a
    # handler); either way it was delivered and acknowledged exactly once.
    assert [c.command_id for c in dev.commands] == [cid]


async def test_command_expires_while_device_stays_away(
        devices: Callable[..., Any], http: httpx.AsyncClient) -> None:
    dev_id = uid("dev")
    resp = await http.post(f"/v1/devices/{dev_id}/commands", headers=H,
                           json={"name": "blink", "ttl": 0.5})
    cid = resp.json()["id"]
    await asyncio.sleep(1.0)
    view = await poll(http, f"/v1/devices/{dev_id}", lambda v: True)
    assert status_of(view, cid) == "expired"
    dev = await devices(dev_id)
    await dev.report_state({"x": 1})
    await online(http, dev_id)
    await asyncio.sleep(1.0)
    assert dev.commands == []  # an expired command is never delivered


async def test_finished_commands_are_trimmed(devices: Callable[..., Any],
                                             http: httpx.AsyncClient,
                                             server: RedisServer) -> None:
    dev_id = uid("dev")
    dev = await devices(dev_id)
    await dev.report_state({"fw": "1"})
    await online(http, dev_id)
    n = 60  # more than the origin keeps (commands_keep = 50)
    ids = []
    for i in range(n):
        resp = await http.post(f"/v1/devices/{dev_id}/commands", headers=H,
                               json={"name": "ping", "args": {"i": i}})
        ids.append(resp.json()["id"])
    await wait_until(lambda: len(dev.commands) == n, 20.0, "all commands at the device")
    r = aioredis.Redis.from_url(server.url)
    try:
        k = ShardKeys.of(dev_id, 4)

        async def trimmed() -> bool:
            return (int(await r.hlen(k.dev(dev_id, "cmds"))) == 50
                    and int(await r.zcard(k.dev(dev_id, "cmddone"))) == 50
                    and int(await r.zcard(k.dev(dev_id, "cmdq"))) == 0)

        deadline = time.monotonic() + 15
        while not await trimmed():
            assert time.monotonic() < deadline, "finished commands were not trimmed"
            await asyncio.sleep(0.1)
        kept = {x.decode() for x in await r.hkeys(k.dev(dev_id, "cmds"))}
        assert len(kept) == 50 and kept <= set(ids)
        # The downlink stream does not keep delivered entries either.
        assert int(await r.xlen("er:{edge:iot-cmd}:down")) == 0
    finally:
        await r.aclose()
