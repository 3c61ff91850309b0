"""Property tests for the codec: hostile bytes never escape as anything but a
:class:`ProtocolError`, and every valid frame survives a round trip."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from client_sdk.protocol import (
    DEFAULT_LIMITS,
    Ack,
    Decoder,
    Dropped,
    Error,
    ErrorCode,
    Frame,
    FrameTooLarge,
    Handoff,
    Hello,
    Join,
    Joined,
    Leave,
    Limits,
    MalformedFrame,
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
    Resume,
    Resumed,
    UnknownMessageType,
    Welcome,
    decode,
    encode,
    encode_message,
)
from client_sdk.protocol.delivery import DELIVERY_MASK, DELIVERY_SHIFT
from client_sdk.protocol.messages import (
    Command,
    CommandAck,
    History,
    HistoryPage,
    Refresh,
    Refreshed,
    ReportState,
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
)

FUZZ = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
PER_TYPE = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)

UINT64_MAX = 2**64 - 1
_pack = msgpack.Packer(use_bin_type=True).pack
_GOLDEN = json.loads(
    (Path(__file__).resolve().parents[1] / "golden" / "frames.json").read_text("utf-8")
)
GOLDEN_BYTES = [bytes.fromhex(v["hex"]) for v in _GOLDEN["frames"]]

# -- strategies for valid frames ---------------------------------------------

uint64 = st.integers(0, UINT64_MAX)
msgint = st.integers(-(2**63), UINT64_MAX)
_chars = st.characters(codec="utf-8")
text = st.text(_chars, max_size=40)
# 32 code points are at most 128 UTF-8 bytes: always within max_room_name.
room = st.text(_chars, min_size=1, max_size=32)
payload = st.binary(max_size=300)
member = st.builds(Member, text, text, text)

_scalar = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), UINT64_MAX)
    | st.floats(allow_nan=False)
    | text
    | st.binary(max_size=32)
)
#: Values msgpack round-trips exactly under the decoder's options
#: (lists, not tuples; string map keys; no NaN since NaN != NaN).
value = st.recursive(
    _scalar,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(text, inner, max_size=5),
    max_leaves=20,
)
info_map = st.dictionaries(text, value, max_size=8)
position = st.tuples(uint64, uint64).map(list)
#: HELLO ``resume``: ``{"sid", "rt", "att"?, "rooms": {room: [flags, epoch, seq]}}``
#: (``att``, the client's connection-attempt counter, is left out by older clients).
resume_map = st.fixed_dictionaries(
    {"sid": text, "rt": text,
     "rooms": st.dictionaries(room, st.tuples(uint64, uint64, uint64).map(list), max_size=8)},
    optional={"att": uint64},
)
#: Edge URLs as they appear in HANDOFF, NEIGHBOURS and WELCOME ``neighbours``
#: (the decoder only requires strings).
url = st.sampled_from(["wss://edge-b.example:8443/ws", "ws://10.0.0.7:8080/", ""]) | text
#: WELCOME ``info``: the documented keys (each may be present or not) plus unknown ones.
welcome_info = st.builds(
    lambda known, extra: {**extra, **known},
    st.fixed_dictionaries(
        {},
        optional={
            "version": uint64,
            "ping_interval": st.floats(0, 3600),
            "max_frame_bytes": uint64,
            "max_rooms": uint64,
            "neighbours": st.lists(url, max_size=4),
            "region": text,
            "resume_token": text,
            "resume_window": st.floats(0, 86400),
            "resumed": st.booleans(),
        },
    ),
    info_map,
)
#: RESUMED ``info``: the keys the edge sends for each reason, or anything else.
resumed_info = (
    st.fixed_dictionaries({"to": position})
    | st.fixed_dictionaries({"first_available": st.none() | position})
    | st.fixed_dictionaries({"current": position})
    | st.fixed_dictionaries({"max_replay": uint64})
    | info_map
)
resumed_reason = st.sampled_from(
    ["", "history_trimmed", "session_expired", "resume_rejected", "too_many",
     "history_unavailable", "no_history", "overflow", "forbidden"]
) | text
idem = st.just(0) | uint64
#: JOIN flags: any bits, with a delivery policy that exists (0-4) in bits 2-4.
join_flags = st.builds(lambda f, d: (f & ~DELIVERY_MASK) | (d << DELIVERY_SHIFT), uint64,
                       st.integers(0, 4))
handoff_reason = st.sampled_from(["drain", ""]) | text

FRAME_STRATEGIES: dict[MessageType, st.SearchStrategy[Any]] = {
    MessageType.HELLO: st.builds(Hello, uint64, st.text(_chars, max_size=200), text,
                                 st.none() | resume_map | info_map),
    MessageType.WELCOME: st.builds(Welcome, text, text, welcome_info),
    MessageType.JOIN: st.builds(Join, uint64, room, join_flags,
                                st.dictionaries(text, value, max_size=3)),
    MessageType.JOINED: st.builds(Joined, uint64, room, uint64, uint64),
    MessageType.LEAVE: st.builds(Leave, uint64, room),
    MessageType.PUBLISH: st.builds(Publish, uint64, room, payload, st.booleans(), idem,
                                   st.just("") | st.text(_chars, max_size=32)),
    MessageType.MESSAGE: st.builds(Message, room, uint64, uint64, text, payload, idem),
    MessageType.ACK: st.builds(Ack, uint64, uint64, uint64),
    MessageType.PRESENCE_JOIN: st.builds(PresenceJoin, room, member),
    MessageType.PRESENCE_LEAVE: st.builds(PresenceLeave, room, member, st.booleans()),
    MessageType.PRESENCE_LIST: st.builds(PresenceList, uint64, room),
    MessageType.PRESENCE_MEMBERS: st.builds(
        PresenceMembers, uint64, room, st.lists(member, max_size=20).map(tuple)
    ),
    MessageType.PING: st.builds(Ping, uint64),
    MessageType.PONG: st.builds(Pong, uint64),
    MessageType.ERROR: st.builds(Error, uint64, uint64, text),
    MessageType.RESUME: st.builds(Resume, st.lists(value, max_size=6).map(tuple)),
    MessageType.RESUMED: st.builds(Resumed, room, st.booleans(), uint64, uint64, uint64,
                                   resumed_reason, resumed_info),
    MessageType.HANDOFF: st.builds(Handoff, url, handoff_reason, uint64),
    MessageType.NEIGHBOURS: st.builds(Neighbours, st.lists(url, max_size=8).map(tuple)),
    MessageType.TELEMETRY: st.builds(
        Telemetry, uint64,
        st.lists(st.tuples(text, st.floats(allow_nan=False) | msgint, uint64),
                 max_size=20).map(tuple)),
    MessageType.TELEMETRY_ACK: st.builds(TelemetryAck, uint64, uint64, uint64),
    MessageType.TELEMETRY_ERROR: st.builds(
        TelemetryError, uint64, st.lists(st.tuples(uint64, text, text), max_size=5).map(tuple)),
    MessageType.COMMAND: st.builds(Command, text, text, st.dictionaries(text, value, max_size=5),
                                   uint64),
    MessageType.COMMAND_ACK: st.builds(
        CommandAck, st.text(_chars, min_size=1, max_size=30),
        st.text(_chars, min_size=1, max_size=16), st.dictionaries(text, value, max_size=5)),
    MessageType.REPORT_STATE: st.builds(ReportState, uint64, uint64,
                                        st.dictionaries(text, value, max_size=5)),
    MessageType.SHADOW_DELTA: st.builds(ShadowDelta, uint64, uint64,
                                        st.dictionaries(text, value, max_size=5), text),
    MessageType.ROOM_STATE: st.builds(RoomStateFrame, room, uint64, uint64, uint64, payload),
    MessageType.ROOM_PATCH: st.builds(RoomPatch, room, uint64, uint64, uint64, payload),
    MessageType.ROOM_EVENT: st.builds(RoomEvent, room, text, payload),
    MessageType.ROOM_RESYNC: st.builds(RoomResync, room, uint64),
    MessageType.ROOM_LIST: st.builds(RoomList, uint64, st.text(_chars, min_size=1, max_size=40)),
    MessageType.ROOM_LISTING: st.builds(RoomListing, uint64, st.lists(
        st.dictionaries(text, value, max_size=5), max_size=5)),
    MessageType.HISTORY: st.builds(History, uint64, room, uint64, uint64, uint64),
    MessageType.HISTORY_PAGE: st.builds(HistoryPage, uint64, room, st.lists(
        st.tuples(uint64, uint64, text, payload, uint64), max_size=5).map(tuple),
        st.booleans(), st.booleans()),
    MessageType.RPC: st.builds(Rpc, uint64, st.text(_chars, min_size=1, max_size=40), payload),
    MessageType.RPC_RESULT: st.builds(RpcResult, uint64, text, payload),
    MessageType.REFRESH: st.builds(Refresh, uint64, text),
    MessageType.REFRESHED: st.builds(Refreshed, uint64, uint64,
                                     st.lists(text, max_size=5).map(tuple)),
    MessageType.DROPPED: st.builds(Dropped, room, uint64, uint64, st.tuples(uint64, uint64),
                                   st.tuples(uint64, uint64)),
}
any_frame = st.one_of(*FRAME_STRATEGIES.values())

_FRAME_CLASSES = (
    Hello, Welcome, Join, Joined, Leave, Publish, Message, Ack, PresenceJoin, PresenceLeave,
    PresenceList, PresenceMembers, Ping, Pong, Error, Resume, Resumed, Handoff, Neighbours,
    Telemetry, TelemetryAck, TelemetryError, Command, CommandAck, ReportState, ShadowDelta,
    RoomStateFrame, RoomPatch, RoomEvent, RoomResync, RoomList, RoomListing, History,
    HistoryPage, Rpc, RpcResult, Refresh, Refreshed, Dropped,
)


def test_strategies_cover_every_frame_type() -> None:
    assert set(FRAME_STRATEGIES) == set(MessageType)


def _decode_or_protocol_error(data: bytes, limits: Limits | None = None) -> Frame | None:
    """Decode ``data``; any exception other than a ProtocolError fails the test."""
    try:
        frame = decode(data, limits)
    except ProtocolError as exc:
        assert isinstance(exc.code, ErrorCode)
        assert str(exc)
        return None
    assert isinstance(frame, _FRAME_CLASSES)
    # Whatever the decoder accepts, the encoder can write back, and the result
    # is stable (bytes are compared so that NaN floats do not matter).
    again = encode(frame)
    assert encode(decode(again, limits)) == again
    return frame


# -- (a) hostile input ---------------------------------------------------------


@FUZZ
@given(st.binary(max_size=2048))
def test_arbitrary_bytes(data: bytes) -> None:
    _decode_or_protocol_error(data)


_hostile_scalar = (
    _scalar
    | st.floats()  # NaN and infinities included
    | st.integers(-(2**63), UINT64_MAX)
    | st.builds(msgpack.ExtType, st.integers(0, 127), st.binary(max_size=8))
)
_hostile_key = st.none() | st.booleans() | st.integers(-5, 5) | text | st.binary(max_size=4)
hostile = st.recursive(
    _hostile_scalar,
    lambda inner: st.lists(inner, max_size=6)
    | st.dictionaries(_hostile_key, inner, max_size=4),
    max_leaves=30,
)
# Arrays whose first element is (mostly) a known type number: these get past
# the envelope checks and into the per-type parsers with random fields.
typed_array = st.builds(
    lambda t, rest: [t, *rest],
    st.integers(-2, 20) | _hostile_scalar,
    st.lists(hostile, max_size=7),
)


@FUZZ
@given(hostile)
def test_arbitrary_msgpack_structures(obj: Any) -> None:
    _decode_or_protocol_error(_pack(obj))


@FUZZ
@given(typed_array)
def test_arrays_with_type_numbers(obj: list[Any]) -> None:
    _decode_or_protocol_error(_pack(obj))


@st.composite
def mutated_frame(draw: st.DrawFn) -> bytes:
    base = bytearray(
        draw(st.sampled_from(GOLDEN_BYTES) | any_frame.map(encode))
    )
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "set", "truncate", "insert", "delete"]))
        if not base:
            base.extend(draw(st.binary(min_size=1, max_size=4)))
            continue
        i = draw(st.integers(0, len(base) - 1))
        if op == "flip":
            base[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "set":
            base[i] = draw(st.integers(0, 255))
        elif op == "truncate":
            del base[i:]
        elif op == "insert":
            base[i:i] = draw(st.binary(min_size=1, max_size=8))
        else:
            del base[i : i + draw(st.integers(1, 8))]
    return bytes(base)


@FUZZ
@given(mutated_frame())
def test_mutated_valid_frames(data: bytes) -> None:
    _decode_or_protocol_error(data)


@FUZZ
@given(st.binary(max_size=200), st.integers(16, 256))
def test_small_limits_still_only_protocol_errors(data: bytes, max_frame: int) -> None:
    limits = Limits(max_frame_bytes=max_frame, max_room_name=8, max_token_bytes=16,
                    max_text=16, max_presence_list=2)
    _decode_or_protocol_error(data, limits)


# -- (b) round trip ----------------------------------------------------------------


@pytest.mark.parametrize("mtype", list(MessageType), ids=lambda t: t.name)
@PER_TYPE
@given(data=st.data())
def test_round_trip_every_type(mtype: MessageType, data: st.DataObject) -> None:
    frame = data.draw(FRAME_STRATEGIES[mtype])
    raw = encode(frame)
    assert msgpack.unpackb(raw)[0] == mtype.value
    assert decode(raw) == frame
    assert decode(bytearray(raw)) == frame
    assert decode(memoryview(raw)) == frame


@FUZZ
@given(any_frame)
def test_round_trip_any_frame(frame: Frame) -> None:
    assert decode(encode(frame)) == frame


# -- (c) specific errors -------------------------------------------------------------


@FUZZ
@given(st.integers(1, 512), st.data())
def test_over_limit_is_frame_too_large_before_decoding(limit: int, data: st.DataObject) -> None:
    blob = data.draw(st.binary(min_size=limit + 1, max_size=limit + 64))
    with pytest.raises(FrameTooLarge) as info:
        decode(blob, Limits(max_frame_bytes=limit))
    assert info.value.code is ErrorCode.FRAME_TOO_LARGE
    assert int(info.value.code) == 4413


def _publish_of_size(total: int) -> bytes:
    """A PUBLISH frame exactly ``total`` bytes long."""
    for n in range(total - 32, total):
        raw = encode(Publish(1, "room", b"x" * n, True, 0))
        if len(raw) == total:
            return raw
    raise AssertionError(f"no PUBLISH of exactly {total} bytes")


def test_default_limit_boundary() -> None:
    limit = DEFAULT_LIMITS.max_frame_bytes
    assert limit == 64 * 1024
    at_limit = _publish_of_size(limit)
    assert len(at_limit) == limit
    assert isinstance(decode(at_limit), Publish)
    with pytest.raises(FrameTooLarge):
        decode(_publish_of_size(limit + 1))
    # Checked on the length alone: invalid msgpack over the limit is still "too large".
    with pytest.raises(FrameTooLarge):
        decode(b"\xc1" * (limit + 1))
    with pytest.raises(FrameTooLarge):
        decode(memoryview(b"\x00" * (limit + 1)))
    with pytest.raises(FrameTooLarge):
        Decoder(Limits(max_frame_bytes=10)).decode(encode(Ping(UINT64_MAX)))


_known = {t.value for t in MessageType}
unknown_type = st.integers(-(2**63), UINT64_MAX).filter(lambda t: t not in _known)


@FUZZ
@given(unknown_type, uint64, st.lists(_scalar, max_size=4))
def test_unknown_type_carries_type_and_req_id(type_id: int, req_id: int, rest: list[Any]) -> None:
    with pytest.raises(UnknownMessageType) as info:
        decode(_pack([type_id, req_id, *rest]))
    assert info.value.type_id == type_id
    assert info.value.req_id == req_id
    assert info.value.code is ErrorCode.UNKNOWN_TYPE
    assert int(info.value.code) == 4406


_not_uint = (
    st.none() | st.booleans() | st.floats() | text | st.binary(max_size=4)
    | st.integers(-(2**63), -1) | st.lists(msgint, max_size=2)
)


@FUZZ
@given(unknown_type, _not_uint)
def test_unknown_type_without_valid_req_id_reports_zero(type_id: int, second: Any) -> None:
    with pytest.raises(UnknownMessageType) as info:
        decode(_pack([type_id, second]))
    assert (info.value.type_id, info.value.req_id) == (type_id, 0)
    with pytest.raises(UnknownMessageType) as info:
        decode(_pack([type_id]))
    assert (info.value.type_id, info.value.req_id) == (type_id, 0)


# What each field of each frame type holds (after the type number).
_FIELDS: dict[MessageType, list[str]] = {
    MessageType.HELLO: ["uint", "str", "str", "map_or_nil"],
    MessageType.WELCOME: ["str", "str", "map"],
    MessageType.JOIN: ["uint", "room", "uint", "map"],
    MessageType.JOINED: ["uint", "room", "uint", "uint"],
    MessageType.LEAVE: ["uint", "room"],
    # The key: a string; any other type there is an element a newer peer appended,
    # ignored (golden vector publish-extra-fields), so it has no wrong type.
    MessageType.PUBLISH: ["uint", "room", "bin", "bool", "uint", "any"],
    MessageType.MESSAGE: ["room", "uint", "uint", "str", "bin", "uint"],
    MessageType.ACK: ["uint", "uint", "uint"],
    MessageType.PRESENCE_JOIN: ["room", "member"],
    MessageType.PRESENCE_LEAVE: ["room", "member", "bool"],
    MessageType.PRESENCE_LIST: ["uint", "room"],
    MessageType.PRESENCE_MEMBERS: ["uint", "room", "members"],
    MessageType.PING: ["uint"],
    MessageType.PONG: ["uint"],
    MessageType.ERROR: ["uint", "uint", "str"],
    MessageType.RESUMED: ["room", "bool", "uint", "uint", "uint", "str", "map"],
    MessageType.HANDOFF: ["str", "str", "uint"],
    MessageType.NEIGHBOURS: ["urls"],
    MessageType.TELEMETRY: ["uint", "array"],
    MessageType.TELEMETRY_ACK: ["uint", "uint", "uint"],
    MessageType.TELEMETRY_ERROR: ["uint", "array"],
    MessageType.COMMAND: ["str", "str", "map", "uint"],
    MessageType.COMMAND_ACK: ["str", "str", "map"],
    MessageType.REPORT_STATE: ["uint", "uint", "map"],
    MessageType.SHADOW_DELTA: ["uint", "uint", "map", "str"],
    MessageType.ROOM_STATE: ["room", "uint", "uint", "uint", "bin"],
    MessageType.ROOM_PATCH: ["room", "uint", "uint", "uint", "bin"],
    MessageType.ROOM_EVENT: ["room", "str", "bin"],
    MessageType.ROOM_RESYNC: ["room", "uint"],
    MessageType.ROOM_LIST: ["uint", "str"],
    MessageType.ROOM_LISTING: ["uint", "maps"],
    MessageType.HISTORY: ["uint", "room", "uint", "uint", "uint"],
    MessageType.HISTORY_PAGE: ["uint", "room", "items", "bool", "bool"],
    MessageType.RPC: ["uint", "str", "bin"],
    MessageType.RPC_RESULT: ["uint", "str", "bin"],
    MessageType.REFRESH: ["uint", "str"],
    MessageType.REFRESHED: ["uint", "uint", "urls"],  # rooms_left: an array of strings
    MessageType.DROPPED: ["room", "uint", "uint", "uint", "uint", "uint", "uint"],
}
# Fields that may be left out at the end of the array.
_OPTIONAL = {MessageType.HELLO: 2, MessageType.JOIN: 2, MessageType.PUBLISH: 3,
             MessageType.MESSAGE: 1, MessageType.COMMAND_ACK: 1,
             MessageType.PRESENCE_LEAVE: 1,
             MessageType.SHADOW_DELTA: 1}


def test_field_table_covers_every_concrete_type() -> None:
    # RESUME is reserved: its body is opaque (any elements).
    assert set(_FIELDS) == set(MessageType) - {MessageType.RESUME}


def _full_array(frame: Frame) -> list[Any]:
    """The frame as a msgpack array with every field written out, optional
    ones included (the encoder leaves MESSAGE ``idem`` 0 out)."""
    arr: list[Any] = msgpack.unpackb(encode(frame), raw=False)
    if isinstance(frame, Message) and len(arr) == 6:
        arr.append(frame.idem)
    if isinstance(frame, Join) and len(arr) == 4:
        arr.append(frame.options)
    if isinstance(frame, PresenceLeave) and len(arr) == 3:
        arr.append(frame.lost)
    if isinstance(frame, Publish) and len(arr) == 6:
        arr.append(frame.key)
    return arr
_not_str = st.none() | st.booleans() | msgint | st.floats() | st.binary(max_size=4) \
    | st.lists(text, max_size=2) | st.dictionaries(text, text, max_size=2)
_WRONG: dict[str, st.SearchStrategy[Any]] = {
    "uint": _not_uint | st.dictionaries(text, text, max_size=2),
    "str": _not_str,
    "room": _not_str | st.just("") | st.just("r" * (DEFAULT_LIMITS.max_room_name + 1)),
    "bin": _not_str.filter(lambda v: type(v) is not bytes) | text,
    "bool": st.none() | msgint | st.floats() | text | st.binary(max_size=4),
    "map": st.none() | st.booleans() | msgint | text | st.lists(msgint, max_size=2),
    "map_or_nil": st.booleans() | msgint | text | st.lists(msgint, max_size=2),
    "member": st.none() | text | msgint | st.dictionaries(text, text, max_size=3)
    | st.lists(text, max_size=2) | st.lists(text, min_size=4, max_size=5)
    | st.tuples(text, msgint, text).map(list),
    "members": st.none() | text | msgint | st.dictionaries(text, text, max_size=2)
    | st.tuples(st.just(["s", "u", "player"]), msgint).map(list)
    | st.tuples(st.lists(text, min_size=2, max_size=2)).map(list),
    "items": st.none() | st.booleans() | msgint | text | st.dictionaries(text, text, max_size=2)
    | st.lists(msgint, min_size=1, max_size=2) | st.just([[1, 2, "s", "not-bin", 0]]),
    "maps": st.none() | st.booleans() | msgint | text | st.dictionaries(text, text, max_size=2)
    | st.lists(msgint, min_size=1, max_size=2),
    "array": st.none() | st.booleans() | msgint | st.floats() | text | st.binary(max_size=4)
    | st.dictionaries(text, text, max_size=2),
    # Not an array, or an array with a non-string among the URLs.
    "urls": st.none() | st.booleans() | msgint | st.floats() | text | st.binary(max_size=4)
    | st.dictionaries(text, text, max_size=2)
    | st.tuples(st.lists(text, max_size=3), _not_str, st.lists(text, max_size=3)).map(
        lambda t: [*t[0], t[1], *t[2]]
    ),
}


@pytest.mark.parametrize("mtype", list(_FIELDS), ids=lambda t: t.name)
@PER_TYPE
@given(data=st.data())
def test_wrong_field_type_is_malformed(mtype: MessageType, data: st.DataObject) -> None:
    arr = _full_array(data.draw(FRAME_STRATEGIES[mtype]))
    kinds = _FIELDS[mtype]
    assert len(arr) == len(kinds) + 1
    i = data.draw(st.sampled_from([i for i, k in enumerate(kinds) if k != "any"]))
    arr[i + 1] = data.draw(_WRONG[kinds[i]])
    with pytest.raises(MalformedFrame) as info:
        decode(_pack(arr))
    assert type(info.value) is MalformedFrame
    assert info.value.code == ErrorCode.BAD_REQUEST


@pytest.mark.parametrize("mtype", list(_FIELDS), ids=lambda t: t.name)
@PER_TYPE
@given(data=st.data())
def test_wrong_arity_is_malformed(mtype: MessageType, data: st.DataObject) -> None:
    """Too few elements: fewer than the type number plus the required fields."""
    arr = _full_array(data.draw(FRAME_STRATEGIES[mtype]))
    required = len(_FIELDS[mtype]) - _OPTIONAL.get(mtype, 0)
    keep = data.draw(st.integers(1, required))  # at most required - 1 fields survive
    del arr[keep:]
    with pytest.raises(MalformedFrame) as info:
        decode(_pack(arr))
    assert type(info.value) is MalformedFrame


@pytest.mark.parametrize("mtype", list(_FIELDS), ids=lambda t: t.name)
@PER_TYPE
@given(data=st.data())
def test_required_fields_alone_decode(mtype: MessageType, data: st.DataObject) -> None:
    """The shortest accepted array: the type number and the required fields."""
    arr = _full_array(data.draw(FRAME_STRATEGIES[mtype]))
    required = len(_FIELDS[mtype]) - _OPTIONAL.get(mtype, 0)
    frame = decode(_pack(arr[: 1 + required]))
    assert type(frame) is type(decode(_pack(arr)))


@pytest.mark.parametrize("mtype", list(_FIELDS), ids=lambda t: t.name)
@PER_TYPE
@given(data=st.data())
def test_extra_trailing_elements_are_ignored(mtype: MessageType, data: st.DataObject) -> None:
    """Forward compatibility: a newer peer may append fields; they are ignored,
    whatever their type, and the frame decodes exactly as without them."""
    frame = data.draw(FRAME_STRATEGIES[mtype])
    arr = _full_array(frame)
    extra = data.draw(st.lists(value, min_size=1, max_size=4))
    assert decode(_pack(arr + extra)) == frame
    assert decode(_pack(arr)) == frame


def test_extra_trailing_elements_examples() -> None:
    assert decode(_pack([13, 5, "x", None, {"k": [1, 2]}])) == Ping(5)
    assert decode(_pack([8, 2, 3, 42, b"\x00"])) == Ack(2, 3, 42)
    assert decode(_pack([6, 1, "r", b"p", False, 7, {"ttl": 3}])) == Publish(
        1, "r", b"p", False, 7
    )
    assert decode(_pack([7, "r", 1, 2, "s", b"p", 9, "future"])) == Message(
        "r", 1, 2, "s", b"p", 9
    )
    assert decode(_pack([17, "r", True, 1, 2, 0, "", {}, "future"])) == Resumed(
        "r", True, 1, 2, 0, "", {}
    )
    # An element in the position of a known optional field is that field, not
    # an extra: it must be valid.
    with pytest.raises(MalformedFrame):
        decode(_pack([7, "r", 1, 2, "s", b"p", "not-an-idem"]))
    with pytest.raises(MalformedFrame):
        decode(_pack([6, 1, "r", b"p", "not-a-bool", 7, "extra"]))
    assert decode(_pack([18, "wss://b/ws", "drain", 500, {"why": "drain"}])) == Handoff(
        "wss://b/ws", "drain", 500
    )
    assert decode(_pack([19, ["wss://b/ws"], 2, "future"])) == Neighbours(("wss://b/ws",))
    # The reserved RESUME keeps an opaque body: extra elements are part of it.
    assert decode(_pack([16, 1, "x"])) == Resume((1, "x"))


def test_optional_trailing_fields_take_their_defaults() -> None:
    assert decode(_pack([1, 1, "t"])) == Hello(1, "t", "", None)
    assert decode(_pack([1, 1, "t", "n"])) == Hello(1, "t", "n", None)
    assert decode(_pack([3, 1, "r"])) == Join(1, "r", 0)
    assert decode(_pack([6, 1, "r", b"p"])) == Publish(1, "r", b"p", True, 0)
    assert decode(_pack([6, 1, "r", b"p", False])) == Publish(1, "r", b"p", False, 0)
    assert decode(_pack([7, "r", 1, 2, "s", b"p"])) == Message("r", 1, 2, "s", b"p", 0)
    assert decode(_pack([7, "r", 1, 2, "s", b"p", 0])) == Message("r", 1, 2, "s", b"p", 0)


def test_message_idem_is_omitted_when_zero() -> None:
    plain = Message("r", 1, 2, "s", b"p")
    assert plain.idem == 0
    assert msgpack.unpackb(encode(plain), raw=False) == [7, "r", 1, 2, "s", b"p"]
    keyed = Message("r", 1, 2, "s", b"p", 9001)
    assert msgpack.unpackb(encode(keyed), raw=False) == [7, "r", 1, 2, "s", b"p", 9001]
    assert encode_message("r", 1, 2, "s", b"p", 9001) == encode(keyed)
    assert encode_message("r", 1, 2, "s", b"p", 0) == encode_message("r", 1, 2, "s", b"p")
    assert encode_message("r", 1, 2, "s", b"p") == encode(plain)
    assert decode(encode(keyed)) == keyed
    big = decode(encode_message("r", 0, 0, "s", b"p", UINT64_MAX))
    assert isinstance(big, Message) and big.idem == UINT64_MAX


def test_resumed_fields() -> None:
    r = Resumed("lobby", False, 3, 42, 0, "history_trimmed", {"first_available": None})
    arr = msgpack.unpackb(encode(r), raw=False)
    assert arr == [17, "lobby", False, 3, 42, 0, "history_trimmed", {"first_available": None}]
    assert decode(encode(r)) == r
    # reason and info default to "" and {} but are always on the wire.
    assert msgpack.unpackb(encode(Resumed("r", True, 1, 2, 3)), raw=False) == [
        17, "r", True, 1, 2, 3, "", {}
    ]
    for bad in (
        [17, "", True, 1, 2, 0, "", {}],  # empty room
        [17, "r", 1, 1, 2, 0, "", {}],  # recovered not a bool
        [17, "r", None, 1, 2, 0, "", {}],
        [17, "r", True, -1, 2, 0, "", {}],  # negative epoch
        [17, "r", True, 1, 2, True, "", {}],  # replayed is a bool
        [17, "r", True, 1, 2, 0, None, {}],  # reason not a str
        [17, "r", True, 1, 2, 0, "", []],  # info not a map
        [17, "r", True, 1, 2, 0, "", None],
        [17, "r", True, 1, 2, 0, ""],  # info missing: no optional fields
        [17],
    ):
        with pytest.raises(MalformedFrame):
            decode(_pack(bad))


def test_hello_resume_map_round_trips() -> None:
    resume = {"sid": "s-1", "rt": "ab" * 32, "rooms": {"lobby": [1, 3, 42], "é": [0, 0, 0]}}
    h = Hello(1, "t", "bot", resume)
    assert decode(encode(h)) == h
    # "att" (connection-attempt counter) is one more key of the map, passed through.
    with_att = Hello(1, "t", "bot", {**resume, "att": 7})
    assert decode(encode(with_att)) == with_att
    assert msgpack.unpackb(encode(with_att), raw=False)[4]["att"] == 7
    assert decode(_pack([1, 1, "t", "bot", None])) == Hello(1, "t", "bot", None)
    bad: Any
    for bad in ([], "sid", 1, True):
        with pytest.raises(MalformedFrame):
            decode(_pack([1, 1, "t", "bot", bad]))


def test_handoff_fields() -> None:
    h = Handoff("wss://edge-b.example:8443/ws", "drain", 10_000)
    assert msgpack.unpackb(encode(h), raw=False) == [
        18, "wss://edge-b.example:8443/ws", "drain", 10_000
    ]
    assert decode(encode(h)) == h
    # reason and deadline_ms have defaults in Python but are always on the wire.
    assert Handoff("u") == Handoff("u", "drain", 10_000)
    assert msgpack.unpackb(encode(Handoff("u")), raw=False) == [18, "u", "drain", 10_000]
    assert decode(_pack([18, "u", "", UINT64_MAX])) == Handoff("u", "", UINT64_MAX)
    for bad in (
        [18],  # the reserved form of earlier revisions
        [18, "u"],
        [18, "u", "drain"],  # no optional fields
        [18, None, "drain", 1],
        [18, b"u", "drain", 1],  # url is str, not bin
        [18, "u", 1, 1],
        [18, "u", "drain", -1],
        [18, "u", "drain", 1.5],
        [18, "u", "drain", True],
        [18, "u", "drain", "10000"],
    ):
        with pytest.raises(MalformedFrame):
            decode(_pack(bad))


def test_neighbours_fields() -> None:
    n = Neighbours(("wss://b/ws", "wss://c/ws"))
    assert msgpack.unpackb(encode(n), raw=False) == [19, ["wss://b/ws", "wss://c/ws"]]
    assert decode(encode(n)) == n
    assert encode(Neighbours(())) == bytes.fromhex("921390")
    assert decode(bytes.fromhex("921390")) == Neighbours(())
    # The order is kept (best first) and duplicates are not the decoder's business.
    assert decode(_pack([19, ["c", "b", "c"]])) == Neighbours(("c", "b", "c"))
    for bad in ([19], [19, None], [19, "wss://b/ws"], [19, {"b": 1}], [19, ["b", 1]],
                [19, ["b", None]], [19, [b"b"]], [19, [["b"]]]):
        with pytest.raises(MalformedFrame):
            decode(_pack(bad))


def test_handoff_and_neighbours_carry_no_req_id() -> None:
    """Edge-only frames without a request id: a client that sends one gets
    ERROR 4400 with req_id 0, so peeking must not find an id in them."""
    assert Decoder().peek_req_id(encode(Handoff("u", "drain", 5))) == 0
    assert Decoder().peek_req_id(encode(Neighbours(("u",)))) == 0


def test_envelope_errors_are_malformed() -> None:
    for obj in ({}, [], 1, "x", None, [None], ["1"], [1.0], [True, 1], {"t": 1}):
        with pytest.raises(MalformedFrame):
            decode(_pack(obj))
    for raw in (b"", b"\xc1", _pack([13, 1]) + b"\x00", _pack([13, 1])[:-1]):
        with pytest.raises(MalformedFrame):
            decode(raw)


def test_string_and_collection_limits() -> None:
    limits = Limits(max_room_name=8, max_token_bytes=300, max_text=300, max_presence_list=4)
    assert decode(_pack([3, 1, "r" * 8]), limits) == Join(1, "r" * 8, 0)
    with pytest.raises(MalformedFrame):
        decode(_pack([3, 1, "r" * 9]), limits)
    # The room limit counts UTF-8 bytes, not code points.
    with pytest.raises(MalformedFrame):
        decode(_pack([3, 1, "é" * 5]), limits)
    assert decode(_pack([1, 1, "t" * 300]), limits) == Hello(1, "t" * 300)
    with pytest.raises(MalformedFrame):
        decode(_pack([1, 1, "t" * 301]), limits)
    # Strings beyond the decoder's string bound are refused inside msgpack.
    with pytest.raises(MalformedFrame):
        decode(_pack([15, 0, 4000, "m" * 5000]))
    # Arrays beyond max_presence_list + 16 elements are refused inside msgpack.
    members = [["s", "u", "player"]] * 21
    with pytest.raises(MalformedFrame):
        decode(_pack([12, 1, "r", members]), limits)
    # Maps are bounded by the frame size (an entry takes at least two bytes): more
    # than 64 entries decode (a counted limit answers with its own code), a header
    # claiming more entries than the frame can hold is refused inside msgpack.
    big = {str(i): i for i in range(65)}
    assert decode(_pack([2, "s", "e", big])) == Welcome("s", "e", big)
    with pytest.raises(MalformedFrame):
        decode(b"\x94\x02\xa1s\xa1e\xdf\x00\x01\x00\x00" + b"\xa1k\x00" * 100)
    # Deep nesting is refused, not a RecursionError.
    with pytest.raises(MalformedFrame):
        decode(b"\x92\x10" + b"\x91" * 5000 + b"\x90")


def test_encode_rejects_non_frames() -> None:
    with pytest.raises(TypeError):
        encode(Member("s", "u", "player"))  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        encode([13, 1])  # type: ignore[arg-type]


# -- the MESSAGE fast path ------------------------------------------------------------

_message_field = st.one_of(
    st.text(max_size=40), st.integers(-2, 2**64 + 1), st.binary(max_size=8), st.booleans(),
    st.none(), st.floats(allow_nan=False), st.just(""), st.just("é" * 40),
)


def _outcome(parse: Any, d: Decoder, o: list[Any]) -> Any:
    try:
        return parse(d, o)
    except ProtocolError as exc:
        return type(exc), str(exc)


@st.composite
def _message_array(draw: st.DrawFn) -> list[Any]:
    """A valid MESSAGE array, then maybe a few fields replaced, cut or added."""
    uint = st.integers(0, UINT64_MAX)
    o: list[Any] = [7, draw(st.text(min_size=1, max_size=40)), draw(uint), draw(uint),
                    draw(st.text(max_size=10)), draw(st.binary(max_size=8))]
    if draw(st.booleans()):
        o.append(draw(uint))
    for _ in range(draw(st.integers(0, 2))):
        o[draw(st.integers(1, len(o) - 1))] = draw(_message_field)
    if draw(st.booleans()):
        del o[draw(st.integers(1, len(o))):]
    o.extend(draw(st.lists(_message_field, max_size=2)))
    return o


@FUZZ
@given(_message_array() | st.lists(_message_field, max_size=9).map(lambda r: [7, *r]),
       st.integers(1, 200))
def test_message_fast_path_agrees_with_the_checked_path(o: list[Any], max_room: int) -> None:
    """Same frame, or the same error, whichever path decodes a MESSAGE array."""
    from client_sdk.protocol import codec

    d = Decoder(Limits(max_room_name=max_room))
    assert _outcome(codec._p_message, d, o) == _outcome(codec._p_message_checked, d, o)


def test_message_fast_path_builds_a_normal_frozen_message() -> None:
    from client_sdk.protocol import codec

    m = codec._new_message("r", 1, 2, "s", b"p", 3)
    ref = Message("r", 1, 2, "s", b"p", 3)
    assert m == ref and hash(m) == hash(ref) and repr(m) == repr(ref)
    with pytest.raises(AttributeError):
        m.seq = 5  # type: ignore[misc]
    assert Decoder().decode(encode(Message("r", 1, 2, "s", b"p"))) == Message("r", 1, 2, "s", b"p")
