"""``/metrics`` for game rooms: totals, tick time and lateness, and the busiest rooms.

Per-room series are bounded: only the :data:`TOP_ROOMS` rooms with the longest last
tick get a ``room`` label (an operator debugging a laggy match finds it there); every
other figure is a total over the edge.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Iterator

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.registry import Collector

from edge_node.fanout.games import GameHost
from edge_node.games.room import GamePhase
from edge_node.runtime.metrics import EdgeMetrics

__all__ = ["register_game_metrics", "TOP_ROOMS", "game_summary"]

#: Rooms shown with their own label, by last tick time.
TOP_ROOMS = 10

_TOTALS = (
    ("ticks", "edge_game_ticks", "Ticks run by game rooms"),
    ("skipped", "edge_game_ticks_skipped",
     "Tick slots skipped because a tick started more than one interval late"),
    ("overruns", "edge_game_tick_overruns", "Ticks that started more than one interval late"),
    ("patches", "edge_game_patches", "State patch rounds"),
    ("patch_bytes", "edge_game_patch_bytes", "Bytes of ROOM_PATCH frames delivered"),
    ("full_bytes", "edge_game_full_state_equivalent_bytes",
     "Bytes sending each player its whole view at every patch would have cost"),
    ("full_states", "edge_game_full_states", "ROOM_STATE frames sent (joins, resyncs)"),
    ("events", "edge_game_events", "ROOM_EVENT frames sent"),
    ("inputs", "edge_game_inputs", "Inputs applied or refused"),
    ("input_errors", "edge_game_input_errors", "Inputs refused (4003, 4411, 4413)"),
    ("replayed_ticks", "edge_game_replayed_ticks",
     "Ticks run again from the stream after a restore (not in edge_game_ticks)"),
)

#: Continuity counters (GameTotals attribute, metric, help).
_CONTINUITY = (
    ("marks", "edge_game_marks", "$tick marks appended to game rooms' streams"),
    ("snapshots", "edge_game_snapshots", "Game-room snapshots stored"),
    ("snapshot_failures", "edge_game_snapshot_failures",
     "Game-room snapshots not stored (too large, not picklable, fenced, store down)"),
    ("restores", "edge_game_restores", "Game rooms restored here from a snapshot"),
    ("fresh", "edge_game_restores_fresh",
     "Game rooms this edge came to own that had no snapshot (started afresh)"),
    ("restore_failures", "edge_game_restore_failures",
     "Snapshots that did not load (bad signature, changed handler): started afresh"),
    ("restore_gaps", "edge_game_restore_gaps",
     "Restores across a gap in the room's stream (inputs lost)"),
    ("replayed_entries", "edge_game_replayed_entries",
     "Stream entries replayed by restores"),
    ("handovers", "edge_game_handovers", "Game rooms moved live to another edge on a drain"),
    ("moved_in", "edge_game_moved_in",
     "Game rooms restored here from a drain's final snapshot (players kept their patches)"),
)


def game_summary(host: GameHost) -> dict[str, float]:
    """Totals over every game room this edge ran (running ones included)."""
    done = host.totals.done
    out: dict[str, float] = {}
    for attr, _n, _h in _TOTALS:
        out[attr] = float(getattr(done, attr)) + sum(
            getattr(g.stats, attr) for g in host.rooms.values())
    t = host.totals
    out.update(rooms=len(host.rooms), started=t.started, failed=t.failed,
               joins_refused=t.joins_refused, join_timeouts=t.join_timeouts,
               resyncs=t.resyncs,
               players=sum(len(g.players) for g in host.rooms.values()))
    for attr, _n, _h in _CONTINUITY:
        out[attr] = float(getattr(t, attr))
    out.update(snapshot_bytes=t.snapshot_bytes, capture_seconds=t.capture_seconds,
               restore_seconds=t.restore_seconds)
    return out


class FastHistogram:
    """A histogram cheaper than prometheus_client's (no lock: the edge observes from one
    thread), observed once per tick of every game room; exported at scrape time."""

    __slots__ = ("bounds", "counts", "name", "text", "total")

    def __init__(self, name: str, text: str, bounds: tuple[float, ...]) -> None:
        self.name, self.text, self.bounds = name, text, bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    def family(self) -> HistogramMetricFamily:
        buckets, running = [], 0
        for le, n in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += n
            buckets.append(("+Inf" if le == float("inf") else repr(float(le)), running))
        return HistogramMetricFamily(self.name, self.text, buckets=buckets,
                                     sum_value=self.total)


class _GameCollector(Collector):
    def __init__(self, host: GameHost, hists: tuple[FastHistogram, ...]) -> None:
        self.host = host
        self.hists = hists

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily
                                  | HistogramMetricFamily]:
        yield from (h.family() for h in self.hists)
        host = self.host
        summary = game_summary(host)
        for attr, name, text in _TOTALS:
            c = CounterMetricFamily(name, text)
            c.add_metric([], summary[attr])
            yield c
        for attr, name, text in (
                ("started", "edge_game_rooms_started", "Game rooms started here"),
                ("failed", "edge_game_rooms_failed", "Game rooms whose handler raised or "
                 "blocked (players got ERROR 4007)"),
                ("joins_refused", "edge_game_joins_refused", "Joins refused (4410, 4007)"),
                ("join_timeouts", "edge_game_join_timeouts",
                 "Joins the room's owner did not answer in time (4005)"),
                ("resyncs", "edge_game_resyncs", "Resyncs asked by players")):
            c = CounterMetricFamily(name, text)
            c.add_metric([], summary[attr])
            yield c
        for attr, name, text in _CONTINUITY:
            c = CounterMetricFamily(name, text)
            c.add_metric([], summary[attr])
            yield c
        for attr, name, text in (
                ("snapshot_bytes", "edge_game_last_snapshot_bytes",
                 "Size of the last game-room snapshot stored (compressed)"),
                ("capture_seconds", "edge_game_last_capture_seconds",
                 "Time the last game-room snapshot took to capture and seal"),
                ("restore_seconds", "edge_game_last_restore_seconds",
                 "Time the last restore took, from owning the room to ticking")):
            g = GaugeMetricFamily(name, text)
            g.add_metric([], summary[attr])
            yield g
        now = time.monotonic()
        ages = [now - host.cont.saved[n][0] for n in host.rooms if n in host.cont.saved]
        g = GaugeMetricFamily("edge_game_oldest_snapshot_age_seconds",
                              "Age of the oldest stored snapshot among the game rooms "
                              "running here (what a crash would replay, in time)")
        g.add_metric([], max(ages, default=0.0))
        yield g
        g = GaugeMetricFamily("edge_game_entries_behind_snapshots",
                              "Stream entries fed since each running game room's stored "
                              "snapshot, summed (what a crash would replay)")
        g.add_metric([], sum(host.cont.fed.get(n, 0) - host.cont.saved.get(n, (0.0, 0))[1]
                             for n in host.rooms))
        yield g
        g = GaugeMetricFamily("edge_game_rooms", "Game rooms running here, by phase",
                              labels=["phase"])
        for phase in GamePhase:
            g.add_metric([phase.name], sum(1 for r in host.rooms.values() if r.phase is phase))
        yield g
        g = GaugeMetricFamily("edge_game_players", "Players in game rooms running here")
        g.add_metric([], summary["players"])
        yield g
        busiest = sorted(host.rooms.values(), key=lambda r: r.stats.tick_seconds,
                         reverse=True)[:TOP_ROOMS]
        tick = GaugeMetricFamily("edge_game_room_tick_seconds",
                                 f"Last tick time of the {TOP_ROOMS} slowest game rooms",
                                 labels=["room"])
        players = GaugeMetricFamily("edge_game_room_players",
                                    f"Players in the {TOP_ROOMS} slowest game rooms",
                                    labels=["room"])
        over = CounterMetricFamily("edge_game_room_overruns",
                                   f"Late ticks of the {TOP_ROOMS} slowest game rooms",
                                   labels=["room"])
        pbytes = CounterMetricFamily("edge_game_room_patch_bytes",
                                     f"Patch bytes of the {TOP_ROOMS} slowest game rooms",
                                     labels=["room"])
        age = GaugeMetricFamily("edge_game_room_snapshot_age_seconds",
                                f"Age of the stored snapshot of the {TOP_ROOMS} slowest game "
                                "rooms (what a crash would replay, in time)", labels=["room"])
        behind = GaugeMetricFamily("edge_game_room_entries_behind_snapshot",
                                   f"Stream entries fed since the stored snapshot of the "
                                   f"{TOP_ROOMS} slowest game rooms", labels=["room"])
        cont = host.cont
        for r in busiest:
            tick.add_metric([r.name], r.stats.tick_seconds)
            players.add_metric([r.name], len(r.players))
            over.add_metric([r.name], r.stats.overruns)
            pbytes.add_metric([r.name], r.stats.patch_bytes)
            saved = cont.saved.get(r.name)
            if saved is not None:
                age.add_metric([r.name], now - saved[0])
                behind.add_metric([r.name], cont.fed.get(r.name, 0) - saved[1])
        yield from (tick, players, over, pbytes, age, behind)


def register_game_metrics(metrics: EdgeMetrics, host: GameHost) -> None:
    """Add the game-room metrics to the edge's registry and hook the tick observers."""
    tick = FastHistogram("edge_game_tick_seconds", "Time a game room's tick took (hooks, "
                         "patch building)", (1e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3,
                                             5e-3, 1e-2, 2.5e-2, 0.05, 0.1, 1.0))
    late = FastHistogram("edge_game_tick_lateness_seconds", "How late a game room's tick "
                         "started against its fixed schedule (jitter)",
                         (1e-4, 2.5e-4, 5e-4, 1e-3, 2e-3, 3e-3, 5e-3, 1e-2, 2e-2, 5e-2,
                          0.1, 0.5))
    restore = FastHistogram("edge_game_restore_seconds", "Time a game room took from this "
                            "edge owning it to ticking (snapshot read, stream read, replay)",
                            (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                             2.5, 5.0))
    metrics.registry.register(_GameCollector(host, (tick, late, restore)))
    host.observe_tick = tick.observe
    host.observe_lateness = late.observe
    host.cont.observe_restore = restore.observe
