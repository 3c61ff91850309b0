"""Golden byte vectors: the wire format of every frame type, pinned.

``tests/golden/frames.json`` holds, for each vector, the frame's fields, the
msgpack array as JSON and the exact bytes in hex.  The tests compare the codec
against those stored bytes; they never regenerate them.  If a test here fails,
the wire format changed: that needs a protocol version bump, not a new file.
See ``tests/golden/README.md``.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import msgpack
import pytest

from client_sdk.protocol import (
    JOIN_NO_ECHO,
    JOIN_PRESENCE,
    PROTOCOL_VERSION,
    Ack,
    Command,
    CommandAck,
    Dropped,
    Error,
    Frame,
    Handoff,
    Hello,
    History,
    HistoryPage,
    Join,
    Joined,
    Leave,
    Member,
    Message,
    MessageType,
    Neighbours,
    Ping,
    Pong,
    PresenceJoin,
    PresenceLeave,
    PresenceList,
    PresenceMembers,
    ProtocolError,
    Publish,
    Refresh,
    Refreshed,
    ReportState,
    Resume,
    Resumed,
    RoomEvent,
    RoomList,
    RoomListing,
    RoomPatch,
    RoomResync,
    RoomStateFrame,
    Rpc,
    RpcResult,
    ShadowDelta,
    Telemetry,
    TelemetryAck,
    TelemetryError,
    Welcome,
    decode,
    delivery_flags,
    encode,
    encode_message,
    pack_input,
    pack_value,
)
from client_sdk.protocol import errors as protocol_errors
from client_sdk.protocol.state_sync import DELETE, encode_patch, encode_state, encode_value

GOLDEN_FILE = Path(__file__).resolve().parents[1] / "golden" / "frames.json"

_ALICE = Member("s-1f2e", "alice", "player")
_SENSOR = Member("s-77", "sensor-12", "device")
_TOKEN = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.e30.c2ln"
#: A resume token (opaque to clients; the reference edge sends 64 hex digits).
_RESUME_TOKEN = "5c1d9e0f7a3b"
_EDGE_B = "wss://edge-b.example:8443/ws"
_EDGE_C = "wss://edge-c.example:8443/ws"

#: The frame each golden vector must decode to (and, unless the vector is
#: marked ``decode_only``, encode from).  Keys are the vector names.  The
#: ``decode_only`` vectors are short forms (optional trailing fields left out),
#: an explicit default the encoder omits (``message-idem-zero``) and forms with
#: extra trailing elements a newer peer may append (``*-extra-fields``).
FRAMES: dict[str, Frame] = {
    "hello": Hello(PROTOCOL_VERSION, _TOKEN, "bot-7", None),
    "hello-short": Hello(PROTOCOL_VERSION, _TOKEN, "", None),
    "hello-resume": Hello(
        PROTOCOL_VERSION,
        _TOKEN,
        "bot-7",
        {
            "sid": "s-1f2e",
            "rt": _RESUME_TOKEN,
            "rooms": {"lobby": [1, 3, 42], "match-17": [3, 5, 1200]},
        },
    ),
    "welcome": Welcome(
        "s-1f2e",
        "edge-a",
        {
            "version": PROTOCOL_VERSION,
            "ping_interval": 5.0,
            "max_frame_bytes": 65536,
            "max_rooms": 64,
            "neighbours": [_EDGE_B, _EDGE_C],
            "region": "eu-west",
        },
    ),
    "welcome-resumed": Welcome(
        "s-1f2e",
        "edge-b",
        {
            "version": PROTOCOL_VERSION,
            "ping_interval": 5.0,
            "max_frame_bytes": 65536,
            "max_rooms": 64,
            "neighbours": [],
            "region": "eu-west",
            "resume_token": _RESUME_TOKEN,
            "resume_window": 120.0,
            "resumed": True,
        },
    ),
    "join": Join(1, "lobby", JOIN_PRESENCE),
    "join-short": Join(2, "lobby", 0),
    "join-no-echo": Join(3, "match-17", JOIN_PRESENCE | JOIN_NO_ECHO),
    "joined": Joined(1, "lobby", 3, 41),
    "leave": Leave(4, "lobby"),
    "publish": Publish(2, "lobby", b"hello", True, 9001),
    "publish-unreliable": Publish(0, "match-17", b"\x01\x02\x03", False, 0),
    "publish-short": Publish(5, "lobby", b"hi", True, 0),
    "publish-extra-fields": Publish(2, "lobby", b"hello", True, 9001),
    "message": Message("lobby", 3, 42, "s-1f2e", b"hello"),
    "message-unreliable": Message("match-17", 0, 0, "s-9a", b"\x01\x02\x03"),
    "message-idem": Message("lobby", 3, 42, "s-1f2e", b"hello", 9001),
    "message-idem-zero": Message("lobby", 3, 42, "s-1f2e", b"hello", 0),
    "ack": Ack(2, 3, 42),
    "ack-leave": Ack(4, 0, 0),
    "presence-join": PresenceJoin("lobby", _ALICE),
    "presence-leave": PresenceLeave("lobby", _ALICE),
    # The member's connection ended without a normal close: it may be resuming.
    "presence-leave-lost": PresenceLeave("lobby", _ALICE, True),
    "presence-list": PresenceList(6, "lobby"),
    "presence-members": PresenceMembers(6, "lobby", (_ALICE, _SENSOR)),
    "presence-members-empty": PresenceMembers(8, "empty-room", ()),
    "ping": Ping(1_700_000_000_123),
    "ping-extra-fields": Ping(1_700_000_000_123),
    "pong": Pong(1_700_000_000_123),
    "error": Error(7, 4403, "not allowed to publish to this room"),
    "error-unknown-type": Error(9, 4406, "unknown frame type 99"),
    "resume": Resume(()),
    "resumed-recovered": Resumed("lobby", True, 3, 42, 2, "", {"to": [3, 44]}),
    "resumed-history-trimmed": Resumed(
        "lobby", False, 3, 42, 0, "history_trimmed", {"first_available": [3, 900]}
    ),
    "resumed-session-expired": Resumed(
        "match-17", False, 5, 1200, 0, "session_expired", {"current": [6, 17]}
    ),
    "resume-opaque-body": Resume(("opaque", 1)),
    "hello-resume-att": Hello(
        PROTOCOL_VERSION,
        _TOKEN,
        "bot-7",
        {
            "sid": "s-1f2e",
            "rt": _RESUME_TOKEN,
            "att": 3,
            "rooms": {"lobby": [1, 3, 42], "match-17": [3, 5, 1200]},
        },
    ),
    "handoff-drain": Handoff(_EDGE_B, "drain", 10_000),
    "neighbours": Neighbours((_EDGE_B, _EDGE_C)),
    "neighbours-empty": Neighbours(()),
    "telemetry": Telemetry(17, (("temp", 21.5, 1_700_000_000_000),
                                ("hum", 40, 1_700_000_000_100))),
    "telemetry-ack": TelemetryAck(17, 2, 0),
    "telemetry-error": TelemetryError(18, ((1, "out_of_range", "hum=140 outside [0, 100]"),)),
    "command": Command("c9f2", "reboot", {"delay_s": 5}, 1_700_000_060_000),
    "command-ack": CommandAck("c9f2", "done", {"uptime_s": 3}),
    "report-state": ReportState(4, 3, {"fw": "1.2.0", "led": "off"}),
    "shadow-delta": ShadowDelta(3, 5, {"led": "on"}, "c9f3"),
    # Game rooms (docs/rooms.md): JOIN options, an input, and frames 27-32.
    "join-options": Join(5, "arena-1", 0, {"name": "ada"}),
    "publish-game-input": Publish(10, "arena-1", pack_input("move", {"dx": 1, "dy": 0}),
                                  True, 77),
    # The state with the key table so far; the patch extends it by "s-9a" (index 3).
    "room-state": RoomStateFrame("arena-1", 7, 140, 20, encode_state(
        {"players": {"s-1f2e": {"x": 10.5, "y": 3.0, "score": 2}}, "round": 1},
        ["players", "s-1f2e", "x"])),
    "room-patch": RoomPatch("arena-1", 7, 8, 141, encode_patch(
        3, ["s-9a"], [((0, 1, 2), 11.5), ((0, 3), DELETE)])),
    "room-event": RoomEvent("arena-1", "said", encode_value({"who": "s-1f2e", "text": "gg"})),
    "room-resync": RoomResync("arena-1", 7),
    "room-list": RoomList(9, "arena-*"),
    "room-listing": RoomListing(9, [{"name": "arena-1", "players": 2, "max_players": 16,
                                     "metadata": {"label": "arena"}, "edge": "edge-a"}]),
    "history": History(11, "lobby", 3, 40, 2),
    "history-page": HistoryPage(11, "lobby", ((3, 41, "s-1f2e", b"hi", 9001),
                                              (3, 42, "s-9a", b"yo", 0)), True, False),
    # Functions (docs/functions.md): a call and its two kinds of answer.
    "rpc": Rpc(12, "leaderboard.top", pack_value({"n": 3})),
    "rpc-result": RpcResult(12, "", pack_value([["ada", 7], ["bo", 5]])),
    "rpc-result-error": RpcResult(13, "no_such_player", pack_value({"player": "zed"})),
    # Token refresh (docs/protocol.md): a new token on a live connection.
    "refresh": Refresh(14, "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.e30.c2ln"),
    "refreshed": Refreshed(14, 1796529600),
    "refreshed-rooms-left": Refreshed(15, 1796529600, ("vip-lounge", "arena-7")),
    # Delivery policies (docs/protocol.md): chosen in the JOIN flags, a conflation key
    # on an unreliable publish, and what a "drop" subscriber is told.
    "join-delivery-latest": Join(16, "arena-7", JOIN_NO_ECHO | delivery_flags("latest")),
    "publish-keyed": Publish(0, "arena-7", b"\x01\x02", False, 0, "ship-3"),
    "dropped": Dropped("ticker", 40, 12, (3, 101), (3, 140)),
}


def _jsonable(v: Any) -> Any:
    """The JSON view used in the golden file: bytes become ``{"$bin": hex}``."""
    if isinstance(v, bytes):
        return {"$bin": v.hex()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return {f.name: _jsonable(getattr(v, f.name)) for f in dataclasses.fields(v)}
    return v


def _load() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(GOLDEN_FILE.read_text(encoding="utf-8"))
    return data


GOLDEN = _load()
VECTORS: list[dict[str, Any]] = GOLDEN["frames"]
REJECTS: list[dict[str, Any]] = GOLDEN["rejects"]
_ids = [v["name"] for v in VECTORS]


def test_golden_file_header() -> None:
    assert GOLDEN["protocol_version"] == PROTOCOL_VERSION


def test_every_frame_type_has_a_vector() -> None:
    covered = {v["type"] for v in VECTORS if not v.get("decode_only")}
    assert covered == {t.name for t in MessageType}


def test_vector_names_match_the_frames_here() -> None:
    assert len(_ids) == len(set(_ids)), "duplicate vector names"
    assert set(_ids) == set(FRAMES)


@pytest.mark.parametrize("vec", VECTORS, ids=_ids)
def test_decode_matches_golden(vec: dict[str, Any]) -> None:
    frame = decode(bytes.fromhex(vec["hex"]))
    assert frame == FRAMES[vec["name"]]
    assert type(frame).__name__ == vec["class"]


@pytest.mark.parametrize("vec", VECTORS, ids=_ids)
def test_encode_matches_golden(vec: dict[str, Any]) -> None:
    frame = FRAMES[vec["name"]]
    if vec.get("decode_only"):
        # Short forms omit trailing optional fields; the encoder always writes
        # the full form, which must decode to the same frame.
        full = encode(frame)
        assert full != bytes.fromhex(vec["hex"])
        assert decode(full) == frame
    else:
        assert encode(frame).hex() == vec["hex"]


@pytest.mark.parametrize("vec", VECTORS, ids=_ids)
def test_golden_metadata_is_consistent(vec: dict[str, Any]) -> None:
    raw = bytes.fromhex(vec["hex"])
    frame = FRAMES[vec["name"]]
    assert vec["type_id"] == MessageType[vec["type"]].value
    assert vec["fields"] == _jsonable(frame)
    assert vec["msgpack"] == _jsonable(msgpack.unpackb(raw, raw=False))
    # Every frame here is a fixarray (< 16 elements) starting with a positive
    # fixint type number: the first two bytes identify the frame type.
    assert raw[0] & 0xF0 == 0x90
    assert raw[0] & 0x0F == len(vec["msgpack"])
    assert raw[1] == vec["type_id"]


_MESSAGE_VECTORS = [v for v in VECTORS if v["type"] == "MESSAGE" and not v.get("decode_only")]


@pytest.mark.parametrize("vec", _MESSAGE_VECTORS, ids=[v["name"] for v in _MESSAGE_VECTORS])
def test_hot_path_encoder_matches_golden(vec: dict[str, Any]) -> None:
    f = FRAMES[vec["name"]]
    assert isinstance(f, Message)
    raw = encode_message(f.room, f.epoch, f.seq, f.sender, f.payload, f.idem)
    assert raw.hex() == vec["hex"]
    if not f.idem:  # the default leaves idem out, as the encoder does for 0
        assert encode_message(f.room, f.epoch, f.seq, f.sender, f.payload).hex() == vec["hex"]


@pytest.mark.parametrize(
    "vec", [v for v in VECTORS if v.get("decode_only")],
    ids=[v["name"] for v in VECTORS if v.get("decode_only")],
)
def test_decode_only_vectors_differ_from_the_full_form_only_at_the_end(
    vec: dict[str, Any]
) -> None:
    """A decode-only vector is the encoder's array with trailing optional fields
    left out, with an explicit default written, or with extra elements appended
    (ignored by the decoder).  Everything before that is identical."""
    short = msgpack.unpackb(bytes.fromhex(vec["hex"]), raw=False)
    full = msgpack.unpackb(encode(FRAMES[vec["name"]]), raw=False)
    n = min(len(short), len(full))
    assert short[:n] == full[:n]
    assert len(short) != len(full)


@pytest.mark.parametrize("vec", REJECTS, ids=[r["name"] for r in REJECTS])
def test_rejected_vectors(vec: dict[str, Any]) -> None:
    cls = getattr(protocol_errors, vec["error"])
    assert issubclass(cls, ProtocolError)
    with pytest.raises(cls) as info:
        decode(bytes.fromhex(vec["hex"]))
    assert type(info.value) is cls
    assert int(info.value.code) == vec["code"]
    for attr in ("type_id", "req_id"):
        if attr in vec:
            assert getattr(info.value, attr) == vec[attr]


DOC_FILE = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"
_FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
_FRAME_HEX = re.compile(r"^9[0-9a-f]{5,}$")


@pytest.mark.skipif(not DOC_FILE.exists(), reason="docs/protocol.md not present")
def test_protocol_doc_quotes_the_golden_bytes() -> None:
    """docs/protocol.md shows every vector, and every frame hex it shows is a vector."""
    doc = DOC_FILE.read_text(encoding="utf-8")
    missing = [v["name"] for v in VECTORS if v["hex"] not in doc]
    assert missing == []
    known = {v["hex"] for v in VECTORS}
    quoted = {
        tok
        for block in _FENCE.findall(doc)
        for tok in block.split()
        if _FRAME_HEX.match(tok)
    }
    assert quoted, "no frame hex found in the doc's code blocks"
    assert quoted <= known, f"hex in the doc that is not a golden vector: {quoted - known}"
