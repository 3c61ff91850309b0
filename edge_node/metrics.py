"""Prometheus metrics for one edge, cheap on the hot path.

Per-delivery counters are plain integers on :class:`EdgeStats` (an ``inc()`` on
a prometheus Counter takes a lock); a custom collector reads them at scrape
time.  Label cardinality stays low: no per-client or per-room labels.
"""

from __future__ import annotations

import time
from collections import Counter as _Tally
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

__all__ = ["EdgeStats", "EdgeMetrics", "FANOUT_BUCKETS"]

#: Fan-out latency buckets (seconds): 10 µs .. 1 s.
FANOUT_BUCKETS = (
    1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 0.1, 1.0,
)


class EdgeStats:
    """Plain counters updated on the hot path."""

    def __init__(self) -> None:
        self.started = time.time()
        self.connections = 0
        self.connections_total = 0
        self.frames_in = 0
        self.bytes_in = 0
        self.publishes: _Tally[str] = _Tally()
        self.deliveries = 0
        self.delivered_bytes = 0
        self.errors: _Tally[int] = _Tally()
        self.closes: _Tally[int] = _Tally()
        self.slow_consumers = 0
        self.dropped_unreliable = 0
        self.rooms = 0
        self.stream_appended = 0
        self.stream_batches = 0
        self.stream_backlog = 0
        self.stream_errors = 0
        self.remote_deliveries = 0
        self.forwarded_publishes = 0
        self.stream_dropped = 0
        self.lease_takeovers = 0
        self.lease_steals = 0
        self.handovers = 0
        self.handoffs_sent = 0
        self.handoffs_completed = 0
        self.connects_rejected = 0
        self.recoveries: _Tally[str] = _Tally()
        self.replayed = 0
        self.duplicates_dropped = 0
        self.checkpoints = 0


