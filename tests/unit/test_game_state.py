"""Game-room state: typed records with change tracking, the patch format, the client mirror.

The property that matters: whatever a handler does to its state, applying the recorded
patches to a mirror that started from the full state gives the same tree as the state
itself — and a mirror never applies a patch that does not follow its version.
"""

from __future__ import annotations

import random

import pytest

from client_sdk.protocol.state_sync import (
    DELETE,
    PatchRefused,
    StateMirror,
    apply_ops,
    decode_ops,
    encode_ops,
    encode_value,
    state_checksum,
)
from edge_node.games.state import Schema, StateList, StateMap, to_plain


class Card(Schema):
    rank: int = 0
    suit: str = ""


class Seat(Schema):
    x: float = 0.0
    y: float = 0.0
    score: int = 0
    name: str = ""
    hand: StateMap[Card]
    tags: StateList
    note: str | None = None


class Table(Schema):
    seats: StateMap[Seat]
    pot: int = 0
    log: StateList
    dealer: Seat


def test_assignments_are_recorded_as_ops_in_order() -> None:
    t = Table()
    log = t.track()
    t.seats["a"] = Seat(name="ada")
    t.seats["a"].x = 3
    t.pot = 5
    t.log.append("deal")
    ops = log.take()
    assert ops == [
        (("seats", "a"), to_plain(Seat(name="ada"))),
        (("seats", "a", "x"), 3.0),
        (("pot",), 5),
        (("log",), ["deal"]),
    ]
    assert log.take() == []  # taken: empty again


def test_setting_a_path_twice_keeps_the_last_value_after_a_parent_replaced() -> None:
    t = Table()
    log = t.track()
    t.seats["a"] = Seat()
    t.seats["a"].x = 1.0
    t.seats["a"] = Seat(name="new")  # replaces the record: x back to 0
    t.seats["a"].x = 5.0  # must come after the replacement
    ops = log.take()
    plain: dict[str, object] = {"seats": {}, "pot": 0, "log": [], "dealer": {}}
    apply_ops(plain, ops)
    assert plain["seats"] == {"a": to_plain(t.seats["a"])}
    assert [p for p, _ in ops].count(("seats", "a", "x")) == 1


def test_float_fields_store_ints_as_floats_and_wrong_types_fail_at_once() -> None:
    s = Seat()
    s.x = 2
    assert type(s.x) is float
    with pytest.raises(TypeError, match=r"Seat\.score: expected int"):
        s.score = "many"  # type: ignore[assignment]
    with pytest.raises(TypeError, match="expected float"):
        s.x = True  # a bool is not a number here
    with pytest.raises(TypeError, match="map of Card"):
        s.hand["c"] = 3  # type: ignore[assignment]
    with pytest.raises(TypeError, match="not a state value"):
        s.tags.append(object())
    with pytest.raises(AttributeError):
        s.colour = "red"  # type: ignore[attr-defined]
    with pytest.raises(TypeError, match="no field 'colour'"):
        Seat(colour="red")
    s.note = None  # an optional field takes None
    assert s.note is None


def test_a_record_cannot_sit_in_two_trees() -> None:
    a, b = Table(), Table()
    a.track()
    b.track()
    seat = Seat()
    a.seats["x"] = seat
    with pytest.raises(TypeError, match="another state tree"):
        b.seats["x"] = seat


def test_defaults_do_not_leak_between_instances() -> None:
    a, b = Seat(), Seat()
    a.hand["c"] = Card(rank=3)
    a.tags.append("vip")
    assert len(b.hand) == 0 and len(b.tags) == 0
    assert Seat().x == 0.0


