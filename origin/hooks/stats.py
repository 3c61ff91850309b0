"""Counters of origin functions and webhooks: kept by each worker, flushed to Redis
(hash ``er:hooks:stats``, breakers in ``er:hooks:breakers``), read and exposed by the
API's ``/metrics`` (every worker is its own process; the API sums them in Redis).

Exposed (prometheus names, see docs/webhooks.md):

- ``origin_function_runs_total{kind,outcome}``: handler attempts, ``ok`` or ``error``;
- ``origin_function_dead_letters_total{kind}``;
- ``origin_webhook_deliveries_total{kind,outcome}``: ``ok``, ``failed`` (an attempt that
  failed and will be retried or dead-lettered), ``deferred`` (not tried: breaker open),
  ``dead_lettered``;
- ``origin_webhook_delivery_seconds{kind}``: histogram of delivery attempts' latency;
- ``origin_webhook_breaker_state{url,consumer}``: 0 closed, 1 half-open, 2 open (URL
  without its query string; entries not refreshed for 5 minutes are dropped);
- ``origin_webhook_breaker_opens_total{url,consumer}``;
- ``origin_hooks_backlog{shard}`` and ``origin_hooks_dead_letter_length{shard}``:
  lengths of the hooks stream and of the dead-letter stream;
- ``origin_hooks_trimmed_total``, ``origin_hooks_undecodable_total``.

A worker that dies loses at most its last second of counts (they are flushed every
``claim_interval``); events are never lost with them.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import redis.asyncio as aioredis
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from origin.hooks.record import BREAKERS_KEY, STATS_KEY, dead_stream, hooks_stream
from origin.webhooks.breaker import CircuitBreaker

__all__ = ["HookStats", "read_hook_stats", "HookCollector", "LATENCY_BOUNDS"]

#: Delivery latency histogram bounds, seconds.
LATENCY_BOUNDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
#: A breaker entry older than this is a worker that went away: not shown.
BREAKER_STALE_MS = 300_000


def _bucket(seconds: float) -> int:
    return next((i for i, b in enumerate(LATENCY_BOUNDS) if seconds <= b),
                len(LATENCY_BOUNDS))


class HookStats:
    """One worker's counters since the last :meth:`flush`."""

    def __init__(self, consumer: str) -> None:
        self.consumer = consumer
        self.counts: Counter[str] = Counter()
        self.latency_sum: dict[str, float] = {}
        self.breakers: dict[str, CircuitBreaker] = {}  # redacted URL -> its breaker

    def count(self, family: str, outcome: str, kind: str, n: int = 1) -> None:
        """``family``: ``fn``/``wh``; ``outcome``: ok, error, failed, deferred, dead."""
        self.counts[f"{family}:{outcome}:{kind}"] += n

    def latency(self, kind: str, seconds: float) -> None:
        """One webhook delivery attempt's latency."""
        self.counts[f"wh:lat:{kind}:{_bucket(seconds)}"] += 1
        self.latency_sum[kind] = self.latency_sum.get(kind, 0.0) + seconds

    async def flush(self, r: aioredis.Redis) -> None:
        """Add the counts to Redis and publish breaker states (one pipeline)."""
        counts, sums = self.counts, self.latency_sum
        self.counts, self.latency_sum = Counter(), {}
        pipe = r.pipeline(transaction=False)
        for f, n in counts.items():
            pipe.hincrby(STATS_KEY, f, n)
        for kind, s in sums.items():
            pipe.hincrbyfloat(STATS_KEY, f"wh:latsum:{kind}", s)
        now_ms = int(time.time() * 1000)
        for url, b in self.breakers.items():
            pipe.hset(BREAKERS_KEY, f"{url}|{self.consumer}",
                      f"{b.state.value}|{b.opens}|{now_ms}")
        try:
            await pipe.execute()
        except BaseException:
            self.counts.update(counts)  # not lost: sent with the next flush
            for k, v in sums.items():
                self.latency_sum[k] = self.latency_sum.get(k, 0.0) + v
            raise


def _s(b: Any) -> str:
    return b.decode() if isinstance(b, bytes) else str(b)


