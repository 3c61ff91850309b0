"""Reading an edge's ``/metrics`` from the local tooling (the demo, ``bench games``)."""

from __future__ import annotations

import contextlib
import os
import re
import ssl
import urllib.request
from typing import Any

__all__ = ["scrape_metrics", "bucket_quantile_ms", "continuity_figures", "LABELS"]

#: The ``name="value"`` labels in a series name :func:`scrape_metrics` returns.
LABELS = re.compile(r'(\w+)="([^"]*)"')


def scrape_metrics(http_url: str, timeout: float = 2.0) -> dict[str, float]:
    """Every sample of ``http_url``/metrics, by series name (labelled series keep their
    labels in the name); ``{}`` when the edge does not answer."""
    out: dict[str, float] = {}
    try:
        # https:// (an edge serving wss://) is checked against EDGE_RELAY_CA_FILE, the
        # file the SDK trusts too (the demo sets it to its development certificate).
        context = (ssl.create_default_context(cafile=os.environ.get("EDGE_RELAY_CA_FILE")
                                              or None)
                   if http_url.startswith("https://") else None)
        with urllib.request.urlopen(http_url + "/metrics", timeout=timeout,
                                    context=context) as resp:
            text = resp.read().decode()
    except OSError:
        return out
    for line in text.splitlines():
        if line.startswith("#") or " " not in line:
            continue
        name, _, value = line.rpartition(" ")
        with contextlib.suppress(ValueError):
            out[name] = float(value)
    return out


def bucket_quantile_ms(before: list[dict[str, float]], after: list[dict[str, float]],
                       name: str, q: float) -> float | None:
    """The upper bound (ms) of the bucket of histogram ``name`` that holds quantile ``q``
    of the observations made between the scrapes ``before`` and ``after`` (one pair per
    edge, summed; ``{}`` as ``before`` counts from the start); None without any."""
    buckets: dict[float, float] = {}
    total = 0.0
    for a, b in zip(before, after, strict=True):
        total += b.get(f"{name}_count", 0.0) - a.get(f"{name}_count", 0.0)
        for key, v in b.items():
            if key.startswith(f"{name}_bucket{{") and 'le="+Inf"' not in key:
                le = float(key.split('le="')[1].split('"')[0])
                buckets[le] = buckets.get(le, 0.0) + v - a.get(key, 0.0)
    if not total:
        return None
    for le in sorted(buckets):
        if buckets[le] >= q * total:
            return round(le * 1000, 3)
    return None


def continuity_figures(scrapes: list[dict[str, float]]) -> dict[str, Any]:
    """Game-room continuity figures over the edges of ``scrapes`` (parsed ``/metrics``
    of the edges still running, counted since they started): snapshots stored, the
    last one's size and capture time, restores (count, the last one's time, p50/p99
    bucket bounds), entries replayed, rooms moved in live from a drain's snapshot."""
    def total(name: str) -> float:
        return sum(m.get(name, 0.0) for m in scrapes)

    def largest(name: str) -> float:
        return max((m.get(name, 0.0) for m in scrapes), default=0.0)
    since_start: list[dict[str, float]] = [{} for _ in scrapes]
    return {
        "snapshots": int(total("edge_game_snapshots_total")),
        "snapshot_bytes": int(largest("edge_game_last_snapshot_bytes")),
        "capture_ms": round(1000 * largest("edge_game_last_capture_seconds"), 3),
        "restores": int(total("edge_game_restores_total")),
        "restore_ms": round(1000 * largest("edge_game_last_restore_seconds"), 1),
        "restore_p50_ms": bucket_quantile_ms(since_start, scrapes,
                                             "edge_game_restore_seconds", 0.5),
        "restore_p99_ms": bucket_quantile_ms(since_start, scrapes,
                                             "edge_game_restore_seconds", 0.99),
        "replayed_entries": int(total("edge_game_replayed_entries_total")),
        "moved_in": int(total("edge_game_moved_in_total")),
    }
