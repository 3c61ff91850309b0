"""What the origin may use of the edge: the records and keys the two share.

The origin reaches the edge's code only through this module, the Redis helpers
(:mod:`edge_node.redis_io`) and the process helpers (:mod:`edge_node.runtime`);
``tests/unit/test_layering.py`` holds it to that.  Everything named here is part of
the wire between edges and the origin, so a change to it is a change to both sides:

- the uplink's entry format and stream keys (:mod:`edge_node.uplink.wire`), and the
  shard count both sides must agree on (:mod:`edge_node.uplink.shards`);
- the edge registry in Redis, read by the origin's discovery endpoint and forecasts
  (:mod:`edge_node.neighbours.registry`), and the order edges are offered in
  (:mod:`edge_node.neighbours.geo`);
- the token secrets both verify (:func:`edge_node.config.secrets_from_env`);
- the running game rooms' listings (:mod:`edge_node.games.listing`, in the hash
  :func:`edge_node.redis_io.keys.game_listings`), read by the origin's ``GET /v1/rooms``.
"""

from __future__ import annotations

from edge_node.config import secrets_from_env
from edge_node.games.listing import LISTING_TTL, unpack_listings
from edge_node.neighbours.geo import distance_km, position_of, rank_edges
from edge_node.neighbours.registry import is_draining, live_edges
from edge_node.redis_io.keys import game_listings
from edge_node.uplink.shards import CONFIG_KEY, ShardCountMismatch, claim_shard_count
from edge_node.uplink.wire import (
    KINDS,
    Entry,
    WireError,
    downlink_key,
    shard_of,
    stream_key,
    unpack_batch,
)

__all__ = [
    "CONFIG_KEY", "KINDS", "LISTING_TTL", "Entry", "ShardCountMismatch", "WireError",
    "claim_shard_count", "distance_km", "downlink_key", "game_listings", "is_draining",
    "live_edges", "position_of", "rank_edges", "secrets_from_env", "shard_of", "stream_key",
    "unpack_batch", "unpack_listings",
]
