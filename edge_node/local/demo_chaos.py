"""What the demo's players saw of its chaos: the drain (live handover) and the kill
(resume on a neighbour).  Pure functions of the players' arrival times and counters."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any, Protocol

from client_sdk import Client

__all__ = ["handover_summary", "failover_summary", "max_gap"]


class Player(Protocol):
    """What these summaries read of a demo player."""

    client: Client
    arrivals: list[float]
    edge_at_kill: str
    edge_at_drain: str


def max_gap(arrivals: list[float], t0: float, t1: float) -> float:
    """Longest silence between ``t0`` and ``t1`` in a sorted arrival list."""
    window = [t for t in arrivals if t0 <= t <= t1]
    if not window:
        return t1 - t0
    worst = max(window[0] - t0, t1 - window[-1])
    return max([worst, *(b - a for a, b in itertools.pairwise(window))])


def handover_summary(players: Sequence[Player], drained: dict[str, Any],
                      killed: dict[str, Any]) -> dict[str, Any]:
    if not drained:
        return {"drained_edge": None}
    t = drained["t"]
    end = killed.get("t", t + 10.0) - 0.05  # up to the kill, which has its own figures
    moved = [p for p in players if p.edge_at_drain == drained["edge"]]
    gaps = [max_gap(p.arrivals, t, min(end, t + 5.0)) for p in moved]
    return {
        "drained_edge": drained["edge"],
        "drained_by": drained.get("how", "SIGTERM"),
        "clients_on_drained_edge": len(moved),
        "clients_moved": sum(1 for p in moved if p.client.handoffs >= 1),
        "clients_disconnected": sum(1 for p in moved if p.client.reconnects >= 1
                                    and p.edge_at_kill == drained["edge"]),
        "max_gap_ms": round(max(gaps) * 1000, 1) if gaps else None,
    }


def failover_summary(players: Sequence[Player], killed: dict[str, Any]) -> dict[str, Any]:
    if not killed:
        return {"killed_edge": None}
    t_kill = killed["t"]
    victims = [p for p in players if p.edge_at_kill == killed["edge"]]
    resumed = [p for p in victims if p.client.reconnects >= 1 and p.client.connected
               and p.client.edge_id != killed["edge"]]
    gaps = []
    for p in players:
        after = [t for t in p.arrivals if t >= t_kill - 1.0]
        prev = None
        worst = 0.0
        for t in after:
            if prev is not None:
                worst = max(worst, t - prev)
            prev = t
        if after and after[0] > t_kill:
            worst = max(worst, after[0] - t_kill)
        gaps.append(worst)
    not_recovered = sum(1 for p in players for ev in p.client.recoveries if not ev.recovered)
    replayed = sum(ev.replayed for p in players for ev in p.client.recoveries)
    return {
        "killed_edge": killed["edge"],
        "clients_on_killed_edge": len(victims),
        "clients_resumed": len(resumed),
        "recovered_false": not_recovered,
        "replayed": replayed,
        "max_gap_ms": round(max(gaps) * 1000, 1) if gaps else None,
        "median_gap_ms": round(sorted(gaps)[len(gaps) // 2] * 1000, 1) if gaps else None,
    }
