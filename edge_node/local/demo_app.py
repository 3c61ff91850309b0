"""The demo's edge functions, and the example of docs/functions.md: a leaderboard (two
RPCs) and a telemetry handler that commands a device to cool down.

Run them with ``--functions edge_node.local.demo_app:functions``.

- ``score.submit`` ``{"room": R, "score": N}``: publishes ``{"by": subject, "score": N}``
  to board room ``R`` with the caller's rights and returns its durable position
  ``[epoch, seq]``; a negative score is refused with the application error
  ``bad_score``.
- ``leaderboard.top`` ``{"room": R, "n": N}``: each player's best score in ``R`` (from
  the room's stored history, so any edge answers the same), best first, ``[[player,
  score], ...]``.
- on each closed telemetry window of a device ``demo-dev-*`` whose mean ``temp`` is over
  :data:`HOT` °C: the command ``fan`` ``{"speed": "max"}`` to that device.

None of them keeps state between calls: the board is the room's stream, and a device
that was commanded cools down, so its next windows stay under the threshold.
"""

from __future__ import annotations

from typing import Any

import msgpack

from edge_node.functions import Functions, RpcError
from edge_node.functions.context import CallContext, Event, EventContext

__all__ = ["functions", "HOT"]

#: A window mean over this (°C) commands the device's fan.
HOT = 29.0

functions = Functions()


@functions.rpc("score.submit")
async def submit(ctx: CallContext, args: Any) -> list[int]:
    """Publish the caller's score to the board room; its durable position."""
    if not isinstance(args, dict) or not isinstance(args.get("score"), int):
        raise RpcError("bad_args", "want {'room': str, 'score': int}")
    if args["score"] < 0:
        raise RpcError("bad_score", "a score is never negative", {"score": args["score"]})
    return list(await ctx.publish(str(args.get("room")), {"by": ctx.subject,
                                                         "score": args["score"]}))


@functions.rpc("leaderboard.top")
async def top(ctx: CallContext, args: Any) -> list[list[Any]]:
    """Best score per player in the board room, best first (ties by name)."""
    args = args if isinstance(args, dict) else {}
    best: dict[str, int] = {}
    for m in await ctx.recent(str(args.get("room")), 1000):
        try:
            v = msgpack.unpackb(m.payload)
        except ValueError:
            continue
        if isinstance(v, dict) and isinstance(v.get("score"), int):
            who = str(v.get("by"))
            best[who] = max(best.get(who, v["score"]), v["score"])
    ranked = sorted(best.items(), key=lambda kv: (-kv[1], kv[0]))
    return [[who, score] for who, score in ranked[: max(1, int(args.get("n", 10)))]]


@functions.on_window("demo-dev-*")
async def too_hot(ctx: EventContext, event: Event) -> None:
    """A window's mean temperature over :data:`HOT`: tell the device to run its fan."""
    temp = event.body.get("metrics", {}).get("temp")
    if temp is not None and temp.get("mean", 0.0) > HOT:
        await ctx.command(event.key, "fan", {"speed": "max", "mean": round(temp["mean"], 2)})
