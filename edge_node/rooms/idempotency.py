"""A room's duplicate detection: the publishers' recent idempotency keys (sans-I/O).

One :class:`PublisherKeys` belongs to one :class:`~edge_node.rooms.machine.RoomMachine`
(its ``idems``), which alone consults and feeds it: the keys of the messages it
assigned, of the stream records it delivered, and of the records read back to rebuild
them when it takes a lease.
"""

from __future__ import annotations

from collections.abc import Callable

from client_sdk.dedupe import RecentKeys
from edge_node.rooms.events import Pos

__all__ = ["PublisherKeys"]


class PublisherKeys:
    """sender -> the last ``window`` idempotency keys it published here, each with the
    position it was given.  Key 0 means "no key": never a duplicate (the machine does
    not remember it).  ``count_duplicate`` is called once per key recognised.
    """

    __slots__ = ("_by_sender", "count_duplicate", "window")

    def __init__(self, window: int, count_duplicate: Callable[[], None] | None = None) -> None:
        self.window = window
        self.count_duplicate = count_duplicate
        self._by_sender: dict[str, RecentKeys[Pos]] = {}

    def seen(self, sender: str, idem: int) -> Pos | None:
        """The position already given to ``sender``'s publish ``idem`` (counted as a
        duplicate), or None: a new publish (or one without a key)."""
        if not idem:
            return None
        seen = self._by_sender.get(sender)
        pos = seen.get(idem) if seen is not None else None
        if pos is not None and self.count_duplicate is not None:
            self.count_duplicate()
        return pos

    def remember(self, sender: str, idem: int, pos: Pos) -> None:
        """``sender``'s publish ``idem`` is at ``pos`` (its oldest key beyond the window
        is forgotten)."""
        seen = self._by_sender.get(sender)
        if seen is None:
            seen = self._by_sender[sender] = RecentKeys(self.window)
        seen.add(idem, pos)

    def clear(self) -> None:
        """Forget every key (positions that may never have been stored)."""
        self._by_sender.clear()
