"""A game room captured between two ticks, and rebuilt from that capture elsewhere.

:func:`capture` pickles everything a :class:`~edge_node.games.room.GameRoom` needs to
go on: the handler (its state, metadata and own attributes), the players (with their
``data``) and the edge each is on, the random source's state, the tick count, the
timers (a handler method is kept by name and bound again to the restored handler), the
state version, the key table and what each player's mirror holds, the changes not sent
yet, and the inputs waiting past a tick's share.  :func:`restore` builds the room from
it in phase REPLAYING (see :mod:`edge_node.games.room`, "Continuity").

What a handler holds must pickle: a lambda timer or a socket makes :func:`capture`
raise, and the room then runs on without new snapshots (the edge logs why once).
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from typing import Any

from edge_node.games.handler import RoomHandler
from edge_node.games.room import GamePhase, GameRoom, GameSettings, empty_state
from edge_node.games.snapshot import RoomSnapshot, SnapshotInvalid, safe_loads
from edge_node.games.state import Schema

__all__ = ["capture", "take_snapshot", "restore"]


@dataclass(frozen=True, slots=True)
class _Method:
    """A timer callback that is a method of the handler, as captured (pickled by name,
    bound again to the restored handler)."""

    name: str


def capture(g: GameRoom) -> bytes:
    """``g`` as it stands between two ticks, for :func:`restore`.  Raises what pickling
    raises (``pickle.PicklingError``, ``TypeError``, ``AttributeError``) when the
    handler holds something that cannot be pickled (a lambda, a socket)."""
    h = g.handler
    heap = [(t, i, _Method(fn.__name__) if getattr(fn, "__self__", None) is h else fn, args)
            for t, i, fn, args in g.timers._heap]
    return pickle.dumps({
        "handler": h, "players": g.players, "edges": g.edges,
        "rng": g.rng.getstate(), "ticks": g.ticks, "version": g.version,
        "timers": (heap, g.timers._next_id, sorted(g.timers._cancelled)),
        "keys": g._keys.keys, "sent": g._sent, "known": g._known,
        "want_full": sorted(g.want_full), "ops": list(g._log.ops.items()),
        "marked": g._marked, "metadata": h.metadata, "carry": g._carry,
    }, protocol=5)


def take_snapshot(g: GameRoom, final: bool = False, pos: tuple[int, int] = (0, 0),
                  epoch: int = 0) -> RoomSnapshot:
    """:func:`capture` with its header (``final``: no tick will run after it here;
    ``pos``: the stream position it covers; ``epoch``: the owner's lease epoch)."""
    return RoomSnapshot(g.name, g.ticks, g.version, final, capture(g), pos, epoch)


def restore(snap: RoomSnapshot, handler_cls: type[RoomHandler],
            settings: GameSettings | None = None) -> GameRoom:
    """A room rebuilt from ``snap``, in phase REPLAYING: feed it the stream entries
    after the snapshot's mark (inputs, :class:`~edge_node.games.events.TickMark`), then
    :class:`~edge_node.games.events.GoLive`.  Raises
    :class:`~edge_node.games.snapshot.SnapshotInvalid` when the snapshot does not load
    or holds another handler class."""
    data = safe_loads(snap.body, (handler_package(handler_cls),))
    try:
        h = data["handler"]
        if type(h) is not handler_cls:
            raise SnapshotInvalid(
                f"snapshot holds a {type(h).__qualname__}, the room's handler is "
                f"{handler_cls.__qualname__}")
        metadata = data["metadata"]
        g = GameRoom(snap.room, h, settings)
        h.metadata = metadata
        _fill(g, h, data)
    except SnapshotInvalid:
        raise
    except Exception as exc:
        raise SnapshotInvalid(f"snapshot does not restore: {type(exc).__name__}: "
                              f"{exc}") from exc
    g.final = snap.final
    g.snap_epoch = snap.epoch
    g._snapped = g.ticks
    g.phase = GamePhase.REPLAYING
    return g


def handler_package(cls: type[RoomHandler]) -> str:
    """What a snapshot of ``cls``'s rooms may load code from: the top-level package of
    its module (``mygame`` for ``mygame.rooms:Arena``: its state classes may live in a
    sibling module), or only its own module when that is inside this project."""
    mod = cls.__module__
    top = mod.partition(".")[0]
    return mod if top in ("edge_node", "client_sdk") else top


def _fill(g: GameRoom, h: RoomHandler, data: dict[str, Any]) -> None:
    g.players = data["players"]
    g.edges = data["edges"]
    g.rng.setstate(data["rng"])
    g.ticks, g.version, g._marked = data["ticks"], data["version"], data["marked"]
    heap, next_id, cancelled = data["timers"]
    g.timers._heap = [(t, i, getattr(h, fn.name) if isinstance(fn, _Method) else fn, args)
                      for t, i, fn, args in heap]
    g.timers._next_id, g.timers._cancelled = next_id, set(cancelled)
    for k in data["keys"]:
        g._keys.intern(k)
    g._sent, g._known = data["sent"], data["known"]
    g.want_full = set(data["want_full"])
    g._carry = list(data["carry"])
    if not isinstance(getattr(h, "state", None), Schema):
        h.state = empty_state()
    g._log = h.state.track()
    g._log.ops = dict(data["ops"])
