"""Which room names run which handler: ``PATTERN=module:Class`` specs.

Specs come from ``--room-handler`` (repeatable), the ``EDGE_ROOM_HANDLERS`` environment
variable (comma-separated) or the ``edge_relay.rooms`` entry-point group (entry name =
pattern, value = ``module:Class``).  A pattern is a room name with ``*`` wildcards
(``arena-*``); the first matching spec wins.  A bad spec is a :class:`HandlerSpecError`
with one clear line, raised at start-up, never later.
"""

from __future__ import annotations

import fnmatch
import re
from importlib import metadata

from edge_node.games.handler import RoomHandler
from edge_node.runtime.plugins import resolve

__all__ = ["HandlerRegistry", "HandlerSpecError", "parse_specs", "ENTRY_POINT_GROUP"]

ENTRY_POINT_GROUP = "edge_relay.rooms"


class HandlerSpecError(ValueError):
    """A room handler spec that cannot be used (the message says why)."""


def _load(target: str, spec: str) -> type[RoomHandler]:
    obj = resolve(target, f"room handler {spec!r}", "PATTERN=module:Class", HandlerSpecError)
    if not (isinstance(obj, type) and issubclass(obj, RoomHandler)):
        raise HandlerSpecError(f"room handler {spec!r}: {target.partition(':')[2]!r} is not a "
                               "RoomHandler subclass")
    rate = obj.tick_rate
    if not (isinstance(rate, int) and 1 <= rate <= 60):
        raise HandlerSpecError(f"room handler {spec!r}: tick_rate must be 1-60, not {rate!r}")
    return obj


def parse_specs(specs: list[str]) -> list[tuple[str, type[RoomHandler]]]:
    """``["arena-*=mygame.rooms:Arena", ...]`` -> ``[(pattern, class), ...]``."""
    out = []
    for spec in specs:
        spec = spec.strip()
        if not spec:
            continue
        pattern, sep, target = spec.partition("=")
        if not sep or not pattern.strip():
            raise HandlerSpecError(f"room handler {spec!r}: expected PATTERN=module:Class")
        out.append((pattern.strip(), _load(target.strip(), spec)))
    return out


class HandlerRegistry:
    """Room-name patterns and their handler classes."""

    def __init__(self, entries: list[tuple[str, type[RoomHandler]]] | None = None) -> None:
        self.entries = list(entries or [])
        self._rx = [(re.compile(fnmatch.translate(p)), cls) for p, cls in self.entries]
        self._cache: dict[str, type[RoomHandler] | None] = {}

    @classmethod
    def from_sources(cls, specs: list[str], env: str = "",
                     entry_points: bool = True) -> HandlerRegistry:
        """Flags first, then the environment variable, then installed entry points."""
        all_specs = list(specs) + [s for s in env.split(",") if s.strip()]
        entries = parse_specs(all_specs)
        if entry_points:
            for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
                entries += parse_specs([f"{ep.name}={ep.value}"])
        return cls(entries)

    def match(self, room: str) -> type[RoomHandler] | None:
        """The handler class for ``room``, or None (a plain room)."""
        if not self._rx:
            return None
        hit = self._cache.get(room, False)
        if hit is False:
            hit = next((c for rx, c in self._rx if rx.match(room)), None)
            if len(self._cache) > 100_000:
                self._cache.clear()
            self._cache[room] = hit
        return hit  # type: ignore[return-value]

    def __bool__(self) -> bool:
        return bool(self.entries)

    def describe(self) -> list[str]:
        """``pattern=module:Class`` of each entry, for logs and /healthz."""
        return [f"{p}={c.__module__}:{c.__qualname__}" for p, c in self.entries]
