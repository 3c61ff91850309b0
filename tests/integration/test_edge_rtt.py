"""Latency-aware edge choice, continuously (client_sdk.rtt, client_sdk.probe).

Three real edges, each behind a delay-injecting TCP proxy that it advertises as its
URL (``--public-url``), so the neighbour lists the client gets name the proxies:
0.12 s, 0.04 s and no delay each way.  The client picks the fastest at connect, keeps
a smoothed RTT per edge in the background, and after the fastest edge is SIGKILLed it
resumes on the faster of the two others, although the server's neighbour list names
the slow one first.  A QUIC edge is probed with a Version Negotiation round trip.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from client_sdk import connect
from client_sdk.probe import probe_once, quic_version_probe
from edge_node.local.launch import EdgeProcess, spawn_edge
from tests.faultproxy import FaultProxy
from tests.helpers import SECRET
from tests.helpers import wait_until as _wait

DELAYS = {"rtt-a": 0.12, "rtt-b": 0.04, "rtt-c": 0.0}


async def test_the_fastest_edge_wins_at_connect_and_at_failover(
        edge_factory: Callable[..., EdgeProcess], token: Callable[..., str]) -> None:
    # The proxies listen first (their ports are the edges' public URLs), then each is
    # pointed at its edge.
    proxies = {n: await FaultProxy("127.0.0.1", 0, delay=d).start() for n, d in DELAYS.items()}
    edges = {n: edge_factory(n, "--public-url", proxies[n].url) for n in DELAYS}
    for n, p in proxies.items():
        p.target = ("127.0.0.1", edges[n].port)
    url = {n: p.url for n, p in proxies.items()}
    c = await connect([url["rtt-a"], url["rtt-b"], url["rtt-c"]], token("rtt"),
                      select="rtt", rtt_probe_interval=0.3, backoff_base=0.05)
    try:
        assert c.edge_id == "rtt-c"  # the configured order put it last

        def measured() -> bool:
            r = c.edge_rtts
            return all(r.get(u) is not None for u in url.values())

        await _wait(measured, 10, "every edge measured")
        r = c.edge_rtts
        assert r[url["rtt-a"]] > r[url["rtt-b"]] > r[url["rtt-c"]]  # type: ignore[operator]
        assert r[url["rtt-a"]] > 0.2 and 0.06 < r[url["rtt-b"]] < 0.2  # type: ignore[operator]
        # The server ranks neighbours by load, then id: the slow edge first.
        await _wait(lambda: len(c.neighbours) == 2, 10, "the neighbour list")
        assert c.neighbours == [url["rtt-a"], url["rtt-b"]]
        sid = c.session_id
        edges["rtt-c"].kill()
        await _wait(lambda: c.connected and c.edge_id != "rtt-c", 15, "failover")
        assert c.edge_id == "rtt-b" and c.session_id == sid
        await _wait(lambda: c.edge_rtts.get(url["rtt-c"], 0.0) is None, 5,
                    "the dead edge marked unreachable")
    finally:
        await c.close()
        for p in proxies.values():
            await p.stop()


async def test_a_quic_edge_is_probed_without_a_handshake(
        redis_url: str, quic_cert: tuple[str, str], tmp_path_factory) -> None:  # type: ignore[no-untyped-def]
    log = tmp_path_factory.mktemp("rtt-quic") / "edge.log"
    e = spawn_edge(redis_url=redis_url, secret=SECRET, edge_id="rtt-q", log_path=str(log),
                   quic=True, quic_cert=quic_cert[0], quic_key=quic_cert[1])
    try:
        rtt = await quic_version_probe(e.quic_url, timeout=2.0)
        assert rtt is not None and 0 < rtt < 0.5
        assert await probe_once(e.quic_url) is not None
        assert await probe_once(e.url) is not None  # its WebSocket port: /healthz
        e.kill()
        assert await quic_version_probe(e.quic_url, timeout=0.5) is None
        assert await probe_once(e.url, timeout=0.5) is None
    finally:
        e.stop()
        await asyncio.sleep(0)