def _random_mutation(t: Table, rnd: random.Random) -> None:
    names = ["a", "b", "c", "d"]
    op = rnd.randrange(9)
    who = rnd.choice(names)
    if op == 0:
        t.seats[who] = Seat(name=who, x=rnd.random())
    elif op == 1 and who in t.seats:
        del t.seats[who]
    elif op == 2 and who in t.seats:
        t.seats[who].x = round(rnd.uniform(-5, 5), 3)
    elif op == 3 and who in t.seats:
        t.seats[who].hand[str(rnd.randrange(3))] = Card(rank=rnd.randrange(13), suit="h")
    elif op == 4 and who in t.seats and t.seats[who].hand:
        del t.seats[who].hand[next(iter(t.seats[who].hand))]
    elif op == 5:
        t.pot += rnd.randrange(10)
    elif op == 6:
        t.log.append(rnd.choice(["x", "y", 1, 2.5, None, b"\x00"]))
    elif op == 7 and len(t.log):
        t.log.pop(0)
    elif op == 8:
        t.dealer = Seat(name=who)
        t.dealer.score = rnd.randrange(5)


@pytest.mark.parametrize("seed", range(40))
def test_patches_applied_to_a_mirror_reproduce_the_state(seed: int) -> None:
    rnd = random.Random(seed)
    t = Table()
    log = t.track()
    mirror = StateMirror()
    mirror.load(1, 0, encode_value(to_plain(t)))
    version = 1
    for _patch in range(30):
        for _ in range(rnd.randrange(0, 6)):
            _random_mutation(t, rnd)
        ops = log.take()
        if not ops:
            continue
        mirror.patch(version, version + 1, _patch, encode_ops(ops))
        version += 1
        assert mirror.state == to_plain(t)
    assert state_checksum(mirror.state) == state_checksum(to_plain(t))


def test_ops_round_trip_through_bytes_and_deletes_survive() -> None:
    ops = [(("a", "b"), 1), (("a", "c"), DELETE), (("l", 0), "x")]
    assert decode_ops(encode_ops(ops)) == ops


def test_mirror_refuses_a_patch_that_does_not_follow_and_stays_unchanged() -> None:
    m = StateMirror()
    m.load(4, 10, encode_value({"hp": 3}))
    with pytest.raises(PatchRefused):
        m.patch(3, 5, 11, encode_ops([(("hp",), 2)]))  # base 3: we hold 4
    with pytest.raises(PatchRefused):
        m.patch(4, 4, 11, encode_ops([(("hp",), 2)]))  # does not move forward
    assert m.state == {"hp": 3} and m.version == 4
    m.patch(4, 6, 12, encode_ops([(("hp",), 2)]))  # a base several versions back is fine
    assert m.state == {"hp": 2} and (m.version, m.tick) == (6, 12)


def test_mirror_rejects_malformed_patches_and_needs_a_full_state_after_a_bad_path() -> None:
    m = StateMirror()
    m.load(1, 0, encode_value({"l": [1, 2]}))
    for bad in (b"\xc1", encode_value({"not": "a list"}), encode_value([[[], 1]]),
                encode_value([["a"]]), encode_value([[["a", 1.5], 1]])):
        with pytest.raises(PatchRefused):
            m.patch(1, 2, 1, bad)
    with pytest.raises(PatchRefused):
        m.patch(1, 2, 1, encode_ops([(("l", 7, "x"), 1)]))  # no such list item
    assert m.version == 0  # half-applied: only a ROOM_STATE repairs it
    with pytest.raises(PatchRefused):
        m.load(2, 0, encode_value([1, 2]))  # a state must be a map


def test_change_listeners_hear_changes_under_their_prefix() -> None:
    m = StateMirror()
    heard: list[tuple[object, object]] = []
    remove = m.on_change(["players", "a"], lambda p, v: heard.append((p, v)))
    m.load(1, 0, encode_value({"players": {"a": {"x": 1}, "b": {"x": 1}}}))
    m.patch(1, 2, 1, encode_ops([(("players", "a", "x"), 2), (("players", "b", "x"), 3),
                                 (("players", "a"), DELETE)]))
    # The full state counts as a change at the root; b's change is not under the prefix.
    assert heard[0][0] == ()
    assert heard[1:] == [(("players", "a", "x"), 2), (("players", "a"), None)]
    remove()
    m.patch(2, 3, 2, encode_ops([(("players", "a"), {"x": 9})]))
    assert len(heard) == 3
