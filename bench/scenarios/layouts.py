"""Client layouts shared by several cluster scenarios."""

from __future__ import annotations

from typing import Any

from bench.cluster_load import ClientSpec, ClusterPlan


def fanout_layout(subscribers: int, publishers: int, rooms: int, rate: float,
                  p: dict[str, Any]) -> Any:
    """Subscribers on edge 1 in ``rooms`` rooms; publisher ``j`` (kind service) on one
    of the other edges, publishing into room ``j mod rooms`` at ``rate / publishers``.

    ``rooms`` is capped at ``publishers`` so that every room has a publisher.
    """
    rooms = max(1, min(rooms, publishers))

    def make(urls: tuple[str, ...], secret: bytes) -> ClusterPlan:
        others = len(urls) - 1
        subs = [ClientSpec(idx=i, home=0, room=f"fo-{i % rooms}", receives=True)
                for i in range(subscribers)]
        pubs = [ClientSpec(idx=subscribers + j, home=1 + j % others if others else 0,
                           room=f"fo-{j % rooms}", receives=False, publisher=j,
                           kind="service") for j in range(publishers)]
        return ClusterPlan(urls=urls, secret=secret, clients=tuple(subs + pubs),
                           publishers=publishers, hz=rate / publishers,
                           duration=p["duration"], warmup=p["warmup"], drain=p["drain"],
                           payload_size=p["payload_size"], reliable=p.get("reliable", True))

    return make
