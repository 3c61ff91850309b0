"""The sans-I/O parts of webhooks and origin functions: the retry schedule and its
dead-letter decision (fake clock, fake random source), the breaker's state machine
(transition table, fake clock), signatures, and the HTTP status verdicts."""

from __future__ import annotations

import random

import pytest

from origin.hooks.record import OriginEvent, attach_hook, hook_op
from origin.hooks.retry import GiveUp, Retry, RetryPolicy
from origin.webhooks.breaker import TRANSITIONS, BreakerEvent, BreakerState, CircuitBreaker
from origin.webhooks.signing import sign, verify
from origin.webhooks.target import classify

# -- retry schedule -------------------------------------------------------------------


def test_ceiling_doubles_up_to_the_cap() -> None:
    p = RetryPolicy(max_attempts=10, base=0.5, cap=4.0, max_elapsed=1000)
    assert [p.ceiling(n) for n in range(1, 7)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert p.ceiling(10_000) == 4.0  # no overflow on a huge attempt number


def test_full_jitter_spans_zero_to_the_ceiling() -> None:
    p = RetryPolicy(base=1.0, cap=60.0)
    assert p.delay(3, rng=lambda: 0.0) == 0.0
    assert p.delay(3, rng=lambda: 0.5) == 2.0
    assert p.delay(3, rng=lambda: 0.999) == pytest.approx(3.996)
    rng = random.Random(7)
    delays = [p.delay(4, rng.random) for _ in range(2000)]
    assert 0.0 <= min(delays) < 0.1 and 7.9 < max(delays) <= 8.0  # uniform over [0, 8]


def test_schedule_with_a_fake_clock_is_bounded_by_attempts() -> None:
    p = RetryPolicy(max_attempts=4, base=1.0, cap=10.0, max_elapsed=1000)
    now, first, attempts, waits = 100.0, 100.0, 0, []
    while True:
        attempts += 1  # an attempt at `now` fails
        d = p.decide(attempts, first, now, rng=lambda: 1.0)
        if isinstance(d, GiveUp):
            break
        waits.append(d.at - now)
        now = d.at
    assert waits == [1.0, 2.0, 4.0]
    assert attempts == 4 and d == GiveUp("attempts")


def test_dead_letter_when_the_next_retry_is_past_max_elapsed() -> None:
    p = RetryPolicy(max_attempts=100, base=1.0, cap=8.0, max_elapsed=10.0)
    assert p.decide(1, first_at=0.0, now=5.0, rng=lambda: 1.0) == Retry(6.0)
    assert p.decide(3, first_at=0.0, now=5.0, rng=lambda: 1.0) == Retry(9.0)
    assert p.decide(4, first_at=0.0, now=5.0, rng=lambda: 1.0) == GiveUp("elapsed")
    assert p.decide(1, first_at=0.0, now=5.0, permanent=True) == GiveUp("permanent")


def test_defer_waits_for_the_breaker_within_the_time_bound() -> None:
    p = RetryPolicy(max_elapsed=60.0)
    assert p.defer(not_before=30.0, first_at=0.0) == Retry(30.0)
    assert p.defer(not_before=61.0, first_at=0.0) == GiveUp("elapsed")


@pytest.mark.parametrize("kw", [{"max_attempts": 0}, {"base": 0}, {"base": 5, "cap": 1},
                                {"max_elapsed": 0}])
def test_bad_policies_are_refused(kw: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**kw)  # type: ignore[arg-type]


# -- breaker --------------------------------------------------------------------------


def test_transition_table_is_the_documented_machine() -> None:
    S, E = BreakerState, BreakerEvent
    assert TRANSITIONS[(S.CLOSED, E.TRIP)] is S.OPEN
    assert TRANSITIONS[(S.OPEN, E.COOLDOWN_OVER)] is S.HALF_OPEN
    assert TRANSITIONS[(S.HALF_OPEN, E.SUCCESS)] is S.CLOSED
    assert TRANSITIONS[(S.HALF_OPEN, E.FAILURE)] is S.OPEN
    # OPEN only leaves by its cool-down; nothing reaches HALF_OPEN but OPEN.
    assert {e for (s, e) in TRANSITIONS if s is S.OPEN} == {E.COOLDOWN_OVER}
    assert {s for (s, _e), to in TRANSITIONS.items() if to is S.HALF_OPEN} == {S.OPEN}


def test_breaker_opens_after_n_consecutive_failures_and_probes_once() -> None:
    b = CircuitBreaker(threshold=3, cooldown=10.0)
    t = 0.0
    for _ in range(2):
        assert b.allow(t)
        b.record(False, t)
    b.record(True, t)  # a success resets the count
    for _ in range(3):
        assert b.allow(t)
        b.record(False, t)
    assert b.state is BreakerState.OPEN and b.opens == 1
    assert not b.allow(5.0) and b.retry_at(5.0) == 10.0
    assert b.allow(10.0)  # the probe
    assert b.state is BreakerState.HALF_OPEN
    assert not b.allow(10.0)  # only one probe at a time
    b.record(False, 11.0, probe=True)  # failed probe: open again for a cool-down
    assert b.state is BreakerState.OPEN and b.opens == 2
    assert not b.allow(20.0) and b.allow(21.0)
    b.record(True, 21.5, probe=True)
    assert b.state is BreakerState.CLOSED
    assert [(f.name, e.value, to.name) for f, e, to in b.history] == [
        ("CLOSED", "trip", "OPEN"), ("OPEN", "cooldown_over", "HALF_OPEN"),
        ("HALF_OPEN", "trip", "OPEN"), ("OPEN", "cooldown_over", "HALF_OPEN"),
        ("HALF_OPEN", "success", "CLOSED")]


def test_late_results_while_open_are_ignored() -> None:
    b = CircuitBreaker(threshold=1, cooldown=10.0)
    assert b.allow(0.0) and b.allow(0.0)  # two in flight
    b.record(False, 0.1)
    assert b.state is BreakerState.OPEN
    b.record(True, 0.2)  # the other one, sent before it opened
    assert b.state is BreakerState.OPEN
    assert b.allow(10.1)
    b.record(False, 10.2)  # not the probe: ignored in HALF_OPEN
    assert b.state is BreakerState.HALF_OPEN


def test_random_event_sequences_stay_in_the_table() -> None:
    rng = random.Random(3)
    for _ in range(200):
        b = CircuitBreaker(threshold=rng.randint(1, 4), cooldown=rng.choice([0.5, 2.0]))
        t = 0.0
        for _ in range(60):
            t += rng.random()
            if b.allow(t):  # as WebhookTarget does it
                probe = b.state is BreakerState.HALF_OPEN
                b.record(rng.random() < 0.5, t + 0.01, probe=probe)
        for f, e, to in b.history:
            assert TRANSITIONS[(f, e)] is to


# -- signatures -----------------------------------------------------------------------


def test_signature_roundtrip_and_known_vector() -> None:
    body = b'{"id":"e1:1"}'
    h = sign([b"0123456789abcdef"], body, 1700000000)
    assert h.startswith("t=1700000000,v1=") and len(h.split("v1=")[1]) == 64
    # The receiver's recipe (docs/webhooks.md), computed independently.
    import hashlib
    import hmac
    mac = hmac.new(b"0123456789abcdef", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert h == f"t=1700000000,v1={mac}"
    assert verify([b"0123456789abcdef"], body, h, now=1700000100)


def test_signature_refusals_and_rotation() -> None:
    body, old, new = b"{}", b"old-secret-0123456", b"new-secret-0123456"
    h = sign([new, old], body, 1000)
    assert verify([old], body, h, now=1000) and verify([new], body, h, now=1000)
    assert not verify([b"other-secret-01234"], body, h, now=1000)
    assert not verify([new], b"{ }", h, now=1000)  # body changed
    assert not verify([new], body, h, now=1000 + 301)  # too old (replay)
    assert not verify([new], body, "v1=" + h.split("v1=")[1], now=1000)  # no t
    with pytest.raises(ValueError):
        sign([], body, 1)


# -- verdicts and records -------------------------------------------------------------


@pytest.mark.parametrize(("status", "verdict"), [
    (200, "ok"), (204, "ok"), (301, "retry"), (400, "permanent"), (404, "permanent"),
    (408, "retry"), (410, "permanent"), (425, "retry"), (429, "retry"), (500, "retry"),
    (503, "retry")])
def test_http_status_verdicts(status: int, verdict: str) -> None:
    assert classify(status) == verdict


def test_hook_record_roundtrip_and_placement() -> None:
    from edge_node.contract import Entry

    e = Entry(7, "alert", "dev-1", 1234, {"metric": "t", "v": b"\x00"})
    op = hook_op(2, 1000, "edge-a", e)
    assert op[:6] == ["XADD", "er:{up:2}:hooks", "MAXLEN", "~", "1000", "*"]
    fields = {op[i].encode(): op[i + 1].encode() for i in range(6, len(op), 2)}
    ev = OriginEvent.from_fields(2, "1-1", fields)
    assert (ev.id, ev.kind, ev.key, ev.edge, ev.seq, ev.ts_ms) == (
        "edge-a:7", "alert", "dev-1", "edge-a", 7, 1234)
    assert ev.body == {"metric": "t", "v": {"$b64": "AA=="}}
    once: list[list[object]] = [["ONCE", "k", "m", "1", "dups", ["LPUSH", "x", "y"]]]
    attach_hook(once, op)  # inside the ONCE: queued exactly when recorded
    assert once[0][-1] == op and len(once) == 1
    plain: list[list[object]] = [["LPUSH", "x", "y"]]
    attach_hook(plain, op)
    assert plain[-1] == op
