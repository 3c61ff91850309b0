"""Game-room state on the wire: the patch format, and the client's mirror of it.

A game room's state is a tree of maps (string keys), lists and primitives (``None``,
``bool``, ``int``, ``float``, ``str``, ``bytes``).  The edge sends a client its view of
the whole tree once (ROOM_STATE, at a version) and then *patches* (ROOM_PATCH), each
taking the client from one version (``base``) to a later one.  A patch is a list of
operations, applied in order:

- ``[path, value]``: set the node at ``path`` (a list of map keys and list indexes,
  never empty) to ``value``, creating missing maps on the way;
- ``[path]``: delete the node at ``path``.

Both the full state and the operations travel msgpack-encoded inside a ``bin`` field,
so the edge encodes each once for every client that sees the same thing.

:class:`StateMirror` is the client's copy: it refuses a patch whose ``base`` is not the
version it holds (a missed or reordered patch) instead of diverging silently; the
caller then asks for a resync (ROOM_RESYNC) and gets a fresh full state.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgpack

__all__ = [
    "Path",
    "encode_ops",
    "decode_ops",
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
    """The msgpack bytes of a state value (a full state or a subtree)."""
    data: bytes = _packer.pack(value)
    return data


def decode_value(data: bytes) -> Any:
    """Decode state bytes from the wire (maps with string keys only; no ext types)."""
    return msgpack.unpackb(data, raw=False, strict_map_key=True, use_list=True,
                           max_ext_len=0, max_str_len=_MAX_LEN, max_bin_len=_MAX_LEN,
                           max_array_len=_MAX_LEN, max_map_len=_MAX_LEN)


def encode_ops(ops: list[tuple[Path, Any]] | list[list[Any]]) -> bytes:
    """Encode patch operations; an operation whose value is :data:`DELETE` is a delete."""
    wire: list[list[Any]] = []
    for op in ops:
        path, value = op[0], op[1]
        wire.append([list(path)] if value is DELETE else [list(path), value])
    data: bytes = _packer.pack(wire)
    return data


def decode_ops(data: bytes) -> list[tuple[Path, Any]]:
    """Decode patch operations (deletes come back with :data:`DELETE` as the value).

    Raises :class:`PatchRefused` for bytes that are not a list of operations."""
    try:
        raw = decode_value(data)
    except Exception as exc:
        raise PatchRefused("patch is not valid msgpack") from exc
    if not isinstance(raw, list):
        raise PatchRefused("patch must be a list of operations")
    out: list[tuple[Path, Any]] = []
    for op in raw:
        if not isinstance(op, list) or len(op) not in (1, 2) or not isinstance(op[0], list) \
                or not op[0] or not all(type(k) in (str, int) for k in op[0]):
            raise PatchRefused(f"malformed patch operation {op!r:.80}")
        out.append((tuple(op[0]), op[1] if len(op) == 2 else DELETE))
    return out


class _Delete:
    __slots__ = ()

    def __repr__(self) -> str:
        return "DELETE"


#: The value of a delete operation.
DELETE: Any = _Delete()


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
        """Replace the state with a full state at ``version``."""
        state = decode_value(data)
        if not isinstance(state, dict):
            raise PatchRefused("a room state must be a map")
        self.state, self.version, self.tick = state, version, tick
        self._notify((), state)

    def patch(self, base: int, version: int, tick: int, data: bytes) -> None:
        """Apply a patch from ``base`` to ``version``.  Raises :class:`PatchRefused`
        (state unchanged) when ``base`` is not the version held: ask for a resync."""
        if base != self.version or version <= base:
            raise PatchRefused(f"patch {base}->{version} does not follow version {self.version}")
        ops = decode_ops(data)
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