async def read_hook_stats(r: aioredis.Redis, shards: int) -> dict[str, Any]:
    """What :class:`HookCollector` shows: ``counts`` (field -> number), ``breakers``
    (``[(url, consumer, state, opens)]``), per-shard ``backlog`` and ``dead``."""
    raw: Any = await r.hgetall(STATS_KEY)
    counts = {_s(k): float(v) for k, v in raw.items()}
    braw: Any = await r.hgetall(BREAKERS_KEY)
    now_ms = time.time() * 1000
    breakers: list[tuple[str, str, int, int]] = []
    for k, v in braw.items():
        url, _, consumer = _s(k).rpartition("|")
        parts = _s(v).split("|")
        if len(parts) == 3 and now_ms - float(parts[2]) < BREAKER_STALE_MS:
            breakers.append((url, consumer, int(parts[0]), int(parts[1])))
    pipe = r.pipeline(transaction=False)
    for i in range(shards):
        pipe.xlen(hooks_stream(i))
        pipe.xlen(dead_stream(i))
    lens: Any = await pipe.execute()
    return {"counts": counts, "breakers": sorted(breakers),
            "backlog": [int(x) for x in lens[0::2]], "dead": [int(x) for x in lens[1::2]]}


class HookCollector(Collector):
    """Prometheus families of :func:`read_hook_stats` output."""

    def __init__(self, st: dict[str, Any]) -> None:
        self.st = st

    def collect(self) -> Iterator[Metric]:
        counts: dict[str, float] = self.st["counts"]
        runs = CounterMetricFamily("origin_function_runs", "Origin function attempts",
                                   labels=["kind", "outcome"])
        fdead = CounterMetricFamily("origin_function_dead_letters",
                                    "Events dead-lettered by an origin function",
                                    labels=["kind"])
        dels = CounterMetricFamily("origin_webhook_deliveries", "Webhook delivery outcomes",
                                   labels=["kind", "outcome"])
        lat: dict[str, list[float]] = {}
        for f, n in sorted(counts.items()):
            fam, _, rest = f.partition(":")
            outcome, _, kind = rest.partition(":")
            if fam == "fn" and outcome in ("ok", "error"):
                runs.add_metric([kind, outcome], n)
            elif fam == "fn" and outcome == "dead":
                fdead.add_metric([kind], n)
            elif fam == "wh" and outcome in ("ok", "failed", "deferred"):
                dels.add_metric([kind, outcome], n)
            elif fam == "wh" and outcome == "dead":
                dels.add_metric([kind, "dead_lettered"], n)
            elif fam == "wh" and outcome == "lat":
                k, _, b = kind.rpartition(":")
                lat.setdefault(k, [0.0] * (len(LATENCY_BOUNDS) + 1))[int(b)] += n
        yield runs
        yield fdead
        yield dels
        h = HistogramMetricFamily("origin_webhook_delivery_seconds",
                                  "Webhook delivery attempt latency", labels=["kind"])
        for kind, buckets in sorted(lat.items()):
            acc, hb = 0.0, []
            for bound, n in zip((*map(repr, LATENCY_BOUNDS), "+Inf"), buckets, strict=True):
                acc += n
                hb.append((bound, acc))
            h.add_metric([kind], hb, sum_value=counts.get(f"wh:latsum:{kind}", 0.0))
        yield h
        g = GaugeMetricFamily("origin_webhook_breaker_state",
                              "Breaker per webhook URL and worker: 0 closed, 1 half-open, "
                              "2 open", labels=["url", "consumer"])
        c = CounterMetricFamily("origin_webhook_breaker_opens",
                                "Times the URL's breaker opened", labels=["url", "consumer"])
        for url, consumer, state, opens in self.st["breakers"]:
            g.add_metric([url, consumer], float(state))
            c.add_metric([url, consumer], float(opens))
        yield g
        yield c
        for name, key, doc in (
                ("origin_hooks_backlog", "backlog", "Events in the hooks stream"),
                ("origin_hooks_dead_letter_length", "dead", "Entries in the dead-letter stream")):
            gg = GaugeMetricFamily(name, doc, labels=["shard"])
            for i, n in enumerate(self.st[key]):
                gg.add_metric([str(i)], float(n))
            yield gg
        for name, key, doc in (
                ("origin_hooks_trimmed", "trimmed",
                 "Hooks entries trimmed before their jobs ran"),
                ("origin_hooks_undecodable", "undecodable", "Malformed hooks entries")):
            cc = CounterMetricFamily(name, doc)
            cc.add_metric([], counts.get(key, 0.0))
            yield cc
