"""Single Redis vs Redis Cluster probes (the figures in docs/redis-cluster.md).

``python -m bench.cluster_probe latency``: cross-edge delivery and publish-to-ack latency
(publisher on the owner edge, subscriber on a second edge) on one embedded Redis, then on
a local 6-node cluster with ``WAIT`` (the cluster default) and without it.

``python -m bench.cluster_probe primary-kill [--no-wait]``: a publisher at ``--rate``
messages/s, owner and mirror on two edges; the Redis primary serving the room is
SIGKILLed and restarted as soon as its replica is promoted (as Kubernetes would).
Reports promotion time, the longest ack wait, acks and deliveries.

Prints one JSON object per configuration.  Everything runs on loopback and is stopped on
exit.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import struct
import sys
import time
from typing import Any

from client_sdk import connect
from client_sdk.protocol import mint_token
from edge_node.local.launch import spawn_edge
from edge_node.local.redis_server import RedisClusterServer, start_cluster, start_redis
from edge_node.redis_io import keys as redis_keys

__all__ = ["main"]

_SECRET = secrets.token_urlsafe(24).encode()
_N = struct.Struct(">I")


def _tok(subject: str) -> str:
    return mint_token(_SECRET, subject, "player", ["*"], now=time.time(), ttl=3600)


def _q(xs: list[float], f: float) -> float:
    return round(sorted(xs)[int(f * (len(xs) - 1))] * 1000, 2) if xs else float("nan")


async def _latency(url: str, n: int, env: dict[str, str]) -> dict[str, Any]:
    a = spawn_edge(redis_url=url, secret=_SECRET, edge_id="probe-a", env=env)
    b = spawn_edge(redis_url=url, secret=_SECRET, edge_id="probe-b", env=env)
    try:
        pub = await connect(a.url, _tok("pub"), rtt_probe_interval=None)
        await pub.join("probe")
        sub = await connect(b.url, _tok("sub"), rtt_probe_interval=None)
        sent: dict[bytes, float] = {}
        lat: list[float] = []

        def on(m: Any) -> None:
            t = sent.get(m.payload)
            if t is not None:
                lat.append(time.perf_counter() - t)

        await sub.join("probe", on_message=on)
        await asyncio.sleep(0.5)
        acks: list[float] = []
        for i in range(n):
            p = _N.pack(i)
            sent[p] = t0 = time.perf_counter()
            await pub.publish("probe", p)
            acks.append(time.perf_counter() - t0)
            await asyncio.sleep(0.01)
        await asyncio.sleep(1.0)
        await pub.close()
        await sub.close()
        return {"delivered": len(lat), "sent": n, "xedge_p50_ms": _q(lat, 0.5),
                "xedge_p99_ms": _q(lat, 0.99), "ack_p50_ms": _q(acks, 0.5),
                "ack_p99_ms": _q(acks, 0.99)}
    finally:
        a.stop()
        b.stop()


async def _primary_kill(cl: RedisClusterServer, n: int, rate: float,
                        env: dict[str, str]) -> dict[str, Any]:
    a = spawn_edge(redis_url=cl.url, secret=_SECRET, edge_id="probe-a", env=env)
    b = spawn_edge(redis_url=cl.url, secret=_SECRET, edge_id="probe-b", env=env)
    room = "probe-kill"
    key = redis_keys.room_log(room)
    try:
        first = await connect(a.url, _tok("first"), rtt_probe_interval=None)
        await first.join(room)
        pub = await connect([a.url, b.url], _tok("pub"), backoff_base=0.05, rtt_probe_interval=None)
        await pub.join(room)
        sub = await connect([b.url], _tok("sub"), backoff_base=0.05, rtt_probe_interval=None)
        seen: set[int] = set()
        await sub.join(room, on_message=lambda m: seen.add(_N.unpack_from(m.payload)[0]))
        t_sent: dict[int, float] = {}
        t_ack: dict[int, float] = {}

        async def one(i: int) -> None:
            t_sent[i] = time.monotonic()
            fut = pub.publish_nowait(room, _N.pack(i))
            assert fut is not None
            await asyncio.wait_for(fut, 60)
            t_ack[i] = time.monotonic()

        async def heal(port: int, tk: float) -> tuple[float, float]:
            await asyncio.to_thread(cl.wait_failover, key, port)
            promoted = time.monotonic() - tk
            await asyncio.to_thread(cl.restart, port)
            return promoted, time.monotonic() - tk

        tasks = []
        healer = None
        for i in range(n):
            tasks.append(asyncio.create_task(one(i)))
            if i == n // 3:
                port = cl.kill_primary_of(key)
                healer = asyncio.create_task(heal(port, time.monotonic()))
            await asyncio.sleep(1 / rate)
        await asyncio.gather(*tasks)
        assert healer is not None
        promoted, healed = await healer
        await asyncio.sleep(2.0)
        waits = [t_ack[i] - t_sent[i] for i in range(n)]
        for c in (first, pub, sub):
            await c.close()
        return {"promoted_s": round(promoted, 2), "replica_back_s": round(healed, 2),
                "acked": len(t_ack), "sent": n, "longest_ack_wait_s": round(max(waits), 2),
                "mirror_delivered": len(seen)}
    finally:
        a.stop()
        b.stop()


async def _run(a: argparse.Namespace) -> None:
    if a.what == "latency":
        single = start_redis()
        try:
            r = await _latency(single.url, a.messages, dict(os.environ))
            print(json.dumps({"redis": "single", **r}), flush=True)
        finally:
            single.stop()
    cl = start_cluster()
    try:
        if a.what == "latency":
            for wait in ("1", "0"):
                env = dict(os.environ, REDIS_WAIT_REPLICAS=wait)
                r = await _latency(cl.url, a.messages, env)
                print(json.dumps({"redis": "cluster", "wait_replicas": int(wait), **r}),
                      flush=True)
        else:
            wait = "0" if a.no_wait else "1"
            env = dict(os.environ, REDIS_WAIT_REPLICAS=wait)
            r = await _primary_kill(cl, a.messages, a.rate, env)
            print(json.dumps({"redis": "cluster", "wait_replicas": int(wait), **r}),
                  flush=True)
    finally:
        cl.stop()


def main(argv: list[str] | None = None) -> int:
    """Entry point (see the module docstring)."""
    p = argparse.ArgumentParser(prog="python -m bench.cluster_probe",
                                description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("what", choices=["latency", "primary-kill"])
    p.add_argument("--messages", type=int, default=400, help="messages (default 400)")
    p.add_argument("--rate", type=float, default=50.0,
                   help="primary-kill: publishes/s (default 50)")
    p.add_argument("--no-wait", action="store_true",
                   help="primary-kill: edges with REDIS_WAIT_REPLICAS=0")
    a = p.parse_args(argv)
    if a.messages < 10 or not 1 <= a.rate <= 10_000:
        p.error("--messages must be >= 10 and --rate 1..10000")
    asyncio.run(_run(a))
    return 0


if __name__ == "__main__":
    sys.exit(main())
