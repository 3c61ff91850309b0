"""Prometheus exposition of the origin's cluster-wide counters (read from Redis)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from origin.effects import bucket_ms
from origin.forecast import Recommendation
from origin.hooks.stats import HookCollector
from origin.supervise import WorkerStatus

__all__ = ["render_metrics"]

#: Exposed lag bucket bounds, seconds (the stored 10 % buckets are folded into these).
LAG_BOUNDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
              10.0, 30.0, 60.0, 300.0)


class _Stats(Collector):
    def __init__(self, st: dict[str, Any]) -> None:
        self.st = st

    def collect(self) -> Iterator[Metric]:
        st = self.st
        for name, key, doc in (
            ("origin_applied", "applied", "Uplink entries applied to the global view"),
            ("origin_duplicates_ignored", "duplicates_ignored",
             "Uplink entries recognised as already applied"),
            ("origin_dead_letters", "dead", "Uplink entries dead-lettered"),
            ("origin_trimmed", "trimmed", "Pending entries trimmed before apply (acked)"),
            ("origin_claimed", "claimed", "Pending entries claimed from idle consumers"),
        ):
            c = CounterMetricFamily(name, doc)
            c.add_metric([], float(st[key]))
            yield c
        buckets: dict[int, int] = st["lag_buckets"]
        counts = [0] * len(LAG_BOUNDS)
        total = 0
        for b, n in buckets.items():
            total += n
            upper = bucket_ms(b) / 1000.0
            for i, bound in enumerate(LAG_BOUNDS):
                if upper <= bound:
                    counts[i] += n
                    break
        acc, hb = 0, []
        for bound, n in zip(LAG_BOUNDS, counts, strict=True):
            acc += n
            hb.append((repr(bound), float(acc)))
        hb.append(("+Inf", float(total)))
        h = HistogramMetricFamily("origin_lag_seconds",
                                  "Edge submit to origin apply (edge clock to origin clock)")
        h.add_metric([], hb, sum_value=None)
        yield h
        for name, key, doc in (
            ("origin_stream_length", "stream_length", "Entries (batches) in the uplink stream"),
            ("origin_group_lag", "group_lag", "Batches not yet delivered to any worker"),
            ("origin_pending", "pending", "Batches delivered but not acknowledged"),
        ):
            g = GaugeMetricFamily(name, doc, labels=["shard"])
            for sh in st["shards"]:
                if sh.get(key) is not None:
                    g.add_metric([str(sh["shard"])], float(sh[key]))
            yield g
        g = GaugeMetricFamily("origin_pending_by_consumer", "Pending batches per consumer",
                              labels=["consumer"])
        for c_name, n in st["pending_by_consumer"].items():
            g.add_metric([c_name], float(n))
        yield g


class _Forecast(Collector):
    """Per-region demand forecast (see origin.forecast); what the HPA scales on."""

    def __init__(self, recs: Sequence[Recommendation]) -> None:
        self.recs = recs

    def collect(self) -> Iterator[Metric]:
        for name, attr, doc in (
            ("origin_observed_connections", "connections",
             "Connections on the region's live edges at the last forecast step"),
            ("origin_observed_messages_per_second", "messages",
             "Messages/s delivered by the region's live edges at the last forecast step"),
            ("origin_forecast_connections", "forecast_connections",
             "Forecast peak of connections over the forecast horizon"),
            ("origin_forecast_messages_per_second", "forecast_messages",
             "Forecast peak of messages/s over the forecast horizon"),
            ("origin_recommended_replicas", "replicas",
             "Edge replicas the forecast peak needs (never below the reactive count)"),
            ("origin_reactive_replicas", "reactive_replicas",
             "Edge replicas the load observed now needs"),
        ):
            g = GaugeMetricFamily(name, doc, labels=["region"])
            for r in self.recs:
                g.add_metric([r.region], float(getattr(r, attr)))
            yield g


class _Workers(Collector):
    def __init__(self, st: WorkerStatus) -> None:
        self.st = st

    def collect(self) -> Iterator[Metric]:
        st = self.st
        for name, value, doc in (
                ("origin_workers_expected", st.expected,
                 "Worker processes `origin run` keeps running"),
                ("origin_workers_running", st.running, "Worker processes running now")):
            g = GaugeMetricFamily(name, doc)
            g.add_metric([], float(value))
            yield g
        c = CounterMetricFamily("origin_worker_restarts",
                                "Worker processes restarted after they exited")
        c.add_metric([], float(st.restarts))
        yield c


def render_metrics(stats: dict[str, Any],
                   forecast: Sequence[Recommendation] | None = None,
                   workers: WorkerStatus | None = None,
                   hooks: dict[str, Any] | None = None) -> bytes:
    """Prometheus text for :func:`origin.view.origin_stats` output, the latest
    forecast recommendations, (``origin run``) its workers and the origin functions'
    and webhooks' counters (:func:`origin.hooks.stats.read_hook_stats`) (blocking:
    run in a thread)."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(_Stats(stats))
    if forecast is not None:
        reg.register(_Forecast(forecast))
    if workers is not None:
        reg.register(_Workers(workers))
    if hooks is not None:
        reg.register(HookCollector(hooks))
    return generate_latest(reg)
