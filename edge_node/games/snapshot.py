"""A game room's snapshot as stored: sealed, compressed, bounded.

:func:`edge_node.games.continuity.capture` turns a room into bytes (a pickle of the
handler with its state and attributes, the players, the random source's state, the
timers, the state versions and key table); this module wraps those bytes with what a
new owner needs to check before it trusts them:

- a header (room name, tick, state version, ``final``: taken at a handover, with no
  tick run after it; the stream position it covers and the lease epoch it was taken
  in), packed with msgpack;
- zlib compression (level 1: a few hundred microseconds for the demo's arena);
- an HMAC-SHA256 over the rest, keyed from the edge secrets (the ones tokens are
  signed with, so every edge of a deployment can check every other's snapshots):
  anyone who can write to Redis but does not hold a secret cannot make an edge load
  a forged pickle;
- a size bound (:data:`MAX_SNAPSHOT_BYTES` by default, checked after compression): a
  larger snapshot is refused (:class:`SnapshotTooLarge`) and the room goes on without
  a new one.

Unpickling is limited (:class:`SnapshotUnpickler`), a second line behind the HMAC:
classes and functions of the handler's own top-level package, classes of this
project's game-room and protocol packages, and a short list of standard-library types;
never a dotted name (an attribute path), never a module.
"""

from __future__ import annotations

import hashlib
import hmac
import inspect
import io
import pickle
import zlib
from dataclasses import dataclass
from typing import Any

import msgpack

__all__ = ["RoomSnapshot", "SnapshotInvalid", "SnapshotTooLarge", "MAX_SNAPSHOT_BYTES",
           "snapshot_key", "seal", "unseal", "SnapshotUnpickler", "safe_loads"]

MAGIC = b"ERG1"
_MAC = 32
#: Default bound of a stored snapshot (bytes, after compression).
MAX_SNAPSHOT_BYTES = 1 << 20


class SnapshotInvalid(ValueError):
    """The stored bytes are not a snapshot this edge can trust or load."""


class SnapshotTooLarge(ValueError):
    """A snapshot over the size bound: not stored."""


@dataclass(frozen=True, slots=True)
class RoomSnapshot:
    """One game room at the end of a tick (``body``:
    :func:`~edge_node.games.continuity.capture`)."""

    room: str
    tick: int
    version: int
    final: bool
    body: bytes
    #: The stream position it covers (its last ``$tick`` mark) and the lease epoch of
    #: the owner that took it.
    pos: tuple[int, int] = (0, 0)
    epoch: int = 0


def snapshot_key(secret: bytes) -> bytes:
    """The MAC key derived from an edge secret (never the secret itself)."""
    return hmac.new(secret, b"edge-relay game-room snapshot v1", hashlib.sha256).digest()


def seal(snap: RoomSnapshot, key: bytes, limit: int = MAX_SNAPSHOT_BYTES) -> bytes:
    """The stored form of ``snap``.  Raises :class:`SnapshotTooLarge` over ``limit``."""
    head = msgpack.packb([snap.room, snap.tick, snap.version, snap.final, snap.body,
                          list(snap.pos), snap.epoch], use_bin_type=True)
    body = zlib.compress(head, 1)
    size = len(MAGIC) + _MAC + len(body)
    if size > limit:
        raise SnapshotTooLarge(f"snapshot of {snap.room!r} is {size} bytes compressed, over "
                               f"the limit of {limit}")
    return MAGIC + hmac.new(key, body, hashlib.sha256).digest() + body


def unseal(data: bytes, keys: tuple[bytes, ...]) -> RoomSnapshot:
    """Check and open a stored snapshot (any of ``keys`` may have sealed it).
    Raises :class:`SnapshotInvalid`."""
    if not data.startswith(MAGIC) or len(data) < len(MAGIC) + _MAC:
        raise SnapshotInvalid("not a game-room snapshot")
    mac, body = data[len(MAGIC):len(MAGIC) + _MAC], data[len(MAGIC) + _MAC:]
    if not any(hmac.compare_digest(mac, hmac.new(k, body, hashlib.sha256).digest())
               for k in keys):
        raise SnapshotInvalid("snapshot signature does not match any edge secret")
    try:
        room, tick, version, final, inner, pos, epoch = msgpack.unpackb(
            zlib.decompress(body), raw=False)
        return RoomSnapshot(str(room), int(tick), int(version), bool(final), bytes(inner),
                            (int(pos[0]), int(pos[1])), int(epoch))
    except (ValueError, TypeError, IndexError, zlib.error) as exc:
        raise SnapshotInvalid(f"snapshot does not decode: {exc}") from exc


#: Standard-library globals a snapshot may name besides the allowed packages.
_STDLIB = {
    "builtins": {"set", "frozenset", "bytearray", "complex", "range", "slice", "list",
                 "dict", "tuple", "object", "bool", "int", "float", "str", "bytes"},
    "copyreg": {"_reconstructor"},
    "collections": {"deque", "OrderedDict", "defaultdict", "Counter"},
    "random": {"Random"},
    "functools": {"partial"},
    "datetime": {"date", "datetime", "time", "timedelta", "timezone"},
    "decimal": {"Decimal"},
    "fractions": {"Fraction"},
    "enum": {"Enum", "IntEnum"},
}
#: This project's modules whose *classes* a snapshot may name (state records, players,
#: queued inputs, the DELETE marker).
_OURS = ("edge_node.games", "client_sdk.protocol")


def _within(module: str, packages: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


class SnapshotUnpickler(pickle.Unpickler):
    """Loads only: classes and functions of the modules or packages in ``allowed`` (the
    handler's), classes of :data:`_OURS`, the names in :data:`_STDLIB`.  Never a
    dotted name (``a.b``: an attribute path that could reach anything) and never a
    module; anything else raises :class:`SnapshotInvalid`."""

    def __init__(self, data: bytes, allowed: tuple[str, ...]) -> None:
        super().__init__(io.BytesIO(data))
        self.allowed = tuple(dict.fromkeys(allowed))

    def find_class(self, module: str, name: str) -> Any:
        handler = _within(module, self.allowed)
        if "." not in name and (handler or _within(module, _OURS)
                                or name in _STDLIB.get(module, ())):
            obj = super().find_class(module, name)
            if isinstance(obj, type) or (handler and inspect.isfunction(obj)) \
                    or name in _STDLIB.get(module, ()):
                return obj
        raise SnapshotInvalid(f"snapshot refers to {module}.{name}, which a snapshot may "
                              f"not load (allowed: classes and functions of "
                              f"{', '.join(self.allowed)}, classes of {', '.join(_OURS)}, "
                              "standard containers)")


def safe_loads(data: bytes, allowed: tuple[str, ...]) -> Any:
    """Unpickle ``data`` with :class:`SnapshotUnpickler`; any failure is
    :class:`SnapshotInvalid`."""
    try:
        return SnapshotUnpickler(data, allowed).load()
    except SnapshotInvalid:
        raise
    except Exception as exc:
        raise SnapshotInvalid(f"snapshot does not load: {type(exc).__name__}: {exc}") from exc
