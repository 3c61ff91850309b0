"""The records edges write for each other: exact bytes (golden vectors), round trips,
clear errors for garbage, and the inverse of the room stream key."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from edge_node.redis_io import keys as K
from edge_node.rooms.events import Record
from edge_node.store.records import (
    ForwardAck,
    Forwarded,
    Handover,
    LiveEvent,
    RecordError,
    pack_record,
    unpack_record,
)

GOLDEN = json.loads((Path(__file__).parents[1] / "golden" / "records.json").read_text())


def _body(items: list[Any]) -> tuple[Any, ...]:
    return tuple(bytes.fromhex(x["hex"]) if isinstance(x, dict) else x for x in items)


@pytest.mark.parametrize("v", GOLDEN["room_record"])
def test_room_record_bytes(v: dict[str, Any]) -> None:
    f = v["value"]
    payload = bytes.fromhex(f["payload_hex"])
    data = pack_record(f["sender"], payload, f["origin"], f["req_id"], f["idem"])
    assert data.hex() == v["hex"]
    assert unpack_record(3, 4, data) == Record(3, 4, f["sender"], payload, f["origin"],
                                               f["req_id"], f["idem"])


def test_a_record_written_before_idem_still_decodes() -> None:
    (v,) = GOLDEN["room_record_v0"]
    r = unpack_record(1, 2, bytes.fromhex(v["hex"]))
    assert (r.sender, r.payload, r.origin, r.req_id, r.idem) == ("s1", b"hi", "edge-a", 7, 0)


def test_inbox_and_live_records_bytes_and_round_trips() -> None:
    (f,) = GOLDEN["forwarded"]
    fv = f["value"]
    fwd = Forwarded(fv["room"], fv["sender"], bytes.fromhex(fv["payload_hex"]), fv["origin"],
                    fv["req_id"], fv["idem"])
    assert fwd.pack().hex() == f["hex"] and Forwarded.unpack(fwd.pack()) == fwd
    (a,) = GOLDEN["forward_ack"]
    ack = ForwardAck(a["value"]["sender"], a["value"]["req_id"], tuple(a["value"]["pos"]))
    assert ack.pack().hex() == a["hex"] and ForwardAck.unpack(ack.pack()) == ack
    (h,) = GOLDEN["handover"]
    ho = Handover(h["value"]["room"], h["value"]["token"])
    assert ho.pack().hex() == h["hex"] and Handover.unpack(ho.pack()) == ho
    for v in GOLDEN["live_event"]:
        lv = v["value"]
        ev = LiveEvent(lv["kind"], lv["edge"], lv["room"], _body(lv["body"]))
        assert ev.pack().hex() == v["hex"]
        back = LiveEvent.unpack(bytes.fromhex(v["hex"]))
        assert (back.kind, back.edge, back.room) == (ev.kind, ev.edge, ev.room)
        assert [list(x) if isinstance(x, list) else x for x in back.body] == list(ev.body)


@pytest.mark.parametrize("data", [b"\xc1", b"\x93\x01\x02", b"\xa3abc", b""])
def test_garbage_is_a_record_error(data: bytes) -> None:
    for unpack in (Forwarded.unpack, ForwardAck.unpack, Handover.unpack, LiveEvent.unpack):
        with pytest.raises(RecordError):
            unpack(data)
    with pytest.raises(RecordError):
        unpack_record(1, 1, data)


def test_a_handover_token_must_be_a_string() -> None:
    import msgpack

    with pytest.raises(RecordError):
        Handover.unpack(msgpack.packb(["r", 7]))


@pytest.mark.parametrize("room", ["r", "game:42", "a}b", "{x}", "", "ünï"])
def test_room_of_log_inverts_room_log(room: str) -> None:
    assert K.room_of_log(K.room_log(room)) == room


@pytest.mark.parametrize("key", ["er:{room:x}:owner", "er:{edge:x}:inbox", "x", "er:{room:"])
def test_room_of_log_refuses_other_keys(key: str) -> None:
    with pytest.raises(ValueError, match="not a room stream key"):
        K.room_of_log(key)
