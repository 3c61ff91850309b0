"""The load-generator process of ``bench games``: SDK clients playing the arena."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from typing import Any

__all__ = ["worker_main"]


def worker_main(urls: list[str], secret: bytes, specs: list[tuple[int, str, int, int]],
                input_hz: float, run_for: float, ready: Any, results: Any,
                cpus: set[int] | None) -> None:
    """Join every ``(index, room, edge, seat)`` in ``specs``, put the number joined on
    ``ready``, steer for ``run_for`` seconds, then put the counts on ``results``."""
    import os

    if cpus:
        os.sched_setaffinity(0, cpus)
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
    try:
        out = asyncio.run(_play(urls, secret, specs, input_hz, run_for, ready))
    except Exception as exc:  # reported, not raised: the parent waits on the queue
        ready.put(0)
        out = {"inputs": 0, "acked": 0, "resyncs": 0, "error": f"load generator: {exc!r}"}
    results.put(out)


async def _play(urls: list[str], secret: bytes, specs: list[tuple[int, str, int, int]],
                input_hz: float, run_for: float, ready: Any) -> dict[str, Any]:
    from client_sdk import connect
    from client_sdk.protocol import mint_token

    now = time.time()
    gate = asyncio.Semaphore(64)

    async def join(idx: int, room: str, edge: int, _seat: int) -> Any:
        async with gate:
            tok = mint_token(secret, f"p{idx}", "player", ["arena-*"], now=now, ttl=3600)
            c = await connect([urls[edge]], tok, name=f"bench-{idx}")
            return c, await c.join_game(room, {"name": f"p{idx}"}, timeout=60)

    # The first player of each room joins first: its edge becomes the room's owner.
    firsts = [s for s in specs if s[3] == 0]
    rest = [s for s in specs if s[3] != 0]
    joined = [await join(*s) for s in firsts]
    joined += await asyncio.gather(*(join(*s) for s in rest))
    ready.put(len(joined))
    counts = {"inputs": 0, "acked": 0}
    pending: set[asyncio.Future[Any]] = set()

    def settled(fut: asyncio.Future[Any]) -> None:
        pending.discard(fut)
        if not fut.cancelled() and fut.exception() is None:
            counts["acked"] += 1

    async def steer(i: int, game: Any) -> None:
        rng = random.Random(i)
        end = time.perf_counter() + run_for
        await asyncio.sleep(rng.random() / input_hz)
        while time.perf_counter() < end:
            fut = game.send_nowait("move", {"dx": round(rng.uniform(-1, 1), 2),
                                            "dy": round(rng.uniform(-1, 1), 2)})
            counts["inputs"] += 1
            if fut is not None:
                pending.add(fut)
                fut.add_done_callback(settled)
            await asyncio.sleep(1.0 / input_hz)

    await asyncio.gather(*(steer(i, g) for i, (_c, g) in enumerate(joined)))
    # The last acknowledgements (bounded: a busy host may take a while).
    if pending:
        await asyncio.wait(set(pending), timeout=30)
    out = {**counts, "resyncs": sum(g.resyncs for _c, g in joined)}
    for c, _g in joined:
        with contextlib.suppress(Exception):
            await c.close()
    return out

