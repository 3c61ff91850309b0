"""Room handler specs: ``PATTERN=module:Class`` from flags and the environment, checked at
start with one clear line, and the first matching pattern wins."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_node.cli import UserError, room_handler_specs
from edge_node.games.loader import HandlerRegistry, HandlerSpecError, parse_specs
from edge_node.local.arena import Arena


def test_patterns_match_room_names_first_spec_wins() -> None:
    reg = HandlerRegistry(parse_specs(["arena-*=edge_node.local.arena:Arena",
                                       "*=edge_node.local.arena:Arena"]))
    assert reg.match("arena-7") is Arena
    assert reg.match("lobby") is Arena  # the catch-all
    only = HandlerRegistry(parse_specs(["arena-*=edge_node.local.arena:Arena"]))
    assert only.match("lobby") is None and only.match("arena-") is Arena
    assert not HandlerRegistry() and HandlerRegistry().match("arena-1") is None
    assert only.describe() == ["arena-*=edge_node.local.arena:Arena"]


@pytest.mark.parametrize("spec, problem", [
    ("arena-*", "expected PATTERN=module:Class"),
    ("=edge_node.local.arena:Arena", "expected PATTERN=module:Class"),
    ("arena-*=edge_node.local.arena", "expected PATTERN=module:Class"),
    ("arena-*=no_such_module_xyz:Arena", "cannot import 'no_such_module_xyz'"),
    ("arena-*=edge_node.local.arena:Nope", "has no 'Nope'"),
    ("arena-*=edge_node.local.arena:SIZE", "is not a RoomHandler subclass"),
])
def test_bad_specs_say_what_is_wrong(spec: str, problem: str) -> None:
    with pytest.raises(HandlerSpecError, match=problem):
        parse_specs([spec])


def test_the_cli_reads_flags_and_the_environment_and_reports_one_line() -> None:
    specs = room_handler_specs(["arena-*=edge_node.local.arena:Arena"],
                               " duel-*=edge_node.local.arena:Arena ,")
    assert specs == ("arena-*=edge_node.local.arena:Arena", "duel-*=edge_node.local.arena:Arena")
    with pytest.raises(UserError, match="cannot import"):
        room_handler_specs([], "x=nope_mod:Y")


def test_a_tick_rate_out_of_range_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Arena, "tick_rate", 120)
    with pytest.raises(HandlerSpecError, match="tick_rate must be 1-60"):
        parse_specs(["a=edge_node.local.arena:Arena"])


def test_listings_keep_fresh_entries_matching_the_pattern() -> None:
    from edge_node.games.listing import pack_listing, unpack_listings

    now = 1000.0
    raw = {
        b"arena-1": pack_listing({"players": 2, "edge": "e1"}, now - 1),
        "arena-2": pack_listing({"players": 5}, now - 30),  # its owner stopped refreshing
        b"duel-1": pack_listing({"players": 1}, now),
        b"arena-3": b"not json",
        b"arena-4": b'{"players": 1}',  # no time: not trusted
    }
    got = unpack_listings(raw, "arena-*", now)
    assert [e["name"] for e in got] == ["arena-1"]
    assert got[0]["players"] == 2 and got[0]["edge"] == "e1"
    assert [e["name"] for e in unpack_listings(raw, "*", now, ttl=60)] == [
        "arena-1", "arena-2", "duel-1"]


def test_a_history_page_stops_at_the_limit_or_the_frame_budget() -> None:
    from edge_node.rooms.events import Record
    from edge_node.rooms.replay import history_page

    recs = [Record(1, i, "s", b"x" * 100, "e", i, i) for i in range(1, 8)]
    page = history_page(4, "r", recs, 5, False, budget=10_000)
    assert [m[1] for m in page.messages] == [1, 2, 3, 4, 5] and page.more
    assert not history_page(4, "r", recs[:3], 5, True, budget=10_000).more
    cut = history_page(4, "r", recs, 5, False, budget=300)  # about 130 bytes each
    assert [m[1] for m in cut.messages] == [1, 2] and cut.more
    one = history_page(4, "r", recs, 5, False, budget=10)  # never an empty page
    assert len(one.messages) == 1 and one.more


def test_handlers_load_from_installed_entry_points(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A package that declares ``[project.entry-points."edge_relay.rooms"]`` is found
    without any flag: here a distribution's metadata made on disk, put on sys.path."""
    import importlib
    import sys

    root = tmp_path
    dist = root / "mygame-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: mygame\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[edge_relay.rooms]\nduel-* = edge_node.local.arena:Arena\n")
    monkeypatch.setattr(sys, "path", [str(root), *sys.path])
    importlib.invalidate_caches()
    reg = HandlerRegistry.from_sources([], "")
    assert reg.describe() == ["duel-*=edge_node.local.arena:Arena"]
    assert reg.match("duel-9") is Arena and reg.match("arena-1") is None
    # Flags come first: they win over an entry point with the same pattern.
    first = HandlerRegistry.from_sources(["duel-*=tests.integration.game_handlers:Duo"], "")
    assert first.match("duel-9") is not Arena
    assert not HandlerRegistry.from_sources([], "", entry_points=False)
