"""The load-generator process of ``bench games``: SDK clients playing the arena.

With chaos (``bench games --chaos kill|drain``) each client knows every edge (its own
first) so it can move, records the arrival and room tick of every state frame, and at
the end reports, for the rooms whose owner was hit, what the players that were *not* on
the hit edge saw after the event (time read from ``event_at``, a shared value the
parent sets when it strikes): the longest silence, the time until the room ticked
again, the ticks run again; and, for every player, the inputs its edge acknowledged
against the inputs its avatar took (the arena counts them): lost, applied twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from typing import Any

from edge_node.local.timeline import around

__all__ = ["worker_main"]


def worker_main(urls: list[str], secret: bytes, specs: list[tuple[int, str, int, int]],
                input_hz: float, run_for: float, ready: Any, results: Any,
                cpus: set[int] | None, chaos: tuple[str, Any] | None = None) -> None:
    """Join every ``(index, room, edge, seat)`` in ``specs``, put the number joined on
    ``ready``, steer for ``run_for`` seconds, then put the counts on ``results``."""
    import os

    if cpus:
        os.sched_setaffinity(0, cpus)
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
    try:
        out = asyncio.run(_play(urls, secret, specs, input_hz, run_for, ready, chaos))
    except Exception as exc:  # reported, not raised: the parent waits on the queue
        ready.put(0)
        out = {"inputs": 0, "acked": 0, "resyncs": 0, "rooms": {}, "lost": 0, "twice": 0,
               "error": f"load generator: {exc!r}"}
    results.put(out)


async def _play(urls: list[str], secret: bytes, specs: list[tuple[int, str, int, int]],
                input_hz: float, run_for: float, ready: Any,
                chaos: tuple[str, Any] | None) -> dict[str, Any]:
    from client_sdk import connect
    from client_sdk.protocol import mint_token

    now = time.time()
    gate = asyncio.Semaphore(64)

    async def join(idx: int, room: str, edge: int, _seat: int) -> Any:
        async with gate:
            tok = mint_token(secret, f"p{idx}", "player", ["arena-*"], now=now, ttl=3600)
            order = urls[edge:] + urls[:edge] if chaos else [urls[edge]]
            c = await connect(order, tok, name=f"bench-{idx}", backoff_base=0.2,
                              backoff_cap=2.0, rtt_probe_interval=None)
            return c, await c.join_game(room, {"name": f"p{idx}"}, timeout=60)

    # The first player of each room joins first: its edge becomes the room's owner.
    firsts = [s for s in specs if s[3] == 0]
    rest = [s for s in specs if s[3] != 0]
    joined = [await join(*s) for s in firsts]
    joined += await asyncio.gather(*(join(*s) for s in rest))
    ready.put(len(joined))
    counts = {"inputs": 0, "acked": 0}
    pending: set[asyncio.Future[Any]] = set()
    sent = [0] * len(joined)
    acked = [0] * len(joined)
    frames: list[list[tuple[float, int, str]]] = [[] for _ in joined]

    async def watch(i: int, c: Any, game: Any) -> None:
        async for _version in game.changes():
            frames[i].append((time.time(), game.tick, c.edge_id))

    watchers = [asyncio.get_running_loop().create_task(watch(i, c, g))
                for i, (c, g) in enumerate(joined)] if chaos else []

    def settled(i: int, fut: asyncio.Future[Any]) -> None:
        pending.discard(fut)
        if not fut.cancelled() and fut.exception() is None:
            counts["acked"] += 1
            acked[i] += 1

    async def steer(i: int, game: Any) -> None:
        rng = random.Random(i)
        end = time.perf_counter() + run_for
        await asyncio.sleep(rng.random() / input_hz)
        while time.perf_counter() < end:
            fut = game.send_nowait("move", {"dx": round(rng.uniform(-1, 1), 2),
                                            "dy": round(rng.uniform(-1, 1), 2)})
            counts["inputs"] += 1
            sent[i] += 1
            if fut is not None:
                pending.add(fut)
                fut.add_done_callback(lambda f: settled(i, f))
            await asyncio.sleep(1.0 / input_hz)

    await asyncio.gather(*(steer(i, g) for i, (_c, g) in enumerate(joined)))
    # The last acknowledgements (bounded: a busy host may take a while).
    if pending:
        await asyncio.wait(set(pending), timeout=30)
    out: dict[str, Any] = {**counts, "resyncs": sum(g.resyncs for _c, g in joined),
                           "rooms": {}, "lost": 0, "twice": 0}
    if chaos:
        await asyncio.sleep(1.5)  # the last patches (the avatars' input counts)
        for t in watchers:
            t.cancel()
        out.update(_chaos_figures(chaos, specs, joined, frames, sent, acked))
    for c, _g in joined:
        with contextlib.suppress(Exception):
            await c.close()
    return out



def _chaos_figures(chaos: tuple[str, Any], specs: list[tuple[int, str, int, int]],
                   joined: list[Any], frames: list[list[tuple[float, int, str]]],
                   sent: list[int], acked: list[int]) -> dict[str, Any]:
    """Per room, in the 5 s after the event: the worst silence seen by players that
    stayed on their edge (``stay``) and by players that were on the victim and moved
    (``moved``), when the room ticked again and the ticks run again, as the stayers saw
    it (:func:`edge_node.local.timeline.around`); per player: inputs lost
    (acknowledged, not taken) and taken twice."""
    victim, event_at = chaos
    t_e = float(event_at.value)
    rooms: dict[str, dict[str, float]] = {}
    lost = twice = 0
    for i, ((_idx, room, _edge, _seat), (c, g)) in enumerate(zip(specs, joined, strict=True)):
        took = int(g.state.get("players", {}).get(c.session_id, {}).get("inputs", 0))
        lost += max(0, acked[i] - took)
        twice += max(0, took - sent[i])
        before = [f for f in frames[i] if f[0] <= t_e]
        seen = around([(t, k) for t, k, _e in frames[i]], t_e, t_e + 5.0)
        if not t_e or not before or seen is None:
            continue
        who = "moved" if before[-1][2] == victim else "stay"
        r = rooms.setdefault(room, {"stay_gap_s": 0.0, "moved_gap_s": 0.0, "again_s": 0.0,
                                    "rerun": 0.0, "gap_before_s": 0.0})
        r[f"{who}_gap_s"] = max(r[f"{who}_gap_s"], seen[0])
        calm = around([(t, k) for t, k, _e in frames[i] if t >= t_e - 5.0], t_e - 4.8,
                      t_e - 0.2)  # the baseline: the same player before the hit
        if calm is not None:
            r["gap_before_s"] = max(r["gap_before_s"], calm[0])
        if who == "stay":
            r["again_s"] = max(r["again_s"], seen[1])
            r["rerun"] = max(r["rerun"], float(seen[2]))
    return {"rooms": rooms, "lost": lost, "twice": twice}
