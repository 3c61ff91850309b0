"""Redis key names of the origin's global view.

Every view key of a room or device carries the hash tag of the uplink shard the
room/device maps to (``{up:N}``, ``N = crc32(id) % shards``), the same tag as the
uplink stream ``er:{up:N}:stream``.  So one Lua call can check idempotency, apply a
whole batch and XACK it atomically, also on Redis Cluster.  Readers need the same
``shards`` setting as the edges and workers.
"""

from __future__ import annotations

from edge_node.contract import CONFIG_KEY, downlink_key, shard_of, stream_key

__all__ = ["ShardKeys", "GROUP", "downlink_key", "shard_of", "stream_key", "edge_info",
           "EDGES", "ORIGIN_CONFIG"]

#: The consumer group on every uplink stream.
GROUP = "origin"
#: Sorted set of edges (see edge_node.neighbours.registry).
EDGES = "er:edges"
#: Hash with the origin's shard count (written by workers, checked by the API).
ORIGIN_CONFIG = CONFIG_KEY  # deployment-wide settings (the shard count)


def edge_info(edge_id: str) -> str:
    """The edge registry's info hash (see edge_node.neighbours.registry)."""
    return f"er:{{edge:{edge_id}}}:info"


class ShardKeys:
    """Key names inside one uplink shard."""

    def __init__(self, shard: int) -> None:
        self.shard = shard
        self.p = f"er:{{up:{shard}}}:"

    @classmethod
    def of(cls, ident: str, shards: int) -> ShardKeys:
        """Keys of the shard that ``ident`` (room or device id) maps to."""
        return cls(shard_of(ident, shards))

    @property
    def stream(self) -> str:
        """The uplink stream."""
        return stream_key(self.shard)

    @property
    def stats(self) -> str:
        """Hash of counters: applied, duplicates, dead, trimmed, claimed, ``lag:B``, ``k:KIND``."""
        return self.p + "stats"

    def seen_prefix(self, edge_id: str) -> str:
        """Prefix of the idempotency bitmaps of one edge (``...:CHUNK`` appended)."""
        return f"{self.p}seen:{edge_id}:"

    @property
    def alerts(self) -> str:
        """List of recent alerts (JSON), newest first."""
        return self.p + "alerts"

    @property
    def dead(self) -> str:
        """List of dead-lettered entries (unknown kind, undecodable), newest first."""
        return self.p + "dead"

    def room(self, room: str, what: str) -> str:
        """``snap``/``snap_ts`` (hash, LWW), ``events`` (list), ``presence``/``presence_ts``,
        ``meta``/``meta_ts``."""
        return f"{self.p}room:{room}:{what}"

    def dev(self, device: str, what: str) -> str:
        """``reported``/``reported_ts``, ``desired``, ``meta`` (version, last_seen),
        ``last``/``last_ts``, ``roll:MINUTE``, ``cmds``, ``cmdq``, ``cmdstatus``."""
        return f"{self.p}dev:{device}:{what}"

    def sess(self, subject: str, what: str) -> str:
        """``state``/``state_ts``: the subject's last session state (online, edge)."""
        return f"{self.p}sess:{subject}:{what}"

    def edge(self, edge_id: str, what: str) -> str:
        """``status``/``status_ts``: the edge's last reported status."""
        return f"{self.p}edge:{edge_id}:{what}"
