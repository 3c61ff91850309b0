"""Building what each player of a game room receives: patches and whole views.

:class:`PlayerViews` is the part of :class:`~edge_node.games.room.GameRoom` that turns
the state's recorded changes into ROOM_PATCH frames, one per distinct view (players
whose ``visible`` answers differ get different bytes; players a change does not reach
get nothing), and a player's whole view into ROOM_STATE.  Map keys travel as indexes
into the room's key table; each player's mirror is tracked by the version it holds and
how much of the key table it has.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from client_sdk.protocol import RoomPatch, RoomStateFrame, encode
from client_sdk.protocol.compact import pack_compact
from client_sdk.protocol.state_sync import KeyTable, encode_patch, encode_state
from edge_node.games.events import Deliver, GameCommand
from edge_node.games.handler import Player, RoomHandler
from edge_node.games.state import ChangeLog

if TYPE_CHECKING:
    from edge_node.games.room import GameSettings, GameStats

__all__ = ["PlayerViews"]


class PlayerViews:
    """Patches and whole views of a game room (mixed into ``GameRoom``, which sets
    these attributes)."""

    name: str
    handler: RoomHandler
    cfg: GameSettings
    stats: GameStats
    players: dict[str, Player]
    version: int
    ticks: int
    tick_rate: int
    want_full: set[str]
    _sent: dict[str, int]
    _known: dict[str, int]
    _keys: KeyTable
    _paths: dict[tuple[Any, ...], tuple[int, ...]]
    _log: ChangeLog
    _full_size: int
    _views: bool

    def full_view(self, player: str | None = None) -> Any:
        """The plain state tree ``player`` sees (the whole of it for None)."""
        raise NotImplementedError

    def _patch(self, out: list[GameCommand]) -> None:
        ops = self._log.take()
        st = self.stats
        if len(self._keys) > self.cfg.max_keys:
            self._keys = KeyTable()  # a fresh table: everyone gets a full state with it
            self._paths.clear()
            self.want_full.update(self.players)
        if st.patches % self.cfg.full_sample_every == 0 or not self._full_size:
            self._full_size = len(pack_compact(self.full_view()))
        st.patches += 1
        st.full_bytes += self._full_size * len(self.players)
        if ops:
            self.version += 1
            self._send_patch(ops, out)
        if self.want_full:
            self._send_fulls(out)

    def _send_patch(self, ops: list[tuple[Any, Any]], out: list[GameCommand]) -> None:
        version, tick, room = self.version, self.ticks, self.name
        table = self._keys
        cache = self._paths  # the same paths change tick after tick: intern each once
        wire = []
        for path, v in ops:
            ipath = cache.get(path)
            if ipath is None:
                ipath = cache[path] = tuple(table.intern(k) for k in path)
            wire.append((ipath, v))
        keys = table.keys
        groups: dict[tuple[int, int, tuple[int, ...]], list[str]] = {}
        everything = tuple(range(len(ops)))
        for pid, p in self.players.items():
            if pid in self.want_full:
                continue
            idx = everything if not self._views else tuple(
                i for i, (path, _v) in enumerate(ops) if self._sees(p, path))
            if idx:
                groups.setdefault((self._sent[pid], self._known[pid], idx), []).append(pid)
        whole = len(groups) == 1 and not self.want_full
        for (base, known, idx), pids in groups.items():
            data = encode_patch(known, keys[known:], [wire[i] for i in idx])
            body = encode(RoomPatch(room, base, version, tick, data))
            self.stats.patch_bytes += len(body) * len(pids)
            if whole and len(pids) == len(self.players):
                out.append(Deliver(None, body))
            else:
                out += [Deliver(pid, body) for pid in pids]
            for pid in pids:
                self._sent[pid] = version
                self._known[pid] = len(keys)

    def _send_fulls(self, out: list[GameCommand]) -> None:
        shared: bytes | None = None
        keys = self._keys.keys
        for pid in sorted(self.want_full):
            if pid not in self.players:
                continue
            if self._views:
                data = encode_state(self.full_view(pid), keys)
            else:
                if shared is None:
                    shared = encode_state(self.full_view(), keys)
                data = shared
            out.append(Deliver(pid, encode(RoomStateFrame(
                self.name, self.version, self.ticks, self.tick_rate, data))))
            self._sent[pid] = self.version
            self._known[pid] = len(keys)
            self.stats.full_states += 1
        self.want_full.clear()

    def _sees(self, p: Player, path: tuple[Any, ...]) -> bool:
        visible = self.handler.visible
        return all(visible(p, path[:i]) for i in range(1, len(path) + 1))

    def _filter(self, node: Any, path: tuple[Any, ...], p: Player) -> Any:
        if not isinstance(node, dict):
            return node
        visible = self.handler.visible
        return {k: self._filter(v, (*path, k), p) for k, v in node.items()
                if visible(p, (*path, k))}

