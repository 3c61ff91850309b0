"""client_sdk.rtt.EdgeRtts and the failover order it gives (client_sdk.failover.EdgeList)."""

from __future__ import annotations

import collections
import random

import pytest

from client_sdk.failover import EdgeList
from client_sdk.rtt import ALPHA, EdgeRtts

A, B, C, D = (f"ws://10.0.0.{i}:8700" for i in range(1, 5))


def test_the_first_sample_is_taken_as_it_is_then_smoothed() -> None:
    r = EdgeRtts()
    r.record(A, 0.100)
    assert r.get(A) == pytest.approx(0.100)
    r.record(A, 0.020)
    assert r.get(A) == pytest.approx((1 - ALPHA) * 0.100 + ALPHA * 0.020)
    assert r.snapshot() == {A: pytest.approx(0.090)}


def test_an_unanswered_probe_marks_the_edge_unreachable_until_one_answers() -> None:
    r = EdgeRtts()
    r.record(A, 0.010)
    r.record(A, None)
    assert r.get(A) is None and r.snapshot() == {A: None}
    r.record(A, 0.030)
    assert r.get(A) == pytest.approx((1 - ALPHA) * 0.010 + ALPHA * 0.030)


def test_order_measured_by_rtt_then_unmeasured_in_order_then_unreachable() -> None:
    r = EdgeRtts()
    r.record(C, 0.050)
    r.record(B, 0.010)
    r.record(A, None)
    assert r.order([A, B, C, D]) == [B, C, D, A]
    assert r.order([D, A]) == [D, A]


def test_an_alias_measurement_counts_for_the_same_edge_on_the_other_transport() -> None:
    r = EdgeRtts()
    r.record(A, 0.090)
    r.record(B, 0.010)
    assert r.order(["quic://10.0.0.1:8701", "quic://10.0.0.2:8701"],
                   {"quic://10.0.0.1:8701": A, "quic://10.0.0.2:8701": B}) == [
        "quic://10.0.0.2:8701", "quic://10.0.0.1:8701"]


def test_the_table_is_bounded() -> None:
    r = EdgeRtts(max_edges=2)
    for i, u in enumerate((A, B, C)):
        r.record(u, 0.01 * (i + 1))
    assert set(r.snapshot()) == {B, C}


def test_failover_candidates_follow_measured_rtt_not_the_servers_order() -> None:
    r = EdgeRtts()
    r.record(B, 0.200)
    r.record(C, 0.010)
    edges = EdgeList([A])
    # Going elsewhere: the neighbours by RTT, the current edge last.
    assert edges.candidates(A, [B, C], [A], elsewhere=True, rtts=r) == [C, B, A]
    # Reconnecting to the same edge: it stays first.
    assert edges.candidates(A, [B, C], [A], elsewhere=False, rtts=r) == [A, C, B]
    # Without measurements, reconnecting to the same edge: the server's order.
    assert edges.candidates(A, [B, C], [A], elsewhere=False) == [A, B, C]


def test_clients_of_a_dead_edge_spread_over_its_neighbours() -> None:
    """Going elsewhere without measurements, each client starts the (same) neighbour
    list at a random place: a thousand clients of a dead edge do not all pick the
    first neighbour."""
    firsts = collections.Counter(
        EdgeList([A], random.Random(i)).candidates(A, [B, C, D], [A], elsewhere=True)[0]
        for i in range(1000))
    assert set(firsts) == {B, C, D} and min(firsts.values()) > 250
    # Each order is the list rotated (every neighbour once), the dead edge last.
    rotations = ([B, C, D], [C, D, B], [D, B, C])
    for i in range(20):
        order = EdgeList([A], random.Random(i)).candidates(A, [B, C, D], [A],
                                                          elsewhere=True)
        assert order[-1] == A and order[:3] in rotations
