"""Delivery policies with a real edge and a live client that stops reading.

The slow reader is a real WebSocket connection whose socket receive buffer is small
and which stops reading after its JOIN (its library stops taking frames off the
socket once one is queued; ``edge_node.local.demo_spectators.open_slow_reader``),
so the edge's send queue to it really grows past the soft limit while a publisher
floods the room (a ``service`` client: no rate limit).  Then it reads everything and
checks what its policy promised:

- ``latest``: per key, values only ever newer, ending with the newest published;
- ``drop`` (here the room's default, ``--room-delivery``): a DROPPED frame before
  each gap, the messages received plus the ones they name are every message exactly
  once, and the SDK reads the dropped ones back from the history
  (``Subscription.recover``);
- ``disconnect``: closed with 4001;
- ``latest`` on QUIC: a subscriber whose link is cut by a UDP proxy while the room
  floods gets the newest update of every key over datagrams after the cut.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from client_sdk import connect
from client_sdk.protocol import (
    Dropped,
    Message,
    decode,
    delivery_flags,
)
from edge_node.local.demo_spectators import open_slow_reader
from edge_node.local.launch import EdgeProcess
from tests.helpers import wait_until
from tests.lossy_udp import LossyUdpProxy

pytestmark = pytest.mark.timeout(120)

PAYLOAD = 1024  # bytes per message: a few MB fill the socket buffers quickly


async def slow_reader(edge: EdgeProcess, tok: str, room: str, flags: int) -> ClientConnection:
    """A connection that joined ``room`` and then reads nothing until the test does."""
    return await open_slow_reader(edge.url, tok, room, flags)


async def read_all(ws: ClientConnection, done: Callable[[list[Any]], bool],
                   timeout: float = 30.0) -> tuple[list[Any], int | None]:
    """Frames until ``done(frames)`` or the connection closes (then its close code)."""
    frames: list[Any] = []
    deadline = time.monotonic() + timeout
    while not done(frames):
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"gave up after {timeout} s with {len(frames)} frames")
        try:
            raw = await asyncio.wait_for(ws.recv(), left)
        except ConnectionClosed:
            return frames, ws.close_code
        except TimeoutError:
            raise AssertionError(f"nothing more after {timeout} s; {len(frames)} frames, "
                                 f"the last {frames[-3:]}") from None
        frames.append(decode(raw) if isinstance(raw, bytes) else raw)
    return frames, None


async def counter(edge: EdgeProcess, name: str) -> float:
    """The value of counter ``name`` on the edge's /metrics."""
    async with httpx.AsyncClient() as http:
        text = (await http.get(edge.http_url + "/metrics", timeout=5)).text
    m = re.search(rf"^{name}_total (\S+)$", text, re.MULTILINE)
    return float(m.group(1)) if m else 0.0


def body(n: int, key: int = 0) -> bytes:
    return f"{key:03d}:{n:07d}:".encode().ljust(PAYLOAD, b".")


async def test_latest_gives_a_slow_reader_the_newest_update_of_every_key(
        edge: EdgeProcess, token: Callable[..., str]) -> None:
    room, keys, rounds = "dp-latest", 16, 400  # 6,400 updates of 1 KiB
    reader = await slow_reader(edge, token("slow"), room, delivery_flags("latest"))
    pub = await connect(edge.url, token("pub", kind="service"))
    try:
        await pub.join(room)
        for n in range(rounds):
            for k in range(keys):
                await pub.publish(room, body(n, k), reliable=False, key=f"k{k}")
        assert await counter(edge, "edge_delivery_conflated") > 0, \
            "the reader was never slow: nothing was conflated"
        newest: dict[int, int] = {}
        seen: dict[int, list[int]] = {k: [] for k in range(keys)}
        read = 0

        def every_key_newest(frames: list[Any]) -> bool:
            nonlocal read
            new, read = frames[read:], len(frames)
            for f in new:
                if isinstance(f, Message):
                    k, n = (int(x) for x in f.payload.split(b":")[:2])
                    seen[k].append(n)
                    newest[k] = n
            return all(newest.get(k) == rounds - 1 for k in range(keys))

        _, code = await read_all(reader, every_key_newest)
        assert code is None
        for k, values in seen.items():
            assert values == sorted(set(values)), f"key {k}: a stale or repeated update"
        received = sum(len(v) for v in seen.values())
        assert received < keys * rounds  # conflated, not all delivered
    finally:
        await pub.close()
        await reader.close()


