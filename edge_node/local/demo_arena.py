"""An authoritative game for ``edge-relay demo``: bots playing the arena
(:mod:`edge_node.local.arena`) on every edge, its state checked at the end.

The room is created on the first edge (which the demo neither drains nor kills), so the
handler runs there for the whole run; bots on the other edges are remote players: their
inputs are forwarded to the owner through the room stream, their patches come back
through the room's live channel, and when their edge is drained or killed they resume
elsewhere and get the whole state again.  At the end the bots stop, and each bot's
state (version, checksum) is compared with the owner's (ROOM_LIST on the owner edge):
``divergences`` counts the bots that do not match.
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
from edge_node.local.scrape import bucket_quantile_ms

__all__ = ["ArenaBots", "ARENA_HANDLER", "arena_metrics"]

#: The edges' ``--room-handler`` for the demo.
ARENA_HANDLER = "arena-*=edge_node.local.arena:Arena"


class ArenaBots:
    """``await start()``, ``await run(duration)``, then ``await summary()``."""

    def __init__(self, urls: list[str], secret: bytes, *, bots: int = 6, rate: float = 10.0,
                 ca_file: str = "", seed: int = 7) -> None:
        self.urls = urls
        self.secret = secret
        self.n = bots
        self.rate = rate
        self.ca_file = ca_file
        self.rng = random.Random(seed)
        self.room = f"arena-demo-{int(time.time())}"
        self.clients: list[Client] = []
        self.games: list[GameRoom] = []
        self.inputs = 0
        self.acked = 0
        self.failed = 0
        #: Final inputs not confirmed in time (the run continues without them).
        self.unconfirmed = 0
        self.problems: list[str] = []

    async def start(self) -> None:
        """Connect and join every bot; the first one (on the first edge) creates the room."""
        now = time.time()
        for i in range(self.n):
            k = i % len(self.urls)
            order = self.urls[k:] + self.urls[:k]
            tok = mint_token(self.secret, f"bot-{i}", "player", ["arena-*"], now=now)
            c = await connect(order, tok, name=f"demo-bot-{i}", backoff_base=0.2,
                              backoff_cap=2.0, tls=TlsOptions(ca_file=self.ca_file or None))
            self.clients.append(c)
            self.games.append(await c.join_game(self.room, {"name": f"bot-{i}",
                                                            "label": "demo"}))

    async def run(self, duration: float) -> None:
        """Steer every bot at ``rate`` inputs per second for ``duration`` seconds."""
        async def bot(i: int, g: GameRoom) -> None:
            rng = random.Random(i)
            end = time.perf_counter() + duration
            await asyncio.sleep(rng.random() / self.rate)
            while time.perf_counter() < end:
                self._track(g.send_nowait("move", {"dx": round(rng.uniform(-1, 1), 2),
                                                   "dy": round(rng.uniform(-1, 1), 2)}))
                if rng.random() < 0.02:
                    self._track(g.send_nowait("say", "gg"))
                await asyncio.sleep(1.0 / self.rate)
            try:
                await g.send("move", {"dx": 0, "dy": 0}, timeout=15)
            except Exception as exc:  # counted: the summary shows it
                self.unconfirmed += 1
                self.problems.append(f"bot-{i} on {g.client.edge_id}: {exc!r}")
        await asyncio.gather(*(bot(i, g) for i, g in enumerate(self.games)))

    def _track(self, fut: asyncio.Future[Any] | None) -> None:
        self.inputs += 1
        if fut is not None:
            fut.add_done_callback(self._settled)

    def _settled(self, fut: asyncio.Future[Any]) -> None:
        if fut.cancelled() or fut.exception() is not None:
            self.failed += 1
        else:
            self.acked += 1

    async def summary(self) -> dict[str, Any]:
        """Compare every bot's state with the owner's; close the bots."""
        owner: dict[str, Any] = {}
        divergent = list(range(self.n))
        for _ in range(40):  # until the room is still and every bot has its last patch
            await asyncio.sleep(0.25)
            listing = await self.clients[0].request(RoomList(0, self.room))
            assert isinstance(listing, RoomListing)
            rooms = [r for r in listing.rooms if r["name"] == self.room]
            if not rooms:
                continue
            owner = rooms[0]
            divergent = [i for i, g in enumerate(self.games)
                         if (g.version, g.checksum()) != (owner["version"], owner["checksum"])]
            if not divergent:
                break
        out = {
            "room": self.room, "bots": self.n, "inputs_sent": self.inputs,
            "inputs_acked": self.acked, "inputs_failed": self.failed,
            "inputs_unconfirmed": self.unconfirmed, "problems": self.problems[:5],
            "owner_edge": owner.get("edge"), "players_at_owner": owner.get("players"),
            "state_version": owner.get("version"), "divergences": len(divergent),
            "resyncs": sum(g.resyncs for g in self.games),
            "full_states": sum(g.full_states for g in self.games),
            "scores": sorted((p.get("score", 0) for p in
                              self.games[0].state.get("players", {}).values()), reverse=True),
        }
        for c in self.clients:
            with contextlib.suppress(Exception):
                await c.close()
        return out


def arena_metrics(scrape: dict[str, float]) -> dict[str, Any]:
    """Tick and patch figures from the owner edge's ``/metrics`` (parsed scrape)."""
    ticks = scrape.get("edge_game_ticks_total", 0.0)
    patches = scrape.get("edge_game_patches_total", 0.0)
    pbytes = scrape.get("edge_game_patch_bytes_total", 0.0)
    fbytes = scrape.get("edge_game_full_state_equivalent_bytes_total", 0.0)

    def p99(name: str) -> float | None:  # since the edge started
        return bucket_quantile_ms([{}], [scrape], name, 0.99)
    return {
        "ticks": int(ticks),
        "tick_jitter_p99_ms": p99("edge_game_tick_lateness_seconds"),
        "tick_time_p99_ms": p99("edge_game_tick_seconds"),
        "ticks_skipped": int(scrape.get("edge_game_ticks_skipped_total", 0.0)),
        "patches": int(patches),
        "patch_bytes": int(pbytes),
        "full_state_bytes": int(fbytes),
        "bandwidth_saving": round(fbytes / pbytes, 1) if pbytes else None,
    }

