"""msgpack codec for :mod:`client_sdk.protocol.messages`.

:func:`decode` turns untrusted bytes into a frame object and raises only
:class:`~client_sdk.protocol.errors.ProtocolError` subclasses: it checks the
frame size before decoding, bounds every string, bytes, array and map length
inside msgpack, and validates the shape and types of each field.

:func:`encode` is the inverse.  :func:`encode_message` is the hot-path encoder
the edge uses to build a MESSAGE frame once for all members of a room.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

import msgpack

from .delivery import DELIVERY_ENCODERS, DELIVERY_PARSERS, delivery_of, publish_key
from .errors import FrameTooLarge, MalformedFrame, ProtocolError, UnknownMessageType
from .fields import UINT64_MAX as _UINT64_MAX
from .fields import arity as _arity
from .fields import str_map as _map
from .fields import string as _str
from .fields import uint as _uint
from .function_frames import FUNCTION_ENCODERS, FUNCTION_PARSERS
from .limits import DEFAULT_LIMITS, Limits
from .messages import (
    Ack,
    Command,
    CommandAck,
    Error,
    Frame,
    Handoff,
    Hello,
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
    Publish,
    ReportState,
    Resume,
    Resumed,
    ShadowDelta,
    Telemetry,
    TelemetryAck,
    TelemetryError,
    Welcome,
)
from .room_frames import ROOM_ENCODERS, ROOM_PARSERS
from .token_frames import TOKEN_ENCODERS, TOKEN_PARSERS

__all__ = ["encode", "decode", "encode_message", "Decoder"]

_packer = msgpack.Packer(use_bin_type=True)


def _packb(obj: Any) -> bytes:
    return _packer.pack(obj)  # type: ignore[no-any-return]


_unpackb = msgpack.unpackb
_object_new = object.__new__
_set_room, _set_epoch, _set_seq, _set_sender, _set_payload, _set_idem = (
    Message.__dict__[f.name].__set__ for f in fields(Message))
if [f.name for f in fields(Message)] != ["room", "epoch", "seq", "sender", "payload", "idem"]:
    raise RuntimeError("codec: _new_message does not match Message's fields")  # pragma: no cover


def _new_message(room: str, epoch: int, seq: int, sender: str, payload: bytes,
                 idem: int) -> Message:
    """``Message(room, epoch, seq, sender, payload, idem)``, built ~40% faster: a
    frozen dataclass's ``__init__`` sets each field through ``object.__setattr__``;
    this sets the slots through their descriptors (same object, still frozen)."""
    m: Message = _object_new(Message)
    _set_room(m, room)
    _set_epoch(m, epoch)
    _set_seq(m, seq)
    _set_sender(m, sender)
    _set_payload(m, payload)
    _set_idem(m, idem)
    return m


def encode_message(room: str, epoch: int, seq: int, sender: str, payload: bytes,
                   idem: int = 0) -> bytes:
    """Encode a MESSAGE frame (hot path: no object is built).  ``idem`` 0 is omitted."""
    if idem:
        return _packb([7, room, epoch, seq, sender, payload, idem])
    return _packb([7, room, epoch, seq, sender, payload])


def _member(m: Member) -> list[str]:
    return [m.session_id, m.subject, m.kind]


def encode(frame: Frame) -> bytes:
    """Encode one frame to bytes.  Raises ``TypeError`` for a non-frame."""
    t = type(frame)
    body: list[Any]
    if t is Message:
        assert isinstance(frame, Message)
        return encode_message(frame.room, frame.epoch, frame.seq, frame.sender, frame.payload,
                              frame.idem)
    if t is Publish:
        assert isinstance(frame, Publish)
        body = [6, frame.req_id, frame.room, frame.payload, frame.reliable, frame.idem]
        if frame.key:
            body.append(frame.key)
    elif t is Ack:
        assert isinstance(frame, Ack)
        body = [8, frame.req_id, frame.epoch, frame.seq]
    elif t is Hello:
        assert isinstance(frame, Hello)
        body = [1, frame.version, frame.token, frame.client_name, frame.resume]
    elif t is Welcome:
        assert isinstance(frame, Welcome)
        body = [2, frame.session_id, frame.edge_id, frame.info]
    elif t is Join:
        assert isinstance(frame, Join)
        body = [3, frame.req_id, frame.room, frame.flags]
        if frame.options:
            body.append(frame.options)
    elif t is Joined:
        assert isinstance(frame, Joined)
        body = [4, frame.req_id, frame.room, frame.epoch, frame.seq]
    elif t is Leave:
        assert isinstance(frame, Leave)
        body = [5, frame.req_id, frame.room]
    elif t is PresenceJoin:
        assert isinstance(frame, PresenceJoin)
        body = [9, frame.room, _member(frame.member)]
    elif t is PresenceLeave:
        assert isinstance(frame, PresenceLeave)
        body = [10, frame.room, _member(frame.member)]
        if frame.lost:
            body.append(True)
    elif t is PresenceList:
        assert isinstance(frame, PresenceList)
        body = [11, frame.req_id, frame.room]
    elif t is PresenceMembers:
        assert isinstance(frame, PresenceMembers)
        body = [12, frame.req_id, frame.room, [_member(m) for m in frame.members]]
    elif t is Ping:
        assert isinstance(frame, Ping)
        body = [13, frame.stamp]
    elif t is Pong:
        assert isinstance(frame, Pong)
        body = [14, frame.stamp]
    elif t is Error:
        assert isinstance(frame, Error)
        body = [15, frame.req_id, frame.code, frame.message]
    elif t is Resume:
        assert isinstance(frame, Resume)
        body = [16, *frame.body]
    elif t is Resumed:
        assert isinstance(frame, Resumed)
        body = [17, frame.room, frame.recovered, frame.epoch, frame.seq, frame.replayed,
                frame.reason, frame.info]
    elif t is Handoff:
        assert isinstance(frame, Handoff)
        body = [18, frame.url, frame.reason, frame.deadline_ms]
    elif t is Neighbours:
        assert isinstance(frame, Neighbours)
        body = [19, list(frame.urls)]
    elif t is Telemetry:
        assert isinstance(frame, Telemetry)
        body = [20, frame.batch_id,
                [list(x) if isinstance(x, tuple) else x for x in frame.samples]]
    elif t is TelemetryAck:
        assert isinstance(frame, TelemetryAck)
        body = [21, frame.batch_id, frame.accepted, frame.rejected]
    elif t is TelemetryError:
        assert isinstance(frame, TelemetryError)
        body = [22, frame.batch_id, [list(e) for e in frame.errors]]
    elif t is Command:
        assert isinstance(frame, Command)
        body = [23, frame.command_id, frame.name, frame.args, frame.expires_ms]
    elif t is CommandAck:
        assert isinstance(frame, CommandAck)
        body = [24, frame.command_id, frame.status, frame.result]
    elif t is ReportState:
        assert isinstance(frame, ReportState)
        body = [25, frame.req_id, frame.version, frame.state]
    elif t is ShadowDelta:
        assert isinstance(frame, ShadowDelta)
        body = [26, frame.version, frame.desired_version, frame.delta, frame.command_id]
    else:
        table_encoder = _TABLE_ENCODERS.get(t)
        if table_encoder is None:
            raise TypeError(f"not a protocol frame: {t.__name__}")
        body = table_encoder(frame)
    return _packb(body)


#: Frames encoded from the tables of their own modules (room, function, token and
#: delivery frames).
_TABLE_ENCODERS: dict[type[Any], Any] = {**ROOM_ENCODERS, **FUNCTION_ENCODERS,
                                         **TOKEN_ENCODERS, **DELIVERY_ENCODERS}


class Decoder:
    """Decodes frames under a set of :class:`Limits` (reusable, stateless).

    The limits are read once, here (the msgpack bounds are derived from them
    ahead of time: :meth:`decode` runs once per frame on both sides).
    """

    def __init__(self, limits: Limits = DEFAULT_LIMITS) -> None:
        self.limits = limits
        self._max_frame = limits.max_frame_bytes
        self._max_str = max(limits.max_token_bytes, limits.max_text, limits.max_room_name, 256)
        # A map entry takes at least two bytes, so the frame size already bounds every
        # map; a tighter generic bound would refuse (4400) what a counted limit must
        # answer with its own code, e.g. a HELLO resume map over max_rooms -> 4407.
        self._max_map = max(limits.max_frame_bytes // 2, 64)
        self._max_array = limits.max_presence_list + 16
        self._max_room = limits.max_room_name

    def decode(self, data: bytes | bytearray | memoryview) -> Frame:
        """Decode one frame; raise a :class:`ProtocolError` subclass on bad input."""
        if len(data) > self._max_frame:
            raise FrameTooLarge(
                f"frame of {len(data)} bytes exceeds the limit of {self._max_frame}"
            )
        try:
            obj = _unpackb(
                data,
                raw=False,
                use_list=True,
                strict_map_key=True,
                max_str_len=self._max_str,
                max_bin_len=self._max_frame,
                max_array_len=self._max_array,
                max_map_len=self._max_map,
                max_ext_len=0,
            )
        except (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError,
                msgpack.StackError, UnicodeDecodeError, OverflowError) as exc:
            raise MalformedFrame("frame is not valid msgpack") from exc
        except Exception as exc:  # msgpack may raise others on hostile input
            raise MalformedFrame("frame is not valid msgpack") from exc
        if not isinstance(obj, list) or not obj:
            raise MalformedFrame("frame must be a non-empty msgpack array")
        t = obj[0]
        if type(t) is not int:
            raise MalformedFrame("frame type must be an integer")
        parser = _PARSERS.get(t)
        if parser is None:
            req = obj[1] if len(obj) > 1 and type(obj[1]) is int else 0
            req = req if 0 <= req <= _UINT64_MAX else 0
            raise UnknownMessageType(f"unknown frame type {t}", type_id=t, req_id=req)
        try:
            frame: Frame = parser(self, obj)
            return frame
        except ProtocolError as exc:
            exc.req_id = _request_id(obj)
            raise
        except (IndexError, TypeError, ValueError) as exc:
            err = MalformedFrame(f"malformed {MessageType(t).name} frame")
            err.req_id = _request_id(obj)
            raise err from exc

    def peek_req_id(self, data: bytes | bytearray | memoryview) -> int:
        """The request id of a client request frame, or 0 (never raises)."""
        if len(data) > self.limits.max_frame_bytes:
            return 0
        try:
            obj = msgpack.unpackb(data, raw=False, max_str_len=self._max_str,
                                  max_bin_len=self.limits.max_frame_bytes,
                                  max_array_len=16, max_map_len=16, max_ext_len=0)
        except Exception:
            return 0
        return _request_id(obj) if isinstance(obj, list) and obj else 0

    # -- field checks -------------------------------------------------------

    def _room(self, v: object) -> str:
        if type(v) is not str or not v:
            raise MalformedFrame("room must be a non-empty string")
        # UTF-8 takes at most 4 bytes per character: most names need no encoding.
        if len(v) * 4 > self._max_room and len(v.encode()) > self._max_room:
            raise MalformedFrame(f"room name longer than {self._max_room} bytes")
        return v


#: Client frames that carry a request id in their second element.
_REQUESTS = frozenset({3, 5, 6, 11, 25, 31, 33, 35, 37})


def _request_id(obj: list[Any]) -> int:
    """Request id of a client request array (JOIN, LEAVE, PUBLISH, RPC, ...), else 0."""
    if (len(obj) > 1 and type(obj[0]) is int and obj[0] in _REQUESTS
            and type(obj[1]) is int and 0 < obj[1] <= _UINT64_MAX):
        return int(obj[1])
    return 0


def _parse_member(v: object) -> Member:
    if not isinstance(v, list) or len(v) != 3:
        raise MalformedFrame("member must be [session_id, subject, kind]")
    return Member(_str(v[0], "session_id"), _str(v[1], "subject"), _str(v[2], "kind"))


def _p_hello(d: Decoder, o: list[Any]) -> Hello:
    _arity(o, 5, "HELLO", optional=2)
    token = _str(o[2], "token")
    if len(token) > d.limits.max_token_bytes:
        raise MalformedFrame("token too long")
    name = _str(o[3], "client_name") if len(o) > 3 else ""
    resume = o[4] if len(o) > 4 else None
    if resume is not None and not isinstance(resume, dict):
        raise MalformedFrame("resume must be a map or nil")
    return Hello(_uint(o[1], "version"), token, name, resume)


def _p_welcome(d: Decoder, o: list[Any]) -> Welcome:
    _arity(o, 4, "WELCOME")
    if not isinstance(o[3], dict):
        raise MalformedFrame("info must be a map")
    return Welcome(_str(o[1], "session_id"), _str(o[2], "edge_id"), o[3])


def _p_join(d: Decoder, o: list[Any]) -> Join:
    _arity(o, 4, "JOIN", optional=1)
    flags = _uint(o[3], "flags") if len(o) > 3 else 0
    delivery_of(flags)  # an unknown policy is refused here (4400)
    options = _map(o[4], "options") if len(o) > 4 else {}
    return Join(_uint(o[1], "req_id"), d._room(o[2]), flags, options)


def _p_joined(d: Decoder, o: list[Any]) -> Joined:
    _arity(o, 5, "JOINED")
    return Joined(_uint(o[1], "req_id"), d._room(o[2]), _uint(o[3], "epoch"), _uint(o[4], "seq"))


def _p_leave(d: Decoder, o: list[Any]) -> Leave:
    _arity(o, 3, "LEAVE")
    return Leave(_uint(o[1], "req_id"), d._room(o[2]))


def _p_publish(d: Decoder, o: list[Any]) -> Publish:
    _arity(o, 7, "PUBLISH", optional=3)
    payload = o[3]
    if type(payload) is not bytes:
        raise MalformedFrame("payload must be binary")
    reliable = o[4] if len(o) > 4 else True
    if type(reliable) is not bool:
        raise MalformedFrame("reliable must be a boolean")
    idem = _uint(o[5], "idem") if len(o) > 5 else 0
    key = publish_key(o[6]) if len(o) > 6 else ""
    return Publish(_uint(o[1], "req_id"), d._room(o[2]), payload, reliable, idem, key)


def _p_message(d: Decoder, o: list[Any]) -> Message:
    # The client's hot path (once per message received): every check of
    # _p_message_checked in one expression, and the object built without the
    # frozen dataclass's __init__.  Anything unusual takes the checked path,
    # which raises the precise error.
    if 6 <= len(o) <= 7:
        room, epoch, seq, sender, payload = o[1], o[2], o[3], o[4], o[5]
        idem = o[6] if len(o) == 7 else 0
        if (type(room) is str and room and type(epoch) is int and type(seq) is int
                and type(sender) is str and type(payload) is bytes and type(idem) is int
                and 0 <= epoch <= _UINT64_MAX and 0 <= seq <= _UINT64_MAX
                and 0 <= idem <= _UINT64_MAX and len(room) * 4 <= d._max_room):
            return _new_message(room, epoch, seq, sender, payload, idem)
    return _p_message_checked(d, o)


def _p_message_checked(d: Decoder, o: list[Any]) -> Message:
    _arity(o, 7, "MESSAGE", optional=1)
    payload = o[5]
    if type(payload) is not bytes:
        raise MalformedFrame("payload must be binary")
    idem = _uint(o[6], "idem") if len(o) > 6 else 0
    return Message(
        d._room(o[1]), _uint(o[2], "epoch"), _uint(o[3], "seq"), _str(o[4], "sender"), payload,
        idem,
    )


def _p_ack(d: Decoder, o: list[Any]) -> Ack:
    _arity(o, 4, "ACK")
    return Ack(_uint(o[1], "req_id"), _uint(o[2], "epoch"), _uint(o[3], "seq"))


def _p_pjoin(d: Decoder, o: list[Any]) -> PresenceJoin:
    _arity(o, 3, "PRESENCE_JOIN")
    return PresenceJoin(d._room(o[1]), _parse_member(o[2]))


def _p_pleave(d: Decoder, o: list[Any]) -> PresenceLeave:
    _arity(o, 4, "PRESENCE_LEAVE", optional=1)
    lost = o[3] if len(o) > 3 else False
    if type(lost) is not bool:
        raise MalformedFrame("lost must be a boolean")
    return PresenceLeave(d._room(o[1]), _parse_member(o[2]), lost)


def _p_plist(d: Decoder, o: list[Any]) -> PresenceList:
    _arity(o, 3, "PRESENCE_LIST")
    return PresenceList(_uint(o[1], "req_id"), d._room(o[2]))


def _p_pmembers(d: Decoder, o: list[Any]) -> PresenceMembers:
    _arity(o, 4, "PRESENCE_MEMBERS")
    if not isinstance(o[3], list):
        raise MalformedFrame("members must be an array")
    return PresenceMembers(
        _uint(o[1], "req_id"), d._room(o[2]), tuple(_parse_member(m) for m in o[3])
    )


def _p_ping(d: Decoder, o: list[Any]) -> Ping:
    _arity(o, 2, "PING")
    return Ping(_uint(o[1], "stamp"))


def _p_pong(d: Decoder, o: list[Any]) -> Pong:
    _arity(o, 2, "PONG")
    return Pong(_uint(o[1], "stamp"))


def _p_error(d: Decoder, o: list[Any]) -> Error:
    _arity(o, 4, "ERROR")
    return Error(_uint(o[1], "req_id"), _uint(o[2], "code"), _str(o[3], "message"))


def _p_resume(d: Decoder, o: list[Any]) -> Resume:
    return Resume(tuple(o[1:]))


def _p_resumed(d: Decoder, o: list[Any]) -> Resumed:
    _arity(o, 8, "RESUMED")
    if type(o[2]) is not bool:
        raise MalformedFrame("recovered must be a boolean")
    if not isinstance(o[7], dict):
        raise MalformedFrame("info must be a map")
    return Resumed(d._room(o[1]), o[2], _uint(o[3], "epoch"), _uint(o[4], "seq"),
                   _uint(o[5], "replayed"), _str(o[6], "reason"), o[7])


def _p_handoff(d: Decoder, o: list[Any]) -> Handoff:
    _arity(o, 4, "HANDOFF")
    return Handoff(_str(o[1], "url"), _str(o[2], "reason"), _uint(o[3], "deadline_ms"))


def _p_neighbours(d: Decoder, o: list[Any]) -> Neighbours:
    _arity(o, 2, "NEIGHBOURS")
    if not isinstance(o[1], list):
        raise MalformedFrame("neighbours must be an array of URLs")
    return Neighbours(tuple(_str(u, "url") for u in o[1]))


def _p_telemetry(d: Decoder, o: list[Any]) -> Telemetry:
    _arity(o, 3, "TELEMETRY")
    if not isinstance(o[2], list):
        raise MalformedFrame("samples must be an array of [metric, value, ts_ms]")
    if len(o[2]) > d.limits.max_batch_samples:
        raise MalformedFrame(f"more than {d.limits.max_batch_samples} samples in one batch")
    # Sample contents are checked by the edge's validator, per sample.
    samples = tuple(tuple(x) if isinstance(x, list) else x for x in o[2])
    return Telemetry(_uint(o[1], "batch_id"), samples)


def _p_telemetry_ack(d: Decoder, o: list[Any]) -> TelemetryAck:
    _arity(o, 4, "TELEMETRY_ACK")
    return TelemetryAck(_uint(o[1], "batch_id"), _uint(o[2], "accepted"),
                        _uint(o[3], "rejected"))


def _p_telemetry_error(d: Decoder, o: list[Any]) -> TelemetryError:
    _arity(o, 3, "TELEMETRY_ERROR")
    if not isinstance(o[2], list):
        raise MalformedFrame("errors must be an array of [index, reason, message]")
    errs = []
    for e in o[2]:
        if not isinstance(e, list) or len(e) != 3:
            raise MalformedFrame("each error must be [index, reason, message]")
        errs.append((_uint(e[0], "index"), _str(e[1], "reason"), _str(e[2], "message")))
    return TelemetryError(_uint(o[1], "batch_id"), tuple(errs))


def _p_command(d: Decoder, o: list[Any]) -> Command:
    _arity(o, 5, "COMMAND")
    return Command(_str(o[1], "command_id"), _str(o[2], "name"), _map(o[3], "args"),
                   _uint(o[4], "expires_ms"))


def _p_command_ack(d: Decoder, o: list[Any]) -> CommandAck:
    _arity(o, 4, "COMMAND_ACK", optional=1)
    cid = _str(o[1], "command_id")
    if not cid or len(cid) > 128:
        raise MalformedFrame("command_id must be 1 to 128 characters")
    status = _str(o[2], "status")
    if not status or len(status) > 64:
        raise MalformedFrame("status must be 1 to 64 characters")
    result = _map(o[3], "result") if len(o) > 3 else {}
    return CommandAck(cid, status, result)


def _p_report_state(d: Decoder, o: list[Any]) -> ReportState:
    _arity(o, 4, "REPORT_STATE")
    return ReportState(_uint(o[1], "req_id"), _uint(o[2], "version"), _map(o[3], "state"))


def _p_shadow_delta(d: Decoder, o: list[Any]) -> ShadowDelta:
    _arity(o, 5, "SHADOW_DELTA", optional=1)
    cid = _str(o[4], "command_id") if len(o) > 4 else ""
    return ShadowDelta(_uint(o[1], "version"), _uint(o[2], "desired_version"),
                       _map(o[3], "delta"), cid)


_PARSERS: dict[int, Any] = {
    1: _p_hello,
    2: _p_welcome,
    3: _p_join,
    4: _p_joined,
    5: _p_leave,
    6: _p_publish,
    7: _p_message,
    8: _p_ack,
    9: _p_pjoin,
    10: _p_pleave,
    11: _p_plist,
    12: _p_pmembers,
    13: _p_ping,
    14: _p_pong,
    15: _p_error,
    16: _p_resume,
    17: _p_resumed,
    18: _p_handoff,
    19: _p_neighbours,
    20: _p_telemetry,
    21: _p_telemetry_ack,
    22: _p_telemetry_error,
    23: _p_command,
    24: _p_command_ack,
    25: _p_report_state,
    26: _p_shadow_delta,
    **ROOM_PARSERS,
    **FUNCTION_PARSERS,
    **TOKEN_PARSERS,
    **DELIVERY_PARSERS,
}

_DEFAULT_DECODER = Decoder()


def decode(data: bytes | bytearray | memoryview, limits: Limits | None = None) -> Frame:
    """Decode one frame with ``limits`` (default limits when omitted)."""
    if limits is None:
        return _DEFAULT_DECODER.decode(data)
    return Decoder(limits).decode(data)