class _StatsCollector(Collector):
    def __init__(self, stats: EdgeStats, edge_id: str, owner: EdgeMetrics) -> None:
        self.s = stats
        self.edge_id = edge_id
        self.owner = owner

    def _uplink(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        up = self.owner.uplink
        if up is None:
            return
        for name, attr, text in (
            ("edge_uplink_submitted", "submitted", "Entries submitted to the origin uplink"),
            ("edge_uplink_sent", "sent", "Uplink entries written to Redis"),
            ("edge_uplink_spooled", "spooled", "Uplink entries written to the disk spool"),
            ("edge_uplink_dropped_overflow", "dropped_overflow",
             "Uplink entries dropped by the spool's overflow policy"),
            ("edge_uplink_errors", "errors", "Failed uplink round trips"),
        ):
            c = CounterMetricFamily(name, text)
            c.add_metric([], float(getattr(up, attr, 0)))
            yield c
        for name, attr, text in (
            ("edge_uplink_backlog", "backlog", "Uplink entries waiting in memory"),
            ("edge_uplink_spool_size", "spool_size", "Uplink entries in the disk spool"),
        ):
            g = GaugeMetricFamily(name, text)
            g.add_metric([], float(getattr(up, attr, 0)))
            yield g
        g = GaugeMetricFamily("edge_uplink_breaker_open", "1 while the uplink circuit is open")
        g.add_metric([], 0.0 if getattr(up, "breaker_state", "closed") == "closed" else 1.0)
        yield g

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        s = self.s
        g = GaugeMetricFamily("edge_connections", "Open client connections")
        g.add_metric([], s.connections)
        yield g
        c = CounterMetricFamily("edge_connections_opened", "Client connections accepted")
        c.add_metric([], s.connections_total)
        yield c
        c = CounterMetricFamily("edge_frames_in", "Frames received from clients")
        c.add_metric([], s.frames_in)
        yield c
        c = CounterMetricFamily("edge_bytes_in", "Bytes received from clients (payload)")
        c.add_metric([], s.bytes_in)
        yield c
        c = CounterMetricFamily("edge_messages_in", "Publishes accepted", labels=["kind"])
        for kind, n in sorted(s.publishes.items()):
            c.add_metric([kind], n)
        yield c
        c = CounterMetricFamily("edge_messages_out", "Messages delivered to clients")
        c.add_metric([], s.deliveries)
        yield c
        c = CounterMetricFamily("edge_bytes_out", "Bytes of delivered messages")
        c.add_metric([], s.delivered_bytes)
        yield c
        c = CounterMetricFamily("edge_errors", "Error frames and error closes", labels=["code"])
        for code, n in sorted(s.errors.items()):
            c.add_metric([str(code)], n)
        yield c
        c = CounterMetricFamily("edge_slow_consumers", "Clients closed as slow consumers")
        c.add_metric([], s.slow_consumers)
        yield c
        c = CounterMetricFamily("edge_dropped_unreliable", "Unreliable messages dropped")
        c.add_metric([], s.dropped_unreliable)
        yield c
        g = GaugeMetricFamily("edge_rooms", "Rooms with members on this edge")
        g.add_metric([], s.rooms)
        yield g
        c = CounterMetricFamily("edge_stream_appended", "Messages appended to room streams")
        c.add_metric([], s.stream_appended)
        yield c
        c = CounterMetricFamily("edge_stream_batches", "Append round trips to Redis")
        c.add_metric([], s.stream_batches)
        yield c
        c = CounterMetricFamily("edge_stream_errors", "Failed append round trips")
        c.add_metric([], s.stream_errors)
        yield c
        g = GaugeMetricFamily("edge_stream_backlog", "Messages waiting to be appended")
        g.add_metric([], s.stream_backlog)
        yield g
        c = CounterMetricFamily("edge_remote_deliveries", "Messages received via Redis")
        c.add_metric([], s.remote_deliveries)
        yield c
        c = CounterMetricFamily("edge_forwarded_publishes", "Publishes forwarded to owners")
        c.add_metric([], s.forwarded_publishes)
        yield c
        c = CounterMetricFamily("edge_stream_dropped", "Queued appends dropped after fencing")
        c.add_metric([], s.stream_dropped)
        yield c
        c = CounterMetricFamily("edge_lease_takeovers", "Rooms taken over after an owner's "
                                "lease lapsed")
        c.add_metric([], s.lease_takeovers)
        yield c
        c = CounterMetricFamily("edge_lease_steals", "Leases taken from an owner edge that "
                                "did not answer a probe")
        c.add_metric([], s.lease_steals)
        yield c
        c = CounterMetricFamily("edge_room_handovers", "Room leases handed to a neighbour "
                                "while draining")
        c.add_metric([], s.handovers)
        yield c
        c = CounterMetricFamily("edge_client_handoffs", "Clients told to move while draining",
                                labels=["outcome"])
        c.add_metric(["sent"], s.handoffs_sent)
        c.add_metric(["moved"], s.handoffs_completed)
        yield c
        c = CounterMetricFamily("edge_connects_rejected", "New connections refused: draining "
                                "or over the connection-rate limit")
        c.add_metric([], s.connects_rejected)
        yield c
        c = CounterMetricFamily("edge_recoveries", "Room recoveries on resume", labels=["outcome"])
        for outcome in ("recovered", "not_recovered"):
            c.add_metric([outcome], s.recoveries.get(outcome, 0))
        yield c
        c = CounterMetricFamily("edge_replayed_messages", "Messages replayed on resume")
        c.add_metric([], s.replayed)
        yield c
        c = CounterMetricFamily("edge_duplicates_dropped", "Re-sent publishes dropped as "
                                "duplicates")
        c.add_metric([], s.duplicates_dropped)
        yield c
        c = CounterMetricFamily("edge_session_checkpoints", "Session checkpoints written")
        c.add_metric([], s.checkpoints)
        yield c
        yield from self._uplink()
        g = GaugeMetricFamily("edge_info", "Edge identity", labels=["edge_id"])
        g.add_metric([self.edge_id], 1)
        yield g


class EdgeMetrics:
    """The edge's registry: plain stats plus a fan-out latency histogram."""

    def __init__(self, edge_id: str) -> None:
        self.stats = EdgeStats()
        self.uplink: Any = None  # set by the server when the origin uplink runs
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(_StatsCollector(self.stats, edge_id, self))
        self.fanout_seconds = Histogram(
            "edge_fanout_seconds",
            "Time to fan one message out to the local members of a room",
            buckets=FANOUT_BUCKETS,
            registry=self.registry,
        )

        self.sync_lag_seconds = Histogram(
            "edge_sync_lag_seconds",
            "Time from assigning a position to the message being durable in Redis",
            buckets=(1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 0.1, 0.5, 2.5, 10.0),
            registry=self.registry,
        )

        self.resume_gap_seconds = Histogram(
            "edge_resume_gap_seconds",
            "Time from a session's last checkpoint on its previous connection to its resume "
            "here: the outage a client saw, plus up to one checkpoint interval",
            buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 120.0),
            registry=self.registry,
        )

    def render(self) -> bytes:
        """Prometheus text exposition of every metric."""
        return generate_latest(self.registry)
