"""Edge ranking by distance band and load (pure logic)."""

from __future__ import annotations

import pytest

from edge_node.neighbours.geo import distance_km, position_of, rank_edges

PARIS, LONDON, NYC = (48.85, 2.35), (51.5, -0.12), (40.71, -74.0)


def _e(eid: str, pos: tuple[float, float] | None, conns: int) -> dict[str, str]:
    d = {"id": eid, "connections": str(conns)}
    if pos is not None:
        d |= {"lat": str(pos[0]), "lon": str(pos[1])}
    return d


def test_distance_paris_london_is_about_340_km() -> None:
    assert 330 < distance_km(*PARIS, *LONDON) < 350
    assert distance_km(*PARIS, *PARIS) == 0.0


def test_nearest_band_first_then_least_loaded() -> None:
    edges = [_e("nyc", NYC, 0), _e("paris-a", PARIS, 90), _e("paris-b", (48.9, 2.4), 10),
             _e("nopos", None, 0), _e("london", LONDON, 0)]
    ranked = [e["id"] for e in rank_edges(edges, PARIS)]
    # Both Paris edges are in the first 100 km band: the emptier one first.
    assert ranked == ["paris-b", "paris-a", "london", "nyc", "nopos"]


def test_without_a_caller_position_by_load_then_id() -> None:
    edges = [_e("b", PARIS, 5), _e("a", NYC, 5), _e("c", None, 1)]
    assert [e["id"] for e in rank_edges(edges, None)] == ["c", "a", "b"]


@pytest.mark.parametrize("info", [{}, {"lat": "x", "lon": "1"}, {"lat": "91", "lon": "0"},
                                  {"lat": "0", "lon": "181"}, {"lat": "1"}])
def test_invalid_positions_are_ignored(info: dict[str, str]) -> None:
    assert position_of(info) is None
    assert rank_edges([{"id": "z", **info}, _e("y", PARIS, 9)], PARIS)[0]["id"] == "y"
