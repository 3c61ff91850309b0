"""Game-room state on the wire: the patch format, and the client's mirror of it.

A game room's state is a tree of maps (string keys), lists and primitives (``None``,
``bool``, ``int``, ``float``, ``str``, ``bytes``).  The edge sends a client its view of
the whole tree once (ROOM_STATE, at a version) and then *patches* (ROOM_PATCH), each
taking the client from one version (``base``) to a later one.

**Keys are sent once.**  Map keys in patches are small integers: indexes into the
room's *key table*, which a client receives whole with each full state and grows
with each patch.  A full state's bytes are msgpack ``[keys, state]``; a patch's are
``[keys_from, new_keys, ops]``: ``new_keys`` extend the client's table, whose length
must be ``keys_from`` first.  Each operation, applied in order, is

- ``[path, value]``: set the node at ``path`` (a non-empty list of key indexes) to
  ``value`` (plain: its map keys are strings), creating missing maps on the way;
- ``[path]``: delete it.

Lists are always set whole.  Floats that float32 holds exactly travel as float32
(:mod:`.compact`).  Both byte strings travel inside a ``bin`` field, so the edge
encodes each once for every client that sees the same.

:class:`StateMirror` is the client's copy: it refuses a patch whose ``base`` is not the
version it holds, or whose ``keys_from`` is not the size of its table (a missed or
reordered patch) instead of diverging silently; the caller then asks for a resync
(ROOM_RESYNC) and gets a fresh full state.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgpack

from .compact import pack_compact, pack_ops

__all__ = [
    "Path",
    "DELETE",
    "KeyTable",
    "encode_state",
    "decode_state",
    "encode_patch",
    "decode_patch",
    "encode_value",
    "decode_value",
    "apply_ops",
    "StateMirror",
    "PatchRefused",
    "state_checksum",
]

Path = tuple[str | int, ...]
#: A change listener: ``(path, new value or None when deleted)``.
Listener = Callable[[Path, Any], None]

_packer = msgpack.Packer(use_bin_type=True)
#: Bounds for decoding untrusted state bytes (the frame size bounds them again).
_MAX_LEN = 1 << 20


class PatchRefused(Exception):
    """A patch that does not apply to the mirror (wrong base version, or a path that
    does not exist).  The mirror is unchanged; ask for a resync."""


def encode_value(value: Any) -> bytes:
    """The msgpack bytes of a plain value (event payloads; floats compacted)."""
    return pack_compact(value)


def decode_value(data: bytes) -> Any:
    """Decode state bytes from the wire (maps with string keys only; no ext types)."""
    return msgpack.unpackb(data, raw=False, strict_map_key=True, use_list=True,
                           max_ext_len=0, max_str_len=_MAX_LEN, max_bin_len=_MAX_LEN,
                           max_array_len=_MAX_LEN, max_map_len=_MAX_LEN)


class _Delete:
    __slots__ = ()

    def __repr__(self) -> str:
        return "DELETE"

    def __reduce__(self) -> str:
        return "DELETE"  # pickled by name: a snapshot's pending deletes stay DELETE


#: The value of a delete operation.
DELETE: Any = _Delete()


class KeyTable:
    """The sender's key table: each map key used in a patch gets the next index."""

    __slots__ = ("index", "keys")

    def __init__(self) -> None:
        self.keys: list[str] = []
        self.index: dict[str, int] = {}

    def intern(self, key: str) -> int:
        i = self.index.get(key)
        if i is None:
            i = self.index[key] = len(self.keys)
            self.keys.append(key)
        return i

    def __len__(self) -> int:
        return len(self.keys)


def encode_state(state: dict[str, Any], keys: list[str]) -> bytes:
    """A full state's bytes: ``[keys, state]``."""
    return pack_compact([keys, state])


def decode_state(data: bytes) -> tuple[list[str], dict[str, Any]]:
    """``(keys, state)`` of a full state; :class:`PatchRefused` when malformed."""
    try:
        raw = decode_value(data)
    except Exception as exc:
        raise PatchRefused("state is not valid msgpack") from exc
    if not (isinstance(raw, list) and len(raw) == 2 and isinstance(raw[0], list)
            and all(type(k) is str for k in raw[0]) and isinstance(raw[1], dict)):
        raise PatchRefused("a room state must be [keys, map]")
    return raw[0], raw[1]


def encode_patch(keys_from: int, new_keys: list[str],
                 ops: list[tuple[tuple[int, ...], Any]]) -> bytes:
    """A patch's bytes: ``[keys_from, new_keys, ops]`` (paths as key indexes; an
    operation whose value is :data:`DELETE` is a delete)."""
    head: bytes = _packer.pack(keys_from) + _packer.pack(new_keys)
    return b"\x93" + head + pack_ops(ops, DELETE)


