"""Benchmark scenarios: each has a parent side (``NAME.py``) and a load side (``NAME_load.py``)."""
