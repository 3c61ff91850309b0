"""Reading an edge's ``/metrics`` from the local tooling (the demo, ``bench games``)."""

from __future__ import annotations

import contextlib
import urllib.request

__all__ = ["scrape_metrics", "bucket_quantile_ms"]


def scrape_metrics(http_url: str, timeout: float = 2.0) -> dict[str, float]:
    """Every sample of ``http_url``/metrics, by series name (labelled series keep their
    labels in the name); ``{}`` when the edge does not answer."""
    out: dict[str, float] = {}
    try:
        with urllib.request.urlopen(http_url + "/metrics", timeout=timeout) as resp:
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
