"""Edge functions through real edge processes and a real Redis, over WebSocket and QUIC:
RPC results with the caller's identity, every typed error, publishes that are durable
and readable from another edge, bounds (time, concurrency, size) that leave the edge
and its other clients running, the counts in ``/metrics``, and the event handlers
(window → device command, durable message, presence).

The functions are ``tests/integration/edge_functions_app.py``; the same host runs
against an in-memory hub in ``tests/unit/test_functions.py``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgpack
import pytest

from client_sdk import (
    Client,
    ForbiddenError,
    FunctionBusyError,
    FunctionError,
    FunctionFailedError,
    FunctionTimeoutError,
    ServerError,
    UnknownFunctionError,
)
from client_sdk.device import Device
from client_sdk.protocol import Command, ErrorCode, Message, mint_token
from edge_node.local.launch import EdgeProcess
from edge_node.local.scrape import scrape_metrics
from tests.helpers import SECRET, eventually, uid

pytestmark = pytest.mark.timeout(90)

#: Every test here runs over WebSocket and over QUIC (see tests/conftest.py).
TRANSPORTS = ("ws", "quic")

APP = ["--functions", "tests.integration.edge_functions_app:functions"]
ClientFactory = Callable[..., Awaitable[Client]]


def rpc_token(subject: str, rpc: list[str] | None = None, *, kind: str = "player",
              publish: list[str] | None = None, info: dict[str, Any] | None = None) -> str:
    """A token whose ``rpc`` claim is ``rpc`` (None: no claim, so no function)."""
    return mint_token(SECRET, subject, kind, ["*"], publish=publish, rpc=rpc, info=info,
                      now=time.time(), ttl=600)


def calls(edge: EdgeProcess, function: str, outcome: str) -> float:
    """``edge_function_calls_total`` for one function and outcome."""
    m = scrape_metrics(edge.http_url)
    return m.get(f'edge_function_calls_total{{function="{function}",outcome="{outcome}"}}',
                 0.0)


async def test_rpc_answers_with_the_callers_identity_and_typed_errors(
        edge_factory: Callable[..., EdgeProcess], clients: ClientFactory) -> None:
    e = edge_factory(uid("fa"), *APP)
    c = await clients(e.url, rpc_token("ada", ["*"], info={"team": "red"}))
    got = await c.rpc("echo", {"n": [1, 2.5, "x", b"\x00"]}, timeout=5.0)
    assert got == {"args": {"n": [1, 2.5, "x", b"\x00"]}, "subject": "ada",
                   "kind": "player", "edge": c.edge_id, "info": {"team": "red"}}
    assert await c.rpc("echo") == {"args": None, "subject": "ada", "kind": "player",
                                   "edge": c.edge_id, "info": {"team": "red"}}

    with pytest.raises(FunctionError) as app:
        await c.rpc("player.get", "zed")
    assert (app.value.kind, app.value.details) == ("no_such_player", {"player": "zed"})
    with pytest.raises(UnknownFunctionError) as unknown:
        await c.rpc("no.such.function")
    assert unknown.value.code == ErrorCode.UNKNOWN_FUNCTION
    with pytest.raises(FunctionFailedError):
        await c.rpc("crash")
    with pytest.raises(FunctionFailedError):  # a result over --function-max-bytes
        await c.rpc("huge", 40_000)
    with pytest.raises(ServerError) as big:  # arguments over --function-max-bytes
        await c.rpc("echo", b"x" * 40_000)
    assert big.value.code == ErrorCode.FRAME_TOO_LARGE

    # The token names what its holder may call; without the claim, nothing.
    only_echo = await clients(e.url, rpc_token("bo", ["echo"]))
    assert (await only_echo.rpc("echo", 1))["subject"] == "bo"
    with pytest.raises(ForbiddenError):
        await only_echo.rpc("board.top", {"room": "r"})
    no_claim = await clients(e.url, rpc_token("cy", None))
    with pytest.raises(ForbiddenError):
        await no_claim.rpc("echo")

    # None of it hurt the connection: the same client still calls.
    assert (await c.rpc("echo", "again"))["args"] == "again"
    assert calls(e, "echo", "ok") >= 4
    assert calls(e, "player.get", "app_error") == 1
    assert calls(e, "crash", "failed") == 1
    assert calls(e, "board.top", "forbidden") == 1
    assert calls(e, "(unknown)", "unknown") == 1


async def test_rpc_publishes_are_durable_and_any_edge_reads_them(
        edge_factory: Callable[..., EdgeProcess], clients: ClientFactory) -> None:
    e1 = edge_factory(uid("fb"), *APP)
    e2 = edge_factory(uid("fc"), *APP)
    room = uid("board")
    watcher = await clients(e2.url, rpc_token("wat", ["board.*"]))
    seen: list[Message] = []
    await watcher.join(room, on_message=seen.append)
    writer = await clients(e1.url, rpc_token("ada", ["board.*"], publish=["board*"]))
    other = await clients(e1.url, rpc_token("bo", ["board.*"], publish=["board*"]))
    positions = [await writer.rpc("board.post", {"room": room, "score": s})
                 for s in (3, 9, 5)]
    positions.append(await other.rpc("board.post", {"room": room, "score": 7}))
    assert positions == sorted(positions) and len({tuple(p) for p in positions}) == 4

    async def all_seen() -> bool:
        return len(seen) == 4
    await eventually(all_seen, timeout=5.0, what="the watcher on the other edge sees 4")
    assert {m.sender for m in seen} == {"fn:board.post"}
    assert [msgpack.unpackb(m.payload)["score"] for m in seen] == [3, 9, 5, 7]
    # Durable before the call returned: another edge reads them from the store at once.
    assert await watcher.rpc("board.top", {"room": room, "n": 5}) == [["ada", 9],
                                                                     ["bo", 7]]
    # The function acts with the caller's rights: the token may not publish there.
    with pytest.raises(FunctionError) as refused:
        await writer.rpc("board.post", {"room": uid("secret"), "score": 1})
    assert (refused.value.kind, refused.value.details) == ("refused", {"code": 4403})


async def test_bounds_leave_the_edge_and_other_clients_running(
        edge_factory: Callable[..., EdgeProcess], clients: ClientFactory) -> None:
    e = edge_factory(uid("fd"), *APP, "--function-client-concurrency", "2")
    c = await clients(e.url, rpc_token("ada", ["*"]))
    bystander = await clients(e.url, rpc_token("bo", ["*"]))
    room = uid("calm")
    await bystander.join(room)

    with pytest.raises(FunctionTimeoutError):  # slow's own bound is 0.3 s
        await c.rpc("slow", 30)

    # Two calls in flight from one connection; a third is refused at once, not queued.
    held = [asyncio.ensure_future(c.rpc("hold", 1.5)) for _ in range(2)]
    await asyncio.sleep(0.2)
    with pytest.raises(FunctionBusyError):
        await c.rpc("echo")
    assert (await bystander.rpc("echo", 1))["args"] == 1  # another client is not bounded
    assert await asyncio.gather(*held) == ["held", "held"]
    assert (await c.rpc("echo", 2))["args"] == 2  # the slots came back

    # A blocking plain def runs off the loop: the edge serves others while it sleeps.
    blocked = asyncio.ensure_future(c.rpc("blocking", 2.0))
    await asyncio.sleep(0.2)
    await bystander.publish(room, b"still here")
    assert (await bystander.rpc("echo", 3))["args"] == 3
    assert not blocked.done(), "the loop answered while the thread was still blocked"
    assert await blocked == "unblocked"

    assert calls(e, "slow", "timeout") == 1
    assert calls(e, "echo", "busy") == 1
    assert calls(e, "hold", "ok") == 2 and calls(e, "blocking", "ok") == 1


async def test_a_window_over_threshold_commands_the_device(
        edge_factory: Callable[..., EdgeProcess]) -> None:
    e = edge_factory(uid("fe"), *APP, "--iot-window-ms", "200", "--iot-grace-ms", "100")
    device = uid("fn-dev")
    tok = mint_token(SECRET, device, "device", [device], now=time.time(), ttl=600)
    d = await Device.connect(e.url, tok)
    got: list[Command] = []

    def on_command(cmd: Command) -> dict[str, Any]:
        got.append(cmd)
        return {"ok": True}
    d.on_command = on_command
    try:
        # All ten samples in one 200 ms window (aligned: a window boundary inside the
        # ten milliseconds split them in two, 1 run in 20), already closed by the clock.
        start = int(time.time() * 1000) // 200 * 200 - 400
        for i in range(10):  # mean 84.5 in the window
            d.send_telemetry("temp", 80.0 + i, start + i)
        await d.flush()
        assert await d.wait_acked(5.0)

        async def commanded() -> bool:
            return bool(got)
        await eventually(commanded, timeout=10.0, what="the handler's fan command")
        assert got[0].name == "fan" and got[0].args["speed"] == "max"
        assert got[0].args["mean"] == pytest.approx(84.5)
        assert calls(e, "window:too_hot", "ok") >= 1
    finally:
        await d.close()


async def test_message_and_presence_handlers_run_once_per_event(
        edge_factory: Callable[..., EdgeProcess], clients: ClientFactory,
        token: Callable[..., str]) -> None:
    e1 = edge_factory(uid("ff"), *APP)
    e2 = edge_factory(uid("fg"), *APP)
    chat, lobby = uid("chat"), uid("lobby")
    a = await clients(e1.url, token("ada"))  # e1 owns the chat room
    b = await clients(e2.url, token("bo"))
    log: list[Message] = []
    seen: list[Message] = []
    await a.join(f"log-{chat}", on_message=log.append)
    await a.join(f"seen-{lobby}", on_message=seen.append)
    await a.join(chat)
    await b.join(chat)
    for i in range(3):
        await b.publish(chat, f"hi {i}".encode())  # through e2, to the owner e1

    async def logged() -> bool:
        return len(log) == 3
    await eventually(logged, timeout=5.0, what="one audit entry per chat message")
    entries = [msgpack.unpackb(m.payload) for m in log]
    assert [p["sender"] for p in entries] == [b.session_id] * 3
    assert [p["pos"][1] for p in entries] == sorted(p["pos"][1] for p in entries)

    await b.join(lobby)  # on e2: its handler runs there
    await b.leave(lobby)

    async def greeted() -> bool:
        return len(seen) == 2
    await eventually(greeted, timeout=5.0, what="a join and a leave")
    assert [(p["subject"], p["joined"]) for p in map(msgpack.unpackb,
            (m.payload for m in seen))] == [("bo", True), ("bo", False)]
    await asyncio.sleep(0.3)  # nothing more comes: each event ran its handler once
    assert len(log) == 3 and len(seen) == 2
