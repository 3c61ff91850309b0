"""Prometheus metrics for one edge, cheap on the hot path.

Per-delivery counters are plain integers on :class:`EdgeStats` (an ``inc()`` on
a prometheus Counter takes a lock); a custom collector reads them at scrape
time.  Label cardinality stays low: no per-client or per-room labels.
"""

from __future__ import annotations

import time
from collections import Counter as _Tally
from collections.abc import Callable, Iterable, Iterator
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
        #: Delivery policies (edge_node.transports.held): updates replaced by a newer
        #: one of their key (latest), messages dropped for a slow reader (drop, latest).
        self.delivery_conflated = 0
        self.delivery_dropped = 0
        self.rooms = 0
        self.stream_appended = 0
        self.stream_batches = 0
        self.stream_backlog = 0
        self.stream_errors = 0
        self.remote_deliveries = 0
        self.forwarded_publishes = 0
        self.stream_dropped = 0
        self.stream_unreplicated = 0  # append batches held back: WAIT saw too few replicas
        self.stream_lost = 0  # rooms whose stream lost acknowledged entries (failover)
        self.lease_takeovers = 0
        self.lease_steals = 0
        self.handovers = 0
        self.handoffs_sent = 0
        self.handoffs_completed = 0
        self.connects_rejected = 0
        self.recoveries: _Tally[str] = _Tally()
        #: Room machine state changes, (from state, to state) -> count.
        self.room_transitions: _Tally[tuple[str, str]] = _Tally()
        #: Reconnections that asked to resume a session, by outcome.
        self.resumes: _Tally[str] = _Tally()
        #: REFRESH requests by outcome (edge_node.sessions.token_life.refresh).
        self.token_refreshes: _Tally[str] = _Tally()
        self.replayed = 0
        self.duplicates_dropped = 0
        self.checkpoints = 0


#: Unlabelled metrics read from :class:`EdgeStats`: (kind, name, help, attribute).
_PLAIN: tuple[tuple[str, str, str, str], ...] = (
    ("gauge", "edge_connections", "Open client connections", "connections"),
    ("counter", "edge_connections_opened", "Client connections accepted", "connections_total"),
    ("counter", "edge_frames_in", "Frames received from clients", "frames_in"),
    ("counter", "edge_bytes_in", "Bytes received from clients (payload)", "bytes_in"),
    ("counter", "edge_messages_out", "Messages delivered to clients", "deliveries"),
    ("counter", "edge_bytes_out", "Bytes of delivered messages", "delivered_bytes"),
    ("counter", "edge_slow_consumers", "Clients closed as slow consumers", "slow_consumers"),
    ("counter", "edge_dropped_unreliable", "Unreliable messages dropped", "dropped_unreliable"),
    ("counter", "edge_delivery_conflated",
     "Updates replaced by a newer one of their key for a slow 'latest' subscriber",
     "delivery_conflated"),
    ("counter", "edge_delivery_dropped",
     "Messages dropped for a slow 'drop' (or over-budget 'latest') subscriber",
     "delivery_dropped"),
    ("gauge", "edge_rooms", "Rooms with members on this edge", "rooms"),
    ("counter", "edge_stream_appended", "Messages appended to room streams", "stream_appended"),
    ("counter", "edge_stream_batches", "Append round trips to Redis", "stream_batches"),
    ("counter", "edge_stream_errors", "Failed append round trips", "stream_errors"),
    ("gauge", "edge_stream_backlog", "Messages waiting to be appended", "stream_backlog"),
    ("counter", "edge_remote_deliveries", "Messages received via Redis", "remote_deliveries"),
    ("counter", "edge_forwarded_publishes", "Publishes forwarded to owners",
     "forwarded_publishes"),
    ("counter", "edge_stream_dropped", "Queued appends dropped after fencing", "stream_dropped"),
    ("counter", "edge_stream_unreplicated",
     "Append batches not yet acknowledged: fewer replicas than required confirmed (WAIT)",
     "stream_unreplicated"),
    ("counter", "edge_stream_lost",
     "Rooms whose stream lost acknowledged entries in a Redis failover (detected)",
     "stream_lost"),
    ("counter", "edge_lease_takeovers", "Rooms taken over after an owner's lease lapsed",
     "lease_takeovers"),
    ("counter", "edge_lease_steals",
     "Leases taken from an owner edge that did not answer a probe", "lease_steals"),
    ("counter", "edge_room_handovers", "Room leases handed to a neighbour while draining",
     "handovers"),
    ("counter", "edge_connects_rejected",
     "New connections refused: draining or over the connection-rate limit",
     "connects_rejected"),
    ("counter", "edge_replayed_messages", "Messages replayed on resume", "replayed"),
    ("counter", "edge_duplicates_dropped", "Re-sent publishes dropped as duplicates",
     "duplicates_dropped"),
    ("counter", "edge_session_checkpoints", "Session checkpoints written", "checkpoints"),
)

