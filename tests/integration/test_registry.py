"""The edge registry as clients and the origin see it: position, load, neighbours."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis.asyncio as aioredis

from client_sdk import connect
from edge_node.local.launch import spawn_edge
from edge_node.redis_io import keys as K
from tests.helpers import SECRET, wait_until

pytestmark = pytest.mark.timeout(60)


async def test_heartbeat_carries_position_and_load_and_neighbours_are_nearest_first(
        redis_url: str, edge_factory: Any, token: Any) -> None:
    paris = edge_factory("edge-paris", "--position", "48.85,2.35")
    edge_factory("edge-nyc", "--position", "40.71,-74.0")
    london_edge = edge_factory("edge-london", "--position", "51.5,-0.12")
    r = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        c = await connect(paris.url, token("geo"))
        # London is busier than New York: by load alone New York would come first.
        busy = [await connect(london_edge.url, token(f"busy{i}")) for i in range(2)]
        try:
            got: dict[str, str] = {}
            for _ in range(100):  # the heartbeat runs every second
                got = await r.hgetall(K.edge_info("edge-paris"))
                if got.get("connections") == "1":
                    break
                await asyncio.sleep(0.1)
            assert (float(got["lat"]), float(got["lon"])) == (48.85, 2.35)
            assert float(got["cpu"]) >= 0.0 and int(float(got["send_queue_bytes"])) >= 0
            assert got["connections"] == "1"
            # Neighbour lists follow membership: nearest first, whatever the load
            # (distance bands of 100 km; London is 340 km from Paris, New York 5,800).
            london = await r.hget(K.edge_info("edge-london"), "url")
            nyc = await r.hget(K.edge_info("edge-nyc"), "url")
            await wait_until(lambda: c.neighbours[:2] == [london, nyc], 10,
                             f"neighbours nearest first (got {c.neighbours})")
        finally:
            for x in (c, *busy):
                await x.close()
    finally:
        await r.aclose()


def test_bad_position_is_a_clear_error(redis_url: str, tmp_path: Any) -> None:
    with pytest.raises(RuntimeError, match="exited with code 2"):
        spawn_edge(redis_url=redis_url, secret=SECRET, edge_id="edge-badpos",
                   extra_args=["--position", "100,0"], log_path=str(tmp_path / "e.log"),
                   timeout=10)
    assert "--position out of range" in (tmp_path / "e.log").read_text()
