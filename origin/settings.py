"""Origin settings: one frozen dataclass, filled from flags and ``ORIGIN_*`` variables."""

from __future__ import annotations

import os
from dataclasses import dataclass

__all__ = ["OriginSettings", "api_keys_from_env"]


def api_keys_from_env(value: str | None = None) -> tuple[str, ...]:
    """Parse ``ORIGIN_API_KEYS`` (comma-separated; empty = no key accepted)."""
    raw = os.environ.get("ORIGIN_API_KEYS", "") if value is None else value
    return tuple(k.strip() for k in raw.split(",") if k.strip())


@dataclass(frozen=True, slots=True)
class OriginSettings:
    """Everything origin workers and the API need."""

    redis_url: str = "redis://127.0.0.1:6379/0"
    #: Uplink streams ``er:{up:0..shards-1}:stream``; must equal the edges' setting.
    shards: int = 4
    #: Stream entries (batches) per XREADGROUP and its BLOCK, ms.
    read_count: int = 32
    block_ms: int = 1000
    #: Pending entries idle longer than this are claimed from dead workers, ms.
    claim_idle_ms: int = 5000
    #: How often each worker runs XAUTOCLAIM, seconds.
    claim_interval: float = 1.0
    #: Idempotency window: how long an entry id is remembered, ms.
    seen_ttl_ms: int = 24 * 3600 * 1000
    #: Retention: recent room events, alerts, dead letters; telemetry rollups (ms).
    events_keep: int = 100
    alerts_keep: int = 1000
    dead_keep: int = 1000
    rollup_ttl_ms: int = 24 * 3600 * 1000
    #: Downlink stream cap per edge (approximate) and default command expiry, seconds.
    downlink_maxlen: int = 10_000
    command_ttl: float = 300.0
    #: Finished (acked or expired) commands whose records are kept per device.
    commands_keep: int = 50
    #: An edge is healthy if its registry heartbeat is younger than this, seconds.
    edge_ttl: float = 5.0
    #: API keys accepted by the HTTP API (env ORIGIN_API_KEYS).
    api_keys: tuple[str, ...] = ()
