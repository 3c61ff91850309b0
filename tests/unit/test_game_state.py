"""Game-room state: typed records with change tracking, the patch format, the client mirror.

The property that matters: whatever a handler does to its state, applying the recorded
patches to a mirror that started from the full state gives the same tree as the state
itself — and a mirror never applies a patch that does not follow its version.
"""

from __future__ import annotations

import random
from typing import Any

import msgpack
import pytest

from client_sdk.protocol.compact import pack_compact
from client_sdk.protocol.state_sync import (
    DELETE,
    KeyTable,
    PatchRefused,
    StateMirror,
    apply_ops,
    decode_patch,
    decode_state,
    encode_patch,
    encode_state,
    state_checksum,
)
from edge_node.games.state import F32, Schema, StateList, StateMap, to_plain


class Sender:
    """The edge's side of the format for one client: a key table and what it knows."""

    def __init__(self) -> None:
        self.table = KeyTable()
        self.known = 0

    def full(self, state: dict[str, Any]) -> bytes:
        self.known = len(self.table)
        return encode_state(state, self.table.keys)

    def patch(self, ops: list[tuple[Any, Any]]) -> bytes:
        wire = [(tuple(self.table.intern(k) for k in p), v) for p, v in ops]
        data = encode_patch(self.known, self.table.keys[self.known:], wire)
        self.known = len(self.table)
        return data


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
    tx = Sender()
    mirror.load(1, 0, tx.full(to_plain(t)))
    version = 1
    for _patch in range(30):
        for _ in range(rnd.randrange(0, 6)):
            _random_mutation(t, rnd)
        ops = log.take()
        if not ops:
            continue
        mirror.patch(version, version + 1, _patch, tx.patch(ops))
        version += 1
        assert mirror.state == to_plain(t)
    assert state_checksum(mirror.state) == state_checksum(to_plain(t))


def test_patches_carry_each_key_once_and_round_trip() -> None:
    tx = Sender()
    first = tx.patch([(("players", "ada", "x"), 1.5), (("players", "ada", "y"), 2.5)])
    keys_from, new_keys, ops = decode_patch(first)
    assert (keys_from, new_keys) == (0, ["players", "ada", "x", "y"])
    assert ops == [((0, 1, 2), 1.5), ((0, 1, 3), 2.5)]
    second = tx.patch([(("players", "ada", "x"), 2.0), (("players", "bob"), DELETE)])
    assert decode_patch(second) == (4, ["bob"], [((0, 1, 2), 2.0), ((0, 4), DELETE)])
    assert len(second) == 22  # no key repeated: 1-byte indexes, "bob" once, a 5-byte float
    assert decode_state(tx.full({"a": 1})) == (["players", "ada", "x", "y", "bob"], {"a": 1})


def test_floats_that_float32_holds_travel_in_five_bytes_exactly() -> None:
    values = [1.5, 3.0, -0.25, 12.34, 1e300, float("inf")]
    data = pack_compact(values)
    assert msgpack.unpackb(data) == values  # exact, whatever the width
    assert len(data) == 1 + 3 * 5 + 2 * 9 + 5  # 12.34 and 1e300 need float64
    s = Seat()
    s.x = 12.34
    assert s.x == 12.34  # a float field keeps float64

    class Fast(Schema):
        v: F32 = 0.0

    f = Fast(v=12.34)
    assert f.v != 12.34 and abs(f.v - 12.34) < 1e-5  # rounded to float32 on assignment
    assert len(pack_compact(f.v)) == 5
    with pytest.raises(TypeError):
        f.v = "fast"  # type: ignore[assignment]


def test_mirror_refuses_a_patch_that_does_not_follow_and_stays_unchanged() -> None:
    m = StateMirror()
    tx = Sender()
    m.load(4, 10, tx.full({"hp": 3}))
    hp2 = tx.patch([(("hp",), 2)])
    with pytest.raises(PatchRefused):
        m.patch(3, 5, 11, hp2)  # base 3: we hold 4
    with pytest.raises(PatchRefused):
        m.patch(4, 4, 11, hp2)  # does not move forward
    with pytest.raises(PatchRefused):
        m.patch(4, 5, 11, encode_patch(1, [], [((0,), 2)]))  # a key table we do not hold
    assert m.state == {"hp": 3} and m.version == 4
    m.patch(4, 6, 12, hp2)  # a base several versions back is fine
    assert m.state == {"hp": 2} and (m.version, m.tick) == (6, 12)


def test_mirror_rejects_malformed_patches_and_needs_a_full_state_after_a_bad_path() -> None:
    m = StateMirror()
    tx = Sender()
    m.load(1, 0, tx.full({"l": [1, 2], "n": 5}))
    for bad in (b"\xc1", pack_compact({"not": "a list"}), pack_compact([0, [], [[[], 1]]]),
                pack_compact([0, [], [["a"]]]), pack_compact([0, [], [[[-1], 1]]]),
                pack_compact([0, [7], []]), pack_compact([0, [], [[[3], 1]]])):
        with pytest.raises(PatchRefused):
            m.patch(1, 2, 1, bad)
    assert m.state == {"l": [1, 2], "n": 5} and m.version == 1
    with pytest.raises(PatchRefused):  # n is a number: nothing can live under it
        m.patch(1, 2, 1, tx.patch([(("n", "x", "y"), 1)]))
    assert m.version == 0  # half-applied: only a ROOM_STATE repairs it
    for bad_state in (pack_compact([1, 2]), pack_compact([[], [1]]), pack_compact([[3], {}])):
        with pytest.raises(PatchRefused):
            m.load(2, 0, bad_state)  # a state must be [keys, map]


def test_change_listeners_hear_changes_under_their_prefix() -> None:
    m = StateMirror()
    heard: list[tuple[object, object]] = []
    remove = m.on_change(["players", "a"], lambda p, v: heard.append((p, v)))
    tx = Sender()
    m.load(1, 0, tx.full({"players": {"a": {"x": 1}, "b": {"x": 1}}}))
    m.patch(1, 2, 1, tx.patch([(("players", "a", "x"), 2), (("players", "b", "x"), 3),
                               (("players", "a"), DELETE)]))
    # The full state counts as a change at the root; b's change is not under the prefix.
    assert heard[0][0] == ()
    assert heard[1:] == [(("players", "a", "x"), 2), (("players", "a"), None)]
    remove()
    m.patch(2, 3, 2, tx.patch([(("players", "a"), {"x": 9})]))
    assert len(heard) == 3
