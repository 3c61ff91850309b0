"""One game room's logic run as an explicit, sans-I/O state machine.

A :class:`GameRoom` wraps the application's :class:`~edge_node.games.handler.RoomHandler`
on the room's owner edge.  It does no I/O and reads no clock: the driver feeds events
with :meth:`GameRoom.handle` (``now`` passed in), executes the commands returned
(:mod:`edge_node.games.events`), and feeds :class:`~.events.Timer` at
:meth:`GameRoom.next_deadline`.

Inputs (join, leave, message) are queued as they come and applied at the next tick, in
order; then timers due, then ``on_tick``.  Ticks are scheduled on a fixed grid
(``start + n / tick_rate``): a late tick does not push the next one later; a tick more
than one interval late skips the missed slots (counted in ``stats.skipped``) rather
than running a burst.  The room's clock is ``ticks / tick_rate``, the same everywhere.

After a tick, when a patch is due (``patch_rate``), the changes recorded in the state's
:class:`~edge_node.games.state.ChangeLog` go out as one ROOM_PATCH per distinct view;
players that joined or asked for a resync get their whole view (ROOM_STATE) instead.
The handler's events follow the patch.

A handler that raises (anything but :class:`~edge_node.games.handler.JoinRefused` in
``on_join_attempt`` or :class:`~edge_node.games.handler.InputRejected` in
``on_message``), or whose tick takes longer than ``hook_budget``, moves the room to
FAILED: every player is told (ERROR 4007), later joins are refused with 4007, inputs
are dropped.  Other rooms are not affected.

**Continuity.**  A tick that applied inputs, and at least every ``mark_interval`` of
room time, returns :class:`~.events.Mark`: the driver appends a ``$tick`` entry to the
room's stream at once, so every input applied lies before the mark of its tick and
every input not yet applied after the last mark.  Every ``snapshot_interval`` the room
returns :class:`~.events.SnapshotDue`; :func:`~edge_node.games.continuity.capture`
is then the room at the end of that tick, covering the stream up to the last mark.  A
new owner builds the room with :func:`~edge_node.games.continuity.restore` (phase
REPLAYING), feeds the stream entries after that mark (inputs, and
:class:`~.events.TickMark` for each ``$tick``: the ticks up to it run quietly, their
output dropped), then :class:`~.events.GoLive`.  A room restored
from a ``final`` snapshot (a drain, no tick after it) keeps its state versions and key
table, so players go on from their last patch; any other restore (a crash) starts a
fresh version space above anything the old owner sent and sends every player its
whole view.
"""

from __future__ import annotations

import enum
import random
from collections import deque
from dataclasses import dataclass, field, fields
from typing import Any

from client_sdk.protocol import ErrorCode, RoomEvent, encode
from client_sdk.protocol.state_sync import KeyTable, encode_value
from edge_node.games.events import (
    Deliver,
    Disposed,
    GameCommand,
    GameEvent,
    GoLive,
    InputError,
    JoinInput,
    JoinVerdict,
    LeaveInput,
    Mark,
    MessageInput,
    Resync,
    RoomFailed,
    SnapshotDue,
    Start,
    Stop,
    TickMark,
    TickTime,
    Timer,
)
from edge_node.games.handler import InputRejected, JoinRefused, Player, RoomHandler
from edge_node.games.snapshot import MAX_SNAPSHOT_BYTES
from edge_node.games.state import ChangeLog, Schema, to_plain
from edge_node.games.timers import TickTimers
from edge_node.games.views import PlayerViews

__all__ = ["GamePhase", "GameSettings", "GameStats", "GameRoom", "GAME_TRANSITIONS",
           "TIMER_SLACK"]


