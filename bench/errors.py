"""Exceptions of the benchmark harness."""

from __future__ import annotations


class BenchError(Exception):
    """A user error (bad option, unreadable file, missing target): exit status 2."""


class BenchFailure(Exception):
    """The benchmark could not run (a server did not start, a worker died): exit status 1."""
