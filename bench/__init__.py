"""Benchmark harness for the edge relay: open-loop load, HDR latency, reports.

Run ``python -m bench --help`` (or ``edge-relay bench --help``). The schema of the
JSON reports is documented in ``docs/bench.md``.
"""