class GamePhase(enum.Enum):
    """Where a game room stands."""

    #: Created; inputs queue until :class:`~.events.Start`.
    IDLE = "idle"
    #: Restored from a snapshot: stream entries after it are replayed (no output) until
    #: :class:`~.events.GoLive`.
    REPLAYING = "replaying"
    #: The handler runs: ticks, patches, inputs applied.
    RUNNING = "running"
    #: The handler raised or blocked: no more ticks, inputs dropped, joins refused.
    FAILED = "failed"
    #: Over.
    DISPOSED = "disposed"


Ph = GamePhase

#: A Timer this early (seconds) still runs the tick: event loops fire timers up to a
#: millisecond early (libuv rounds to whole milliseconds), and a machine that refused
#: would be woken again at once, over and over, until the deadline.
TIMER_SLACK = 0.002
_INPUTS = {JoinInput: None, LeaveInput: None, MessageInput: None}

#: phase -> event type -> the phases it may lead to.
GAME_TRANSITIONS: dict[GamePhase, dict[type[Any], tuple[GamePhase, ...]]] = {
    Ph.IDLE: {Start: (Ph.RUNNING, Ph.FAILED), **{e: (Ph.IDLE,) for e in _INPUTS},
              Stop: (Ph.DISPOSED,)},
    Ph.REPLAYING: {**{e: (Ph.REPLAYING,) for e in _INPUTS},
                   TickMark: (Ph.REPLAYING, Ph.FAILED), GoLive: (Ph.RUNNING, Ph.FAILED),
                   Stop: (Ph.DISPOSED,)},
    Ph.RUNNING: {**{e: (Ph.RUNNING,) for e in _INPUTS}, Resync: (Ph.RUNNING,),
                 Timer: (Ph.RUNNING, Ph.FAILED), TickTime: (Ph.RUNNING, Ph.FAILED),
                 Stop: (Ph.DISPOSED,)},
    Ph.FAILED: {**{e: (Ph.FAILED,) for e in _INPUTS}, Resync: (Ph.FAILED,),
                Timer: (Ph.FAILED,), TickTime: (Ph.FAILED,), TickMark: (Ph.FAILED,),
                GoLive: (Ph.FAILED,), Stop: (Ph.DISPOSED,)},
    Ph.DISPOSED: {},
}


@dataclass(frozen=True, slots=True)
class GameSettings:
    """Limits of every game room (named, with safe defaults; see configuration.md)."""

    #: Largest input payload accepted (bytes of the PUBLISH payload).
    max_input_bytes: int = 4096
    #: Inputs applied per player per tick; more wait for the next ticks, up to
    #: ``max_waiting_inputs`` per player (a burst sent while the room moved); beyond
    #: that, a flood: dropped, ERROR 4003 (once per tick).
    max_inputs_per_tick: int = 16
    max_waiting_inputs: int = 64
    #: A tick whose hooks run longer than this (seconds) fails the room (4007).
    hook_budget: float = 1.0
    #: Full-state size is sampled every N patches (for the bandwidth figures).
    full_sample_every: int = 50
    #: Keys in a room's key table before it starts a new one (every player then gets
    #: its whole view again): bounds a long room whose players come and go.
    max_keys: int = 4096
    #: Room seconds between two ``$tick`` marks when no input came: after a crash the
    #: room resumes from its last mark, so this bounds the room time run again.
    mark_interval: float = 0.25
    #: Room seconds between two snapshots: bounds the replay after a crash (and the
    #: stream kept behind the snapshot).
    snapshot_interval: float = 2.0
    #: A snapshot larger than this (bytes, compressed) is not stored.
    max_snapshot_bytes: int = MAX_SNAPSHOT_BYTES


