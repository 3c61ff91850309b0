"""Bad device input on a real edge process (no Redis needed): malformed device frames get
a clear ERROR and the connection stays usable; device frames from a non-device token
are refused; the edge stays healthy and counts everything in /metrics."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import msgpack
import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect

from client_sdk.protocol import (
    PROTOCOL_VERSION,
    Ack,
    CommandAck,
    Error,
    ErrorCode,
    Frame,
    Hello,
    Ping,
    Pong,
    ReportState,
    ShadowDelta,
    Telemetry,
    TelemetryAck,
    TelemetryError,
    Welcome,
    decode,
    encode,
    mint_token,
)
from edge_node.local.launch import EdgeProcess
from tests.helpers import SECRET, http_get, uid

pytestmark = pytest.mark.timeout(60)
_open: list[ClientConnection] = []


@pytest.fixture(autouse=True)
async def _close_raw(edge_factory: Any) -> AsyncIterator[None]:
    yield
    while _open:
        await _open.pop().close()


async def session(url: str, tok: str) -> ClientConnection:
    ws = await ws_connect(url, compression=None, max_size=None, ping_interval=None,
                          open_timeout=5, close_timeout=1)
    _open.append(ws)
    await ws.send(encode(Hello(PROTOCOL_VERSION, tok, "raw-iot")))
    assert isinstance(await recv(ws), Welcome)
    return ws


async def recv(ws: ClientConnection, timeout: float = 5.0) -> Frame:
    raw = await ws.recv(decode=False) if timeout else b""
    return decode(raw)


async def usable(ws: ClientConnection) -> None:
    await ws.send(encode(Ping(77)))
    assert await recv(ws) == Pong(77)


def dev_token(device: str) -> str:
    return mint_token(SECRET, device, "device", [device], metrics={"t": (0.0, 10.0)},
                      now=time.time())


@pytest.fixture
def edge(edge_factory: Callable[..., EdgeProcess]) -> EdgeProcess:
    return edge_factory("iot-bad", redis=False)


async def test_malformed_device_frames_get_errors(edge: EdgeProcess) -> None:
    ws = await session(edge.url, dev_token(uid("dev")))
    now = time.time_ns() // 1_000_000
    cases: list[tuple[bytes, int]] = [
        (msgpack.packb([20, 1, "not-an-array"]), 0),           # samples not an array
        (msgpack.packb([20, -1, []]), 0),                      # batch id not unsigned
        (msgpack.packb([20, 2, [["t", 1, now]] * 1001]), 0),   # too many samples
        (msgpack.packb([24, "", "done", {}]), 0),              # empty command id
        (msgpack.packb([24, "c1", "done", [1]]), 0),           # result not a map
        (msgpack.packb([25, 9, 1, "state"]), 9),               # state not a map: echoes req
        (msgpack.packb([25, 10, 1, {1: 2}]), 0),  # non-string keys: refused by msgpack itself
    ]
    for raw, req in cases:
        await ws.send(raw)
        f = await recv(ws)
        assert isinstance(f, Error) and f.code == ErrorCode.BAD_REQUEST and f.req_id == req, f
        assert f.message
    await usable(ws)
    # A good batch after all that: refused samples listed, then the ack (no Redis: at once).
    await ws.send(encode(Telemetry(3, (("t", 5.0, now), ("t", 50.0, now), ("zz", 1, now)))))
    err = await recv(ws)
    assert isinstance(err, TelemetryError)
    assert [(i, r) for i, r, _ in err.errors] == [(1, "out_of_range"), (2, "unknown_metric")]
    assert await recv(ws) == TelemetryAck(3, 1, 2)
    # The same batch again: a duplicate, acknowledged again, not counted again.
    await ws.send(encode(Telemetry(3, (("t", 5.0, now),))))
    assert await recv(ws) == TelemetryAck(3, 1, 2)
    # Stale reported version.
    await ws.send(encode(ReportState(11, 2, {"a": 1})))
    assert await recv(ws) == Ack(11, 0, 2)
    await ws.send(encode(ReportState(12, 2, {"a": 2})))
    # First the version the edge holds (so a restarted device can go on), then the refusal.
    assert await recv(ws) == ShadowDelta(2, 0, {}, "")
    f = await recv(ws)
    assert isinstance(f, Error) and (f.code, f.req_id) == (ErrorCode.STALE_VERSION, 12)
    await usable(ws)
    status, _ctype, body = await http_get(edge.http_url + "/metrics")
    assert status == 200
    m = {(s.name, tuple(sorted(s.labels.items()))): s.value
         for fam in text_string_to_metric_families(body.decode()) for s in fam.samples}
    assert m[("edge_iot_samples_total", (("outcome", "accepted"),))] == 1
    assert m[("edge_iot_samples_total", (("outcome", "out_of_range"),))] == 1
    assert m[("edge_iot_samples_total", (("outcome", "unknown_metric"),))] == 1
    assert m[("edge_iot_duplicate_batches_total", ())] == 1
    assert m[("edge_iot_stale_reports_total", ())] == 1
    assert m[("edge_iot_devices", ())] == 1
    status, _c, _b = await http_get(edge.http_url + "/healthz")
    assert status == 200 and edge.alive()


async def test_device_frames_need_a_device_token(edge: EdgeProcess) -> None:
    ws = await session(edge.url, mint_token(SECRET, "p", "player", ["*"], now=time.time()))
    now = time.time_ns() // 1_000_000
    await ws.send(encode(Telemetry(1, (("t", 1.0, now),))))
    f = await recv(ws)
    assert isinstance(f, Error) and (f.code, f.req_id) == (ErrorCode.FORBIDDEN, 0)
    await ws.send(encode(ReportState(5, 1, {"a": 1})))
    f = await recv(ws)
    assert isinstance(f, Error) and (f.code, f.req_id) == (ErrorCode.FORBIDDEN, 5)
    await ws.send(encode(CommandAck("c1", "done", {})))
    f = await recv(ws)
    assert isinstance(f, Error) and f.code == ErrorCode.FORBIDDEN
    # Edge-to-device frames are not accepted from clients at all.
    await ws.send(encode(TelemetryAck(1, 1, 0)))
    f = await recv(ws)
    assert isinstance(f, Error) and f.code == ErrorCode.BAD_REQUEST
    await usable(ws)
