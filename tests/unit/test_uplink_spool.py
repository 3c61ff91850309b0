"""The on-disk spool (FIFO, bound, overflow policies, persistence) and the wire format."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_node.uplink import Spool, WireError, shard_of, stream_key
from edge_node.uplink.wire import pack_batch, pack_entry, unpack_batch, unpack_entry


def rows(a: int, b: int) -> list[tuple[int, bytes]]:
    return [(i % 3, f"e{i}".encode()) for i in range(a, b)]


def datas(sp: Spool) -> list[bytes]:
    return [d for _, _, d in sp.peek(10_000)]


def test_fifo_and_delete_upto(tmp_path: Path) -> None:
    sp = Spool(str(tmp_path / "s.db"))
    sp.append(rows(0, 5))
    sp.append(rows(5, 8))
    got = sp.peek(4)
    assert [d for _, _, d in got] == [b"e0", b"e1", b"e2", b"e3"]
    assert [s for _, s, _ in got] == [0, 1, 2, 0]
    assert sp.delete_upto(got[-1][0]) == 4
    assert sp.count == 4
    assert datas(sp) == [b"e4", b"e5", b"e6", b"e7"]


def test_drop_oldest_keeps_newest_and_counts(tmp_path: Path) -> None:
    sp = Spool(str(tmp_path / "s.db"), max_entries=5, overflow="drop_oldest")
    assert sp.append(rows(0, 3)).dropped_oldest == 0
    res = sp.append(rows(3, 7))
    assert (res.stored, res.dropped_oldest, res.rejected) == (4, 2, 0)
    assert sp.count == 5 and datas(sp) == [b"e2", b"e3", b"e4", b"e5", b"e6"]
    res = sp.append(rows(7, 20))  # more than fit at all: only the newest 5 stay
    assert (res.stored, res.dropped_oldest) == (5, 13)
    assert sp.count == 5 and datas(sp) == [b"e15", b"e16", b"e17", b"e18", b"e19"]


def test_reject_new_keeps_oldest_and_counts(tmp_path: Path) -> None:
    sp = Spool(str(tmp_path / "s.db"), max_entries=5, overflow="reject_new")
    sp.append(rows(0, 3))
    res = sp.append(rows(3, 7))
    assert (res.stored, res.dropped_oldest, res.rejected) == (2, 0, 2)
    assert datas(sp) == [b"e0", b"e1", b"e2", b"e3", b"e4"]
    assert sp.append(rows(7, 9)).rejected == 2


def test_persists_across_reopen_and_seq_is_never_reused(tmp_path: Path) -> None:
    path = str(tmp_path / "s.db")
    sp = Spool(path, synchronous="FULL")
    sp.append(rows(0, 3))
    start1, hi1 = sp.reserve_seq(100, 1000)
    assert (start1, hi1) == (100, 1100)
    start2, hi2 = sp.reserve_seq(0, 1000)
    assert start2 == hi1 and hi2 == 2100
    sp.close()
    sp = Spool(path)
    assert sp.count == 3 and datas(sp) == [b"e0", b"e1", b"e2"]
    start3, _ = sp.reserve_seq(0, 10)
    assert start3 == 2100
    start4, _ = sp.reserve_seq(5000, 10)  # a higher floor (the clock) wins
    assert start4 == 5000


def test_bad_settings() -> None:
    with pytest.raises(ValueError):
        Spool(":memory:", overflow="block")
    with pytest.raises(ValueError):
        Spool(":memory:", synchronous="SOMETIMES")
    with pytest.raises(ValueError):
        Spool(":memory:", max_entries=0)


def test_wire_roundtrip_and_errors() -> None:
    a = pack_entry(7, "telemetry", "dev-1", 1000, {"t": 1.5})
    b = pack_entry(8, "alert", "dev-1", 1001, b"\x00raw")
    assert unpack_entry(a).body == {"t": 1.5}
    edge, entries = unpack_batch({k.encode(): v for k, v in pack_batch("e1", [a, b]).items()})
    assert edge == "e1" and [e.seq for e in entries] == [7, 8]
    assert entries[1].body == b"\x00raw" and entries[1].kind == "alert"
    with pytest.raises(WireError):
        pack_entry(1, "x", "k", 1, {"bad": object()})
    with pytest.raises(WireError):
        unpack_batch({b"e": b"e1", b"b": b"\xc1"})
    with pytest.raises(WireError):
        unpack_batch({b"e": b"e1", b"b": b"\x91\x93\x01\x02\x03"})  # [[1,2,3]]
    with pytest.raises(WireError):
        unpack_batch({b"b": b"\x90"})


def test_shard_and_keys_are_stable() -> None:
    assert shard_of("room-1", 4) == shard_of("room-1", 4) < 4
    assert {shard_of(f"d{i}", 4) for i in range(100)} == {0, 1, 2, 3}
    assert stream_key(2) == "er:{up:2}:stream"