def decode_patch(data: bytes) -> tuple[int, list[str], list[tuple[tuple[int, ...], Any]]]:
    """``(keys_from, new_keys, ops)``, deletes with :data:`DELETE` as the value.

    Raises :class:`PatchRefused` for bytes that are not a patch."""
    try:
        raw = decode_value(data)
    except Exception as exc:
        raise PatchRefused("patch is not valid msgpack") from exc
    if not (isinstance(raw, list) and len(raw) == 3 and type(raw[0]) is int
            and isinstance(raw[1], list) and all(type(k) is str for k in raw[1])
            and isinstance(raw[2], list)):
        raise PatchRefused("a patch must be [keys_from, new_keys, ops]")
    ops: list[tuple[tuple[int, ...], Any]] = []
    for op in raw[2]:
        if not isinstance(op, list) or len(op) not in (1, 2) or not isinstance(op[0], list) \
                or not op[0] or not all(type(k) is int and k >= 0 for k in op[0]):
            raise PatchRefused(f"malformed patch operation {op!r:.80}")
        ops.append((tuple(op[0]), op[1] if len(op) == 2 else DELETE))
    return raw[0], raw[1], ops


def _container(root: Any, path: Path) -> Any:
    node = root
    for key in path:
        if isinstance(node, dict) and type(key) is str:
            nxt = node.get(key)
            if nxt is None:
                nxt = node[key] = {}
            node = nxt
        elif isinstance(node, list) and type(key) is int and 0 <= key < len(node):
            node = node[key]
        else:
            raise PatchRefused(f"path {list(path)!r} does not exist")
    return node


def apply_ops(root: dict[str, Any], ops: list[tuple[Path, Any]]) -> None:
    """Apply ``ops`` to ``root`` in place.  Raises :class:`PatchRefused` (and may leave
    ``root`` half-patched: apply to a copy when that matters) on a bad path."""
    for path, value in ops:
        parent = _container(root, path[:-1])
        key = path[-1]
        if isinstance(parent, dict) and type(key) is str:
            if value is DELETE:
                parent.pop(key, None)
            else:
                parent[key] = value
        elif isinstance(parent, list) and type(key) is int and 0 <= key <= len(parent):
            if value is DELETE:
                if key < len(parent):
                    del parent[key]
            elif key == len(parent):
                parent.append(value)
            else:
                parent[key] = value
        else:
            raise PatchRefused(f"cannot apply at {list(path)!r}")


def state_checksum(state: Any) -> str:
    """A short digest of a state tree (map keys sorted), equal on every side that holds
    the same state: the demo compares each client's with the owner's."""
    import hashlib

    def canon(v: Any) -> Any:
        if isinstance(v, dict):
            return [[k, canon(v[k])] for k in sorted(v)]
        if isinstance(v, list):
            return [canon(x) for x in v]
        return v

    return hashlib.blake2b(_packer.pack(canon(state)), digest_size=8).hexdigest()


class StateMirror:
    """A client's copy of one game room's state (its view of it).

    Feed it :meth:`load` (ROOM_STATE) and :meth:`patch` (ROOM_PATCH).  ``version`` is 0
    until the first full state.  Listeners registered with :meth:`on_change` are called
    after each applied change whose path starts with their prefix (an empty prefix hears
    everything; a full state is reported as a change at the empty path).
    """

    def __init__(self) -> None:
        self.state: dict[str, Any] = {}
        #: The key table (see the module docstring).
        self.keys: list[str] = []
        self.version = 0
        self.tick = 0
        self.patches = 0
        self.resyncs = 0
        self._listeners: list[tuple[Path, Listener]] = []

    def on_change(self, prefix: Path | list[str | int], fn: Listener) -> Callable[[], None]:
        """Call ``fn(path, value)`` for changes at or under ``prefix``; returns a function
        that removes the listener."""
        entry = (tuple(prefix), fn)
        self._listeners.append(entry)

        def remove() -> None:
            if entry in self._listeners:
                self._listeners.remove(entry)
        return remove

    def load(self, version: int, tick: int, data: bytes) -> None:
        """Replace the state (and the key table) with a full state at ``version``."""
        keys, state = decode_state(data)
        self.state, self.keys, self.version, self.tick = state, keys, version, tick
        self._notify((), state)

    def patch(self, base: int, version: int, tick: int, data: bytes) -> None:
        """Apply a patch from ``base`` to ``version``.  Raises :class:`PatchRefused`
        (state unchanged) when ``base`` is not the version held: ask for a resync."""
        if base != self.version or version <= base:
            raise PatchRefused(f"patch {base}->{version} does not follow version {self.version}")
        keys_from, new_keys, wire_ops = decode_patch(data)
        if keys_from != len(self.keys):
            raise PatchRefused(f"patch extends a key table of {keys_from}, not "
                               f"{len(self.keys)}")
        keys = self.keys + new_keys
        try:
            ops: list[tuple[Path, Any]] = [(tuple(keys[i] for i in path), value)
                                           for path, value in wire_ops]
        except IndexError:
            raise PatchRefused("patch names a key it does not define") from None
        self.keys = keys
        try:
            apply_ops(self.state, ops)
        except PatchRefused:
            self.version = 0  # half-applied: only a full state can repair it
            raise
        self.version, self.tick = version, tick
        self.patches += 1
        if self._listeners:
            for path, value in ops:
                self._notify(path, None if value is DELETE else value)

    def _notify(self, path: Path, value: Any) -> None:
        for prefix, fn in list(self._listeners):
            n = len(prefix)
            if path[:n] == prefix or prefix[:len(path)] == path:
                fn(path, value)
