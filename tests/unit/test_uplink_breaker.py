"""Circuit breaker transitions (sans-I/O: time is passed in)."""

from __future__ import annotations

import pytest

from edge_node.uplink import BreakerState, CircuitBreaker


def test_opens_after_threshold_consecutive_failures() -> None:
    b = CircuitBreaker(failure_threshold=3, reset_timeout=1.0)
    for t in (0.0, 0.1):
        assert b.allow(t)
        b.record_failure(t)
    assert b.state is BreakerState.CLOSED
    b.record_success(0.2)  # resets the consecutive count
    for t in (0.3, 0.4):
        b.record_failure(t)
    assert b.state is BreakerState.CLOSED
    b.record_failure(0.5)
    assert b.state is BreakerState.OPEN and b.opens == 1
    assert not b.allow(1.4)
    assert b.retry_at() == pytest.approx(1.5)


def test_half_open_probe_closes_on_success() -> None:
    b = CircuitBreaker(failure_threshold=1, reset_timeout=1.0)
    b.record_failure(0.0)
    assert b.allow(1.0)
    assert b.state is BreakerState.HALF_OPEN
    b.record_success(1.0)
    assert b.state is BreakerState.CLOSED


def test_half_open_failure_reopens_with_backoff_capped() -> None:
    b = CircuitBreaker(failure_threshold=1, reset_timeout=1.0, max_reset_timeout=3.0)
    b.record_failure(0.0)
    now = 0.0
    expected = [2.0, 3.0, 3.0]
    for timeout in expected:
        now = b.retry_at()
        assert b.allow(now) and b.state is BreakerState.HALF_OPEN
        b.record_failure(now)
        assert b.state is BreakerState.OPEN
        assert b.retry_at() - now == pytest.approx(timeout)
    assert b.opens == 4
    now = b.retry_at()
    assert b.allow(now)
    b.record_success(now)
    assert b.state is BreakerState.CLOSED and b.timeout == 1.0


def test_success_threshold() -> None:
    b = CircuitBreaker(failure_threshold=1, reset_timeout=0.5, success_threshold=2)
    b.record_failure(0.0)
    assert b.allow(0.5)
    b.record_success(0.5)
    assert b.state is BreakerState.HALF_OPEN
    b.record_success(0.6)
    assert b.state is BreakerState.CLOSED


def test_rejects_bad_settings() -> None:
    with pytest.raises(ValueError):
        CircuitBreaker(failure_threshold=0)
    with pytest.raises(ValueError):
        CircuitBreaker(reset_timeout=0)
