"""Functions the edge-function integration tests load into real edges
(``--functions tests.integration.edge_functions_app:functions``)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import msgpack

from edge_node.functions import Functions, RpcError
from edge_node.functions.context import CallContext, EventContext, PublishRefused

functions = Functions()


@functions.rpc("echo")
async def echo(ctx: CallContext, args: Any) -> dict[str, Any]:
    """The arguments back, with who called and where it ran."""
    return {"args": args, "subject": ctx.subject, "kind": ctx.kind, "edge": ctx.edge_id,
            "info": ctx.info}


@functions.rpc("board.post")
async def post(ctx: CallContext, args: dict[str, Any]) -> list[int]:
    """Publish a score to a board room with the caller's rights; its durable position."""
    try:
        return list(await ctx.publish(args["room"], {"by": ctx.subject,
                                                     "score": int(args["score"])}))
    except PublishRefused as e:
        raise RpcError("refused", str(e), {"code": e.code}) from e


@functions.rpc("board.top")
async def top(ctx: CallContext, args: dict[str, Any]) -> list[list[Any]]:
    """The best score of each player of a board room, best first (from its history)."""
    best: dict[str, int] = {}
    for m in await ctx.recent(args["room"], 1000):
        v = msgpack.unpackb(m.payload)
        if isinstance(v, dict) and "score" in v:
            best[v["by"]] = max(best.get(v["by"], v["score"]), v["score"])
    ranked = sorted(best.items(), key=lambda kv: (-kv[1], kv[0]))
    return [[who, score] for who, score in ranked[: int(args.get("n", 10))]]


@functions.rpc("player.get")
async def player_get(ctx: CallContext, args: Any) -> None:
    """Always an application error on purpose."""
    raise RpcError("no_such_player", "not here", {"player": args})


@functions.rpc("crash")
async def crash(ctx: CallContext, args: Any) -> None:
    """A bug: any exception but RpcError."""
    raise RuntimeError("a bug in the function")


@functions.rpc("slow", timeout=0.3)
async def slow(ctx: CallContext, args: Any) -> str:
    """Sleeps ``args`` seconds; its own bound is 0.3 s."""
    await asyncio.sleep(float(args))
    return "woke"


@functions.rpc("hold")
async def hold(ctx: CallContext, args: Any) -> str:
    """Sleeps ``args`` seconds (under the edge's default bound)."""
    await asyncio.sleep(float(args))
    return "held"


@functions.rpc("blocking")
def blocking(ctx: CallContext, args: Any) -> str:
    """A plain ``def``: runs in the edge's thread pool, so blocking is allowed."""
    time.sleep(float(args))
    return "unblocked"


@functions.rpc("huge")
async def huge(ctx: CallContext, args: Any) -> bytes:
    """A result over any sane ``--function-max-bytes``."""
    return b"x" * int(args)


@functions.on_window("fn-dev-*")
async def too_hot(ctx: EventContext, event: Any) -> None:
    """A device command when a closed window's mean temperature is over 80."""
    temp = event.body["metrics"].get("temp")
    if temp is not None and temp["mean"] > 80:
        await ctx.command(event.key, "fan", {"speed": "max", "mean": temp["mean"]})


@functions.on_message("chat-*")
async def audit(ctx: EventContext, event: Any) -> None:
    """Each durable chat message, once, logged to ``log-<room>`` with its position."""
    await ctx.publish(f"log-{event.key}", {"pos": event.body["pos"],
                                          "sender": event.body["sender"]})


@functions.on_presence("lobby-*")
async def greet(ctx: EventContext, event: Any) -> None:
    """Joins and leaves of a lobby, published to ``seen-<room>``."""
    await ctx.publish(f"seen-{event.key}", {"subject": event.body["subject"],
                                           "joined": event.body["joined"]})
