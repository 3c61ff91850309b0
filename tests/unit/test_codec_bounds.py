"""The decoder's msgpack bounds leave counted limits to their owners.

A map that fits in a frame decodes, so that the edge answers a HELLO ``resume``
map with too many rooms with 4407 ``TOO_MANY_ROOMS`` (docs/protocol.md), not with
4400 "frame is not valid msgpack" from a generic map bound.
"""

from __future__ import annotations

import msgpack
import pytest

from client_sdk.protocol import Decoder, FrameTooLarge, Hello, Limits, MalformedFrame

_pack = msgpack.Packer(use_bin_type=True).pack


def _hello(n_rooms: int) -> bytes:
    rooms = {f"room-{i}": [0, 1, i] for i in range(n_rooms)}
    return _pack([1, 1, "tok", "c", {"sid": "s", "rt": "r", "att": 0, "rooms": rooms}])


@pytest.mark.parametrize("n", [64, 65, 129, 2000])
def test_a_resume_map_over_the_room_limit_still_decodes(n: int) -> None:
    d = Decoder(Limits())  # max_rooms_per_connection = 64
    frame = d.decode(_hello(n))
    assert isinstance(frame, Hello) and frame.resume is not None
    assert len(frame.resume["rooms"]) == n


def test_a_smaller_room_limit_does_not_shrink_the_map_bound() -> None:
    d = Decoder(Limits(max_rooms_per_connection=2))
    frame = d.decode(_hello(3))
    assert isinstance(frame, Hello) and frame.resume is not None
    assert len(frame.resume["rooms"]) == 3


def test_the_frame_size_still_bounds_every_map() -> None:
    d = Decoder(Limits(max_frame_bytes=4096))
    with pytest.raises(FrameTooLarge):
        d.decode(_hello(500))
    # A map header that claims more entries than the frame can hold is refused.
    with pytest.raises(MalformedFrame):
        d.decode(b"\x95\x01\x01\xa3tok\xa1c\xdf\xff\xff\xff\xff")
