"""Edge -> origin uplink: sharded, batched Redis Stream appends behind a circuit breaker,
with a bounded on-disk spool (store-and-forward).  See ``docs/origin.md``."""

from edge_node.uplink.breaker import BreakerState, CircuitBreaker
from edge_node.uplink.shards import ShardCountMismatch, claim_shard_count
from edge_node.uplink.spool import AppendResult, Spool
from edge_node.uplink.uplink import Uplink, UplinkSettings
from edge_node.uplink.wire import KINDS, Entry, WireError, downlink_key, shard_of, stream_key

__all__ = [
    "AppendResult",
    "BreakerState",
    "CircuitBreaker",
    "Entry",
    "KINDS",
    "ShardCountMismatch",
    "Spool",
    "Uplink",
    "UplinkSettings",
    "WireError",
    "claim_shard_count",
    "downlink_key",
    "shard_of",
    "stream_key",
]