#: Metrics of the origin uplink object (``Uplink``), same layout.
_UPLINK: tuple[tuple[str, str, str, str], ...] = (
    ("counter", "edge_uplink_submitted", "Entries submitted to the origin uplink", "submitted"),
    ("counter", "edge_uplink_sent", "Uplink entries written to Redis", "sent"),
    ("counter", "edge_uplink_spooled", "Uplink entries written to the disk spool", "spooled"),
    ("counter", "edge_uplink_dropped_overflow",
     "Uplink entries dropped by the spool's overflow policy", "dropped_overflow"),
    ("counter", "edge_uplink_errors", "Failed uplink round trips", "errors"),
    ("gauge", "edge_uplink_backlog", "Uplink entries waiting in memory", "backlog"),
    ("gauge", "edge_uplink_spool_size", "Uplink entries in the disk spool", "spool_size"),
)

_Family = CounterMetricFamily | GaugeMetricFamily


def _families(table: tuple[tuple[str, str, str, str], ...], source: object) -> Iterator[_Family]:
    for kind, name, text, attr in table:
        fam: _Family = (CounterMetricFamily if kind == "counter" else GaugeMetricFamily)(
            name, text)
        fam.add_metric([], float(getattr(source, attr, 0)))
        yield fam


def _labelled(name: str, text: str, label: str,
              values: Iterable[tuple[str, float]]) -> CounterMetricFamily:
    fam = CounterMetricFamily(name, text, labels=[label])
    for value, n in values:
        fam.add_metric([value], n)
    return fam


class _StatsCollector(Collector):
    def __init__(self, stats: EdgeStats, edge_id: str, owner: EdgeMetrics) -> None:
        self.s = stats
        self.edge_id = edge_id
        self.owner = owner

    def collect(self) -> Iterator[_Family]:
        s = self.s
        yield from _families(_PLAIN, s)
        yield _labelled("edge_messages_in", "Publishes accepted", "kind",
                        sorted(s.publishes.items()))
        yield _labelled("edge_errors", "Error frames and error closes", "code",
                        ((str(code), n) for code, n in sorted(s.errors.items())))
        yield _labelled("edge_client_handoffs", "Clients told to move while draining",
                        "outcome", (("sent", s.handoffs_sent), ("moved", s.handoffs_completed)))
        yield _labelled("edge_recoveries", "Room recoveries on resume", "outcome",
                        ((o, s.recoveries.get(o, 0)) for o in ("recovered", "not_recovered")))
        yield _labelled("edge_resume_attempts", "Client reconnections asking to resume a "
                        "session", "outcome", ((o, s.resumes.get(o, 0)) for o in (
                            "resumed", "session_expired", "resume_rejected", "retry_later")))
        yield _labelled("edge_token_refreshes", "Token refreshes (REFRESH) on live "
                        "connections, by outcome", "outcome", ((o, s.token_refreshes.get(o, 0))
                        for o in ("ok", "unauthorized", "expired", "forbidden")))
        t = CounterMetricFamily("edge_room_transitions", "Room machine state changes on this "
                                "edge (docs/architecture.md: the room machine)",
                                labels=["from", "to"])
        for (a, b), n in sorted(s.room_transitions.items()):
            t.add_metric([a, b], n)
        yield t
        states = self.owner.room_states
        g = GaugeMetricFamily("edge_rooms_by_state", "Rooms on this edge by the state of "
                              "their room machine", labels=["state"])
        for state, n in sorted((states() if states is not None else {}).items()):
            g.add_metric([state], n)
        yield g
        up = self.owner.uplink
        if up is not None:
            yield from _families(_UPLINK, up)
            g = GaugeMetricFamily("edge_uplink_breaker_open", "1 while the uplink circuit is open")
            g.add_metric([], 0.0 if getattr(up, "breaker_state", "closed") == "closed" else 1.0)
            yield g
        g = GaugeMetricFamily("edge_info", "Edge identity", labels=["edge_id"])
        g.add_metric([self.edge_id], 1)
        yield g


class EdgeMetrics:
    """The edge's registry: plain stats plus a fan-out latency histogram."""

    def __init__(self, edge_id: str) -> None:
        self.stats = EdgeStats()
        self.uplink: Any = None  # set by the server when the origin uplink runs
        #: Set by the hub: rooms by machine state, read at scrape time.
        self.room_states: Callable[[], dict[str, int]] | None = None
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

        self.failover_detection_seconds = Histogram(
            "edge_failover_detection_seconds",
            "Time from a dead edge's last heartbeat to this edge taking over its rooms "
            "(probe on a client's resume or unconfirmed forward, or lease expiry)",
            buckets=(0.1, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0),
            registry=self.registry,
        )

        self.handoff_seconds = Histogram(
            "edge_handoff_seconds",
            "Clients handed over by a draining edge: time from its HANDOFF frame to the "
            "client's resume on this edge",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
            registry=self.registry,
        )

    def render(self) -> bytes:
        """Prometheus text exposition of every metric."""
        return generate_latest(self.registry)
