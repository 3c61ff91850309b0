"""Named protocol limits with safe defaults.

Every limit is checked before the thing it bounds is allocated: the frame
size before msgpack decodes, string lengths inside the decoder, the room count
before a join is applied.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Limits", "PROTOCOL_VERSION", "DEFAULT_LIMITS"]

#: Version spoken by this code; sent in HELLO, checked by the edge.
PROTOCOL_VERSION = 1


@dataclass(frozen=True, slots=True)
class Limits:
    """Size and count limits shared by the edge and the SDK."""

    #: Largest inbound frame in bytes (Centrifugo: 64 KiB).
    max_frame_bytes: int = 64 * 1024
    #: Rooms one connection may be joined to at once.
    max_rooms_per_connection: int = 64
    #: Longest room name in bytes (UTF-8).
    max_room_name: int = 128
    #: Longest token in bytes.
    max_token_bytes: int = 4096
    #: Longest error / info string.
    max_text: int = 1024
    #: Most members returned in one presence list.
    max_presence_list: int = 1000
    #: Most samples in one TELEMETRY batch.
    max_batch_samples: int = 1000
    #: Longest metric name in bytes.
    max_metric_name: int = 64


DEFAULT_LIMITS = Limits()
