"""Rooms as explicit, sans-I/O state machines (see :mod:`.machine`).

:class:`RoomMachine` holds one room's continuity state (its duplicate detection is a
:mod:`.idempotency` ``PublisherKeys``); :mod:`.events` defines what goes in and what
comes out; :mod:`.replay` plans a resuming client's replay.  Nothing
here does I/O or reads a clock: :class:`edge_node.fanout.hub.Hub` drives the machines.
"""

from __future__ import annotations

from edge_node.rooms.events import Pos, Record
from edge_node.rooms.machine import (
           TRANSITIONS,
           RoomMachine,
           RoomSettings,
           RoomState,
           transition_rows,
)
from edge_node.rooms.replay import History, needs_history, plan_resume

__all__ = ["TRANSITIONS", "History", "Pos", "Record", "RoomMachine", "RoomSettings",
           "RoomState", "needs_history", "plan_resume", "transition_rows"]