@dataclass(slots=True)
class GameStats:
    """What a room did, for metrics, the demo and the bench."""

    ticks: int = 0
    skipped: int = 0
    overruns: int = 0
    patches: int = 0
    #: Bytes of ROOM_PATCH frames delivered (summed over players).
    patch_bytes: int = 0
    #: What sending the whole view instead of each patch would have cost (estimate).
    full_bytes: int = 0
    full_states: int = 0
    events: int = 0
    inputs: int = 0
    input_errors: int = 0
    #: Ticks run again from the stream after a restore.
    replayed_ticks: int = 0
    #: How late each tick started (seconds), the last 4096.
    lateness: deque[float] = field(default_factory=lambda: deque(maxlen=4096))
    tick_seconds: float = 0.0

    def add(self, other: GameStats) -> None:
        """Add ``other``'s counters to these (the totals of rooms already gone)."""
        for f in fields(self):
            if f.type == "int":
                setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


class _Crashed(Exception):
    """Unwinds a tick after the handler raised."""


class GameRoom(PlayerViews):
    """One game room on its owner edge (see the module docstring)."""

    def __init__(self, name: str, handler: RoomHandler,
                 settings: GameSettings | None = None) -> None:
        self.name = name
        self.handler = handler
        self.cfg = settings or GameSettings()
        self.phase = Ph.IDLE
        self.tick_rate = min(60, max(1, int(type(handler).tick_rate)))
        self.patch_rate = min(self.tick_rate, max(1, int(type(handler).patch_rate)))
        self.interval = 1.0 / self.tick_rate
        self.patch_interval = 1.0 / self.patch_rate
        self.players: dict[str, Player] = {}
        self.rng = random.Random(0)
        self.ticks = 0
        self.version = 0
        self.timers = TickTimers()
        self.want_full: set[str] = set()
        self.stats = GameStats()
        self.failure = ""
        #: player -> the version its mirror holds, and how much of the key table it has.
        self._sent: dict[str, int] = {}
        self._known: dict[str, int] = {}
        self._keys = KeyTable()
        self._paths: dict[tuple[Any, ...], tuple[int, ...]] = {}
        self._queue: list[JoinInput | LeaveInput | MessageInput] = []
        #: Inputs over a tick's share, applied first at the next tick.
        self._carry: list[JoinInput | LeaveInput | MessageInput] = []
        self._events: list[tuple[str | None, str, bytes, str | None]] = []
        self._log = ChangeLog()
        self._next_tick = 0.0
        self._next_patch = 0.0
        self._full_size = 0
        self._views = type(handler).visible is not RoomHandler.visible
        #: Owner side: player -> the edge its session is on (from its last join).
        self.edges: dict[str, str] = {}
        self.mark_every = max(1, round(self.cfg.mark_interval * self.tick_rate))
        self.snapshot_every = max(1, round(self.cfg.snapshot_interval * self.tick_rate))
        #: Restored from a handover snapshot (players' mirrors can go on from it), and
        #: the lease epoch of the owner that took the snapshot.
        self.final = False
        self.snap_epoch = 0
        self._marked = 0
        self._snapped = -self.snapshot_every  # the first tick takes one
        handler._room = self
        handler.metadata = {}

    # -- the one entry point ------------------------------------------------------------

    def handle(self, event: GameEvent, now: float) -> list[GameCommand]:
        """Apply one event at ``now``; return the commands to execute, in order."""
        allowed = GAME_TRANSITIONS[self.phase].get(type(event))
        if allowed is None:
            return []
        out: list[GameCommand] = []
        t = type(event)
        if t is Timer:
            self._on_timer(now, out)
        elif t is JoinInput or t is LeaveInput or t is MessageInput:
            self._on_input(event, out)  # type: ignore[arg-type]
        elif t is Start:
            self._on_start(event, now, out)  # type: ignore[arg-type]
        elif t is Resync:
            self._on_resync(event.player, out)  # type: ignore[union-attr]
        elif t is TickTime:
            self._on_tick_time(event.seconds, out)  # type: ignore[union-attr]
        elif t is Stop:
            self._on_stop(event, out)  # type: ignore[arg-type]
        elif t is TickMark:
            self._on_tick_mark(event.tick)  # type: ignore[union-attr]
        elif t is GoLive:
            self._on_go_live(event.epoch, now, out)  # type: ignore[union-attr]
        assert self.phase in allowed, (self.phase, t.__name__)
        return out

    # -- continuity ---------------------------------------------------------------------

    def _on_tick_mark(self, tick: int) -> None:
        if tick <= self.ticks:
            return  # a mark of a tick already run: its inputs wait for the next one
        quiet: list[GameCommand] = []
        held, self._queue = self._queue, []
        ok = True
        while ok and self.ticks < tick - 1:
            ok = self._run_tick(quiet, replay=True)
        self._queue = held
        if ok:
            self._run_tick(quiet, replay=True)
        self._events.clear()
        self.want_full.clear()
        self._marked = self.ticks
        self.final = False  # ticks ran after the snapshot: mirrors cannot follow it

    def _on_go_live(self, epoch: int, now: float, out: list[GameCommand]) -> None:
        if self.phase is Ph.FAILED:
            out.append(RoomFailed(ErrorCode.ROOM_FAILED, f"room failed: {self.failure}"))
            return
        self.phase = Ph.RUNNING
        # The room was silent while it moved: its next tick (and patch) is due now.
        self._next_tick = now
        self._next_patch = now
        if self.final and self.snap_epoch != epoch:
            # A drain's snapshot keeps the epoch (the lease moves as it is); in another
            # epoch an owner restored it and ran on before dying: players may hold
            # patches of that run.
            self.final = False
        if not self.final:
            # What the players hold came from an owner that is gone: a fresh version
            # space (above any the old owner used: the next epoch's, or 2^30 past the
            # snapshot's within one) and everyone's whole view.
            self._keys = KeyTable()
            self._paths.clear()
            self._log.take()
            self.version = max(self.version, epoch << 32) + (1 << 30)
            self.want_full = set(self.players)

    def next_deadline(self) -> float | None:
        """When to feed :class:`~.events.Timer` next (None: not ticking)."""
        return self._next_tick if self.phase is Ph.RUNNING else None

    @property
    def state(self) -> Schema:
        return self.handler.state

    def full_view(self, player: str | None = None) -> Any:
        """The plain state tree ``player`` sees (the whole of it for None)."""
        plain = to_plain(self.handler.state)
        p = self.players.get(player) if player is not None else None
        return plain if p is None or not self._views else self._filter(plain, (), p)

    # -- events -------------------------------------------------------------------------

    def _on_start(self, ev: Start, now: float, out: list[GameCommand]) -> None:
        self.rng = random.Random(ev.seed)
        self.phase = Ph.RUNNING
        # The first tick is due at once: it applies the joins queued before the start
        # (like any input, at a tick that closes with a mark).
        self._next_tick = now
        self._next_patch = now
        try:
            self._call(self.handler.on_create, dict(ev.options), out=out)
            if not isinstance(getattr(self.handler, "state", None), Schema):
                self.handler.state = _Empty()
            self._log = self.handler.state.track()
        except _Crashed:
            pass

    def _on_input(self, ev: JoinInput | LeaveInput | MessageInput,
                  out: list[GameCommand]) -> None:
        if self.phase is Ph.FAILED:
            if type(ev) is JoinInput:
                out.append(JoinVerdict(ev.player, ev.req_id, ev.edge, ErrorCode.ROOM_FAILED,
                                       f"room failed: {self.failure}"))
            return
        self._queue.append(ev)

    def _on_resync(self, player: str, out: list[GameCommand]) -> None:
        if self.phase is Ph.RUNNING and player in self.players:
            self.want_full.add(player)
            self._send_fulls(out)

    def _on_tick_time(self, seconds: float, out: list[GameCommand]) -> None:
        self.stats.tick_seconds = seconds
        if seconds > self.cfg.hook_budget and self.phase is Ph.RUNNING:
            self._fail(f"a tick took {seconds * 1000:.0f} ms "
                       f"(budget {self.cfg.hook_budget * 1000:.0f} ms)", out)

    def _on_stop(self, ev: Stop, out: list[GameCommand]) -> None:
        if self.phase is Ph.RUNNING and not ev.moved:
            try:
                self._call(self.handler.on_dispose, out=out)
            except _Crashed:
                out.clear()  # nothing to tell: the room is going anyway
        self.phase = Ph.DISPOSED
        out.append(Disposed())

    def _on_timer(self, now: float, out: list[GameCommand]) -> None:
        if self.phase is not Ph.RUNNING or now + TIMER_SLACK < self._next_tick:
            return
        st = self.stats
        late = max(0.0, now - self._next_tick)
        st.lateness.append(late)
        if late >= self.interval:
            missed = int(late / self.interval)
            st.skipped += missed
            st.overruns += 1
            self._next_tick += missed * self.interval
        applied = bool(self._queue or self._carry)
        if not self._run_tick(out):
            return
        if applied or self.ticks - self._marked >= self.mark_every:
            out.insert(0, Mark(self.ticks))
            self._marked = self.ticks
        self._next_tick += self.interval
        if now + TIMER_SLACK >= self._next_patch:
            self._patch(out)
            self._next_patch += self.patch_interval
            if self._next_patch <= now:
                self._next_patch = now + self.patch_interval
        elif self.want_full:
            self._send_fulls(out)
        self._flush_events(out)
        if self.ticks - self._snapped >= self.snapshot_every:
            self._snapped = self.ticks
            out.append(SnapshotDue())

    def _run_tick(self, out: list[GameCommand], replay: bool = False) -> bool:
        """Run one tick: inputs queued, timers due, ``on_tick``.  False if the handler
        raised (the room is FAILED)."""
        # The tick being run counts from here: hooks see it as ``tick`` and ``clock``.
        self.ticks += 1
        if replay:
            self.stats.replayed_ticks += 1
        else:
            self.stats.ticks += 1
        try:
            self._apply_inputs(out)
            for fn, args in self.timers.due(self.ticks):
                self._call(fn, *args, out=out)
            self._call(self.handler.on_tick, self.interval, out=out)
        except _Crashed:
            return False
        return True

    # -- inputs -------------------------------------------------------------------------

    def _apply_inputs(self, out: list[GameCommand]) -> None:
        """Apply the inputs carried over from the last tick, then those fed since."""
        queue = self._carry + self._queue if self._carry else self._queue
        self._queue, self._carry = [], []
        counts: dict[str, int] = {}
        for ev in queue:
            t = type(ev)
            if t is MessageInput:
                self._apply_message(ev, counts, out)  # type: ignore[arg-type]
            elif t is JoinInput:
                self._apply_join(ev, out)  # type: ignore[arg-type]
            else:
                p = self.players.pop(ev.player, None)
                self.edges.pop(ev.player, None)
                self._sent.pop(ev.player, None)
                self._known.pop(ev.player, None)
                self.want_full.discard(ev.player)
                if p is not None:
                    self._call(self.handler.on_leave, p, out=out)

    def _apply_join(self, ev: JoinInput, out: list[GameCommand]) -> None:
        if ev.player in self.players:
            # A re-join (resume, handoff to another edge): the same player, now there.
            # Its mirror goes on from its last patch; one that missed some asks for a
            # resync.
            self.edges[ev.player] = ev.edge
            out.append(JoinVerdict(ev.player, ev.req_id, ev.edge))
            return
        limit = type(self.handler).max_players
        if limit and len(self.players) >= limit:
            out.append(JoinVerdict(ev.player, ev.req_id, ev.edge, ErrorCode.JOIN_REFUSED,
                                   f"room is full ({limit} players)"))
            return
        p = Player(ev.player, ev.subject, dict(ev.options))
        try:
            self.handler.on_join_attempt(p, p.options)
        except JoinRefused as exc:
            out.append(JoinVerdict(ev.player, ev.req_id, ev.edge, ErrorCode.JOIN_REFUSED,
                                   str(exc) or "refused by the room"))
            return
        except Exception as exc:
            self._crash("on_join_attempt", exc, out)
        self.players[p.id] = p
        self.edges[p.id] = ev.edge
        self._sent[p.id] = self._known[p.id] = 0
        out.append(JoinVerdict(ev.player, ev.req_id, ev.edge))
        self._call(self.handler.on_join, p, out=out)
        self.want_full.add(p.id)

    def _apply_message(self, ev: MessageInput, counts: dict[str, int],
                       out: list[GameCommand]) -> None:
        p = self.players.get(ev.player)
        if p is None:
            return  # not (or no longer) a player: nothing to apply
        n = counts[ev.player] = counts.get(ev.player, 0) + 1
        cfg = self.cfg
        if n > cfg.max_inputs_per_tick:
            # Over the tick's share: wait for the next ticks (a burst after a failover,
            # inputs already acknowledged), up to max_waiting_inputs; beyond, a flood.
            if n <= cfg.max_inputs_per_tick + cfg.max_waiting_inputs:
                self._carry.append(ev)
                return
            self.stats.inputs += 1
            if n == cfg.max_inputs_per_tick + cfg.max_waiting_inputs + 1:
                self._input_error(ev.player, ErrorCode.RATE_LIMITED,
                                  f"more than {cfg.max_inputs_per_tick + cfg.max_waiting_inputs}"
                                  " inputs waiting; the rest of this tick's are dropped", out)
            else:
                self.stats.input_errors += 1
            return
        self.stats.inputs += 1
        if ev.size > cfg.max_input_bytes:
            self._input_error(ev.player, ErrorCode.FRAME_TOO_LARGE,
                              f"input of {ev.size} bytes is over the limit of "
                              f"{cfg.max_input_bytes}", out)
            return
        try:
            self.handler.on_message(p, ev.kind, ev.payload)
        except InputRejected as exc:
            self._input_error(ev.player, ErrorCode.INPUT_REJECTED,
                              str(exc) or f"input {ev.kind!r} rejected", out)
        except Exception as exc:
            self._crash("on_message", exc, out)

    def _input_error(self, player: str, code: int, text: str, out: list[GameCommand]) -> None:
        self.stats.input_errors += 1
        out.append(InputError(player, code, text))

    # -- events from the handler ----------------------------------------------------

    def event(self, to: str | None, kind: str, payload: Any, exclude: str | None) -> None:
        """Queue a ROOM_EVENT (called by the handler through its context)."""
        self._events.append((to, kind, encode_value(payload), exclude))

    def _flush_events(self, out: list[GameCommand]) -> None:
        for to, kind, data, exclude in self._events:
            out.append(Deliver(to, encode(RoomEvent(self.name, kind, data)), exclude))
            self.stats.events += 1
        self._events.clear()

    # -- failures -------------------------------------------------------------------

    def _call(self, fn: Any, *args: Any, out: list[GameCommand]) -> None:
        try:
            fn(*args)
        except Exception as exc:
            self._crash(getattr(fn, "__name__", "a timer"), exc, out)

    def _crash(self, where: str, exc: Exception, out: list[GameCommand]) -> None:
        self._fail(f"{type(exc).__name__} in {where}", out)
        raise _Crashed from exc

    def _fail(self, why: str, out: list[GameCommand]) -> None:
        self.phase = Ph.FAILED
        self.failure = why
        self._queue.clear()
        self._carry.clear()
        self._events.clear()
        out.append(RoomFailed(ErrorCode.ROOM_FAILED, f"room failed: {why}"))


class _Empty(Schema):
    """The state of a handler that sets none."""


def empty_state() -> Schema:
    """A state for a handler that sets none."""
    return _Empty()
