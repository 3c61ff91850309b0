"""Types shared by the room-sync modules: the lease result, the hub's upcalls, the error."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from edge_node.store.history import Entry

__all__ = ["Lease", "SyncListener", "SyncUnavailable"]


class SyncUnavailable(RuntimeError):
    """Redis could not be reached for an operation that needs it."""


@dataclass(frozen=True, slots=True)
class Lease:
    """Result of activating a room: who owns it and where its history ends."""

    owner_edge: str
    epoch: int
    mine: bool
    token: str
    last_epoch: int
    last_seq: int


class SyncListener(Protocol):
    """Upcalls from :class:`RoomSync` into the hub."""

    def on_remote_message(self, room: str, e: Entry) -> None: ...

    def on_forwarded_publish(self, room: str, sender: str, payload: bytes, origin_edge: str,
                             req_id: int, idem: int) -> None: ...

    def on_remote_ack(self, sender: str, req_id: int, epoch: int, seq: int) -> None: ...

    def on_durable(self, room: str, epoch: int, seq: int) -> None: ...

    def on_live(self, room: str, kind: int, body: list[Any]) -> None: ...

    def on_lease_lost(self, room: str) -> None: ...

    def on_lease_acquired(self, room: str, lease: Lease) -> None: ...

    def on_owner_changed(self, room: str, owner_edge: str) -> None: ...