async def test_drop_by_room_default_tells_what_was_dropped_and_it_can_be_read_back(
        edge_factory: Callable[..., EdgeProcess], token: Callable[..., str]) -> None:
    edge = edge_factory("edge-drop", "--room-delivery", "dpfeed-*=drop")
    room, count = "dpfeed-1", 4000
    reader = await slow_reader(edge, token("slow"), room, 0)  # the room's default
    pub = await connect(edge.url, token("pub", kind="service"))
    try:
        sub = await pub.join(room, on_message=lambda m: None)
        for n in range(count):
            pub.publish_nowait(room, body(n))
            if n % 200 == 199:
                await asyncio.sleep(0)  # let the outbox drain
        last = await pub.publish(room, body(count))  # every publish is durable now
        assert last is not None
        assert await counter(edge, "edge_delivery_dropped") > 0, \
            "the reader was never slow: nothing was dropped"
        frames, code = await read_all(
            reader, lambda fs: bool(fs) and isinstance(fs[-1], Message)
            and (fs[-1].epoch, fs[-1].seq) == (last.epoch, last.seq))
        assert code is None
        notices = [f for f in frames if isinstance(f, Dropped)]
        assert notices  # one per time the reader fell behind (the kernel's buffers grow)
        got = [(f.epoch, f.seq) for f in frames if isinstance(f, Message)]
        dropped: list[tuple[int, int]] = []
        for notice in notices:
            assert notice.first[0] == notice.last[0]  # one epoch: one owner all along
            gap = [(notice.first[0], s) for s in range(notice.first[1], notice.last[1] + 1)]
            assert notice.dropped == notice.reliable == len(gap)
            dropped += gap
            # The notice comes just before the first message after its gap.
            after = frames[frames.index(notice) + 1]
            assert isinstance(after, Message) and (after.epoch, after.seq) == (
                notice.last[0], notice.last[1] + 1)
            # The SDK reads the dropped messages back from the room's history.
            recovered = await sub.recover(notice)
            assert [(m.epoch, m.seq) for m in recovered] == gap
            assert all(m.payload.startswith(b"000:") for m in recovered)
        # What arrived and what the notices name: every message once, in order.
        assert got == sorted(got)
        everything = sorted(got + dropped)
        assert everything == [(last.epoch, s) for s in range(last.seq - count, last.seq + 1)]
    finally:
        await pub.close()
        await reader.close()


async def test_disconnect_closes_a_slow_reader_with_4001(
        edge: EdgeProcess, token: Callable[..., str]) -> None:
    room = "dp-disconnect"
    reader = await slow_reader(edge, token("slow"), room, delivery_flags("disconnect"))
    pub = await connect(edge.url, token("pub", kind="service"))
    try:
        await pub.join(room)
        for n in range(6000):
            await pub.publish(room, body(n), reliable=False)
        frames, code = await read_all(reader, lambda fs: False)
        assert code == 4001
        assert all(isinstance(f, Message) for f in frames)
    finally:
        await pub.close()
        await reader.close()


@pytest.mark.parametrize("transport", ["quic"], indirect=True)
async def test_latest_on_quic_datagrams_gives_the_newest_of_every_key_after_a_cut(
        edge: EdgeProcess, token: Callable[..., str]) -> None:
    """A QUIC subscriber whose link is cut (a proxy drops everything) while the room
    floods: the edge's datagrams wait for the congestion window, the edge conflates
    them per key, and after the cut the subscriber gets the newest update of every
    key, never an older one after a newer one, over datagrams on the same session."""
    room, keys, rounds = "dp-quic", 16, 60
    proxy = await LossyUdpProxy("127.0.0.1", edge.quic_port).start()
    seen: dict[int, list[int]] = {k: [] for k in range(keys)}

    def record(m: Message) -> None:
        k, n = (int(x) for x in m.payload.split(b":")[:2])
        seen[k].append(n)

    sub = await connect(proxy.url, token("sub"))
    pub = await connect(edge.url, token("pub", kind="service"))
    try:
        await sub.join(room, delivery="latest", on_message=record)
        await pub.join(room)
        await pub.publish(room, body(0, 0)[:64], reliable=False, key="k0")
        await wait_until(lambda: bool(seen[0]), 10, "an update before the cut")
        before = await counter(edge, "edge_delivery_conflated")
        proxy.blackhole()
        for n in range(1, rounds + 1):
            for k in range(keys):
                await pub.publish(room, body(n, k)[:200], reliable=False, key=f"k{k}")
            await asyncio.sleep(0.005)
        for _ in range(200):  # the premise: the edge held and conflated (10 s at most)
            if await counter(edge, "edge_delivery_conflated") > before:
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the edge never conflated: the cut did not back it up")
        proxy.restore()
        await wait_until(lambda: all(v and v[-1] == rounds for v in seen.values()), 20,
                         "the newest update of every key after the cut")
        for k, values in seen.items():
            assert values == sorted(set(values)), f"key {k}: a stale or repeated update"
        assert sub.reconnects == 0 and sub.transport == "quic"
    finally:
        proxy.stop()
        await pub.close()
        await sub.close()
