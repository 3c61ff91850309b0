"""An authoritative game for ``edge-relay demo``: bots playing the arena
(:mod:`edge_node.local.arena`) on every edge, its state checked at the end.

Each :class:`ArenaBots` is one room, created on its ``home`` edge (its first bot joins
there first), so the handler starts there; bots on the other edges are remote players:
their inputs are forwarded to the owner through the room stream, their patches come
back through the room's live channel.  The demo homes one arena on the edge it drains
and one on the edge it kills: the first moves live to a neighbour with its lease, the
second is restored by a neighbour from its snapshot and the stream after it.

For each event (:meth:`ArenaBots.event`) the summary tells, as seen by the bots whose
edge was not hit: the longest silence (no patch), the time until the room ticked again,
the ticks run again (a restored room resumes from its last mark), the whole views sent
after it.  At the end the bots stop; each bot's state (version, checksum) is compared
with the owner's (ROOM_LIST): ``divergences`` counts the bots that do not match, and
each bot's avatar counts the inputs it took (``inputs``), compared with the inputs the
edge acknowledged: ``inputs_lost`` and ``inputs_applied_twice``.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from typing import Any

from client_sdk import Client, GameRoom, connect
from client_sdk.protocol import RoomList, RoomListing, mint_token
from client_sdk.transport import TlsOptions
from edge_node.local.scrape import bucket_quantile_ms, continuity_figures
from edge_node.local.timeline import around

__all__ = ["ArenaBots", "ARENA_HANDLER", "arena_metrics"]

#: The edges' ``--room-handler`` for the demo.
ARENA_HANDLER = "arena-*=edge_node.local.arena:Arena"


class ArenaBots:
    """``await start()``, ``await run(duration)``, then ``await summary()``."""

    def __init__(self, urls: list[str], secret: bytes, *, bots: int = 6, rate: float = 10.0,
                 ca_file: str = "", seed: int = 7, home: int = 0, label: str = "demo") -> None:
        self.urls = urls
        self.home = home % len(urls)
        self.secret = secret
        self.n = bots
        self.rate = rate
        self.ca_file = ca_file
        self.rng = random.Random(seed)
        self.room = f"arena-{label}-{int(time.time())}"
        self.clients: list[Client] = []
        self.games: list[GameRoom] = []
        self.inputs = 0
        self.acked = 0
        self.failed = 0
        #: Final inputs not confirmed in time (the run continues without them).
        self.unconfirmed = 0
        self.problems: list[str] = []
        #: Inputs each bot's edge acknowledged.
        self.acked_by: list[int] = [0] * bots
        self.sent_by: list[int] = [0] * bots
        self.home_edge = ""
        #: Per bot: (arrival, room tick, whole view?) of every state frame.
        self.frames: list[list[tuple[float, int, bool]]] = [[] for _ in range(bots)]
        self.events: list[dict[str, Any]] = []
        self._watchers: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Connect and join every bot; the first one (on the first edge) creates the room."""
        now = time.time()
        for i in range(self.n):
            k = (self.home + i) % len(self.urls)
            order = self.urls[k:] + self.urls[:k]
            tok = mint_token(self.secret, f"bot-{i}", "player", ["arena-*"], now=now)
            c = await connect(order, tok, name=f"demo-bot-{i}", backoff_base=0.2,
                              backoff_cap=2.0, tls=TlsOptions(ca_file=self.ca_file or None))
            self.clients.append(c)
            if i == 0:
                self.home_edge = c.edge_id
            g = await c.join_game(self.room, {"name": f"bot-{i}", "label": "demo"})
            self.games.append(g)
            self._watchers.append(asyncio.get_running_loop().create_task(self._watch(i, g)))

    async def _watch(self, i: int, g: GameRoom) -> None:
        fulls = g.full_states
        async for _version in g.changes():
            self.frames[i].append((time.perf_counter(), g.tick, g.full_states != fulls))
            fulls = g.full_states

    def event(self, kind: str, edge_id: str) -> None:
        """The demo just drained or killed ``edge_id``: measure the room around now."""
        watchers = [i for i, g in enumerate(self.games) if g.client.edge_id != edge_id]
        self.events.append({"event": kind, "edge": edge_id, "t": time.perf_counter(),
                            "watchers": watchers})

    async def run(self, duration: float) -> None:
        """Steer every bot at ``rate`` inputs per second for ``duration`` seconds."""
        async def bot(i: int, g: GameRoom) -> None:
            rng = random.Random(i)
            end = time.perf_counter() + duration
            await asyncio.sleep(rng.random() / self.rate)
            while time.perf_counter() < end:
                self._track(i, g.send_nowait("move", {"dx": round(rng.uniform(-1, 1), 2),
                                                      "dy": round(rng.uniform(-1, 1), 2)}))
                if rng.random() < 0.02:
                    self._track(i, g.send_nowait("say", "gg"))
                await asyncio.sleep(1.0 / self.rate)
            try:
                self.inputs += 1
                self.sent_by[i] += 1
                await g.send("move", {"dx": 0, "dy": 0}, timeout=15)
                self.acked += 1
                self.acked_by[i] += 1
            except Exception as exc:  # counted: the summary shows it
                self.unconfirmed += 1
                self.problems.append(f"bot-{i} on {g.client.edge_id}: {exc!r}")
        await asyncio.gather(*(bot(i, g) for i, g in enumerate(self.games)))

    def _track(self, i: int, fut: asyncio.Future[Any] | None) -> None:
        self.inputs += 1
        self.sent_by[i] += 1
        if fut is not None:
            fut.add_done_callback(lambda f: self._settled(i, f))

    def _settled(self, i: int, fut: asyncio.Future[Any]) -> None:
        if fut.cancelled() or fut.exception() is not None:
            self.failed += 1
        else:
            self.acked += 1
            self.acked_by[i] += 1

    def _event_figures(self, ev: dict[str, Any], until: float) -> dict[str, Any]:
        """What the bots not on the hit edge saw from event ``ev`` to ``until`` (the
        next event, or 5 s later): the longest silence, when the room ticked again,
        the ticks run again (:func:`edge_node.local.timeline.around`)."""
        t_e = ev["t"]
        gap = again = 0.0
        rerun = 0
        for i in ev["watchers"]:
            seen = around([(t, tick) for t, tick, _full in self.frames[i]], t_e, until)
            if seen is not None:
                gap, again, rerun = max(gap, seen[0]), max(again, seen[1]), max(rerun, seen[2])
        fulls = sum(1 for frames in self.frames for t, _tick, full in frames
                    if full and t_e <= t <= until)
        return {"event": ev["event"], "edge": ev["edge"],
                "max_patch_gap_ms": round(gap * 1000, 1),
                "ticked_again_s": round(again, 3), "ticks_run_again": rerun,
                "whole_views_sent": fulls, "watchers": len(ev["watchers"])}

    async def _listed(self, c: Client) -> list[dict[str, Any]]:
        listing = await c.request(RoomList(0, self.room))
        assert isinstance(listing, RoomListing)
        return [r for r in listing.rooms if r["name"] == self.room]

    async def summary(self) -> dict[str, Any]:
        """Compare every bot's state with the owner's; close the bots."""
        owner: dict[str, Any] = {}
        divergent = list(range(self.n))
        for _ in range(40):  # until the room is still and every bot has its last patch
            await asyncio.sleep(0.25)
            rooms = await self._listed(self.clients[0])
            if rooms and "checksum" not in rooms[0]:  # ask the owner edge: it has it
                at_owner = [c for c in self.clients if c.edge_id == rooms[0]["edge"]]
                rooms = await self._listed(at_owner[0]) if at_owner else []
            if not rooms or "checksum" not in rooms[0]:
                continue
            owner = rooms[0]
            divergent = [i for i, g in enumerate(self.games)
                         if (g.version, g.checksum()) != (owner["version"], owner["checksum"])]
            if not divergent:
                break
        avatars = self.games[0].state.get("players", {})
        applied = [int(avatars.get(c.session_id, {}).get("inputs", 0)) for c in self.clients]
        out = {
            "room": self.room, "home_edge": self.home_edge,
            "bots": self.n, "inputs_sent": self.inputs,
            "inputs_acked": self.acked, "inputs_failed": self.failed,
            "inputs_unconfirmed": self.unconfirmed, "problems": self.problems[:5],
            "owner_edge": owner.get("edge"), "players_at_owner": owner.get("players"),
            "state_version": owner.get("version"), "divergences": len(divergent),
            "resyncs": sum(g.resyncs for g in self.games),
            "full_states": sum(g.full_states for g in self.games),
            "scores": sorted((p.get("score", 0) for p in avatars.values()), reverse=True),
            "inputs_applied": sum(applied),
            "inputs_lost": sum(max(0, a - n) for a, n in zip(self.acked_by, applied,
                                                               strict=True)),
            "inputs_applied_twice": sum(max(0, n - s) for n, s in zip(applied, self.sent_by,
                                                                        strict=True)),
            "events": [self._event_figures(ev, min(ev["t"] + 5.0, nxt["t"] - 0.05))
                       for ev, nxt in zip(self.events, [*self.events[1:],
                                                         {"t": float("inf")}], strict=True)],
        }
        for t in self._watchers:
            t.cancel()
        for c in self.clients:
            with contextlib.suppress(Exception):
                await c.close()
        return out


def arena_metrics(scrapes: list[dict[str, float]]) -> dict[str, Any]:
    """Tick, patch and continuity figures summed over the edges still running at the end
    (parsed ``/metrics`` scrapes; a killed edge's counters went with it)."""
    def total(name: str) -> float:
        return sum(m.get(name, 0.0) for m in scrapes)

    def p99(name: str) -> float | None:  # since the edges started
        return bucket_quantile_ms([{}] * len(scrapes), scrapes, name, 0.99)
    pbytes = total("edge_game_patch_bytes_total")
    fbytes = total("edge_game_full_state_equivalent_bytes_total")
    return {
        "ticks": int(total("edge_game_ticks_total")),
        "tick_jitter_p99_ms": p99("edge_game_tick_lateness_seconds"),
        "tick_time_p99_ms": p99("edge_game_tick_seconds"),
        "ticks_skipped": int(total("edge_game_ticks_skipped_total")),
        "patches": int(total("edge_game_patches_total")),
        "patch_bytes": int(pbytes),
        "full_state_bytes": int(fbytes),
        "bandwidth_saving": round(fbytes / pbytes, 1) if pbytes else None,
        **continuity_figures(scrapes),
    }
