"""Functions at the edge below the process: registration, loading, call slots, and the
host running RPCs and event handlers against an in-memory hub with fake callers.

No sockets, no Redis: tests/integration/test_edge_functions.py runs the same through real
edges and a real Redis.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import msgpack
import pytest

from client_sdk.protocol import (
    Ack,
    Claims,
    Error,
    ErrorCode,
    MessageType,
    Rpc,
    RpcResult,
    decode,
    encode,
    mint_token,
    pack_value,
    unpack_value,
    verify_token,
)
from edge_node.fanout.hub import Hub
from edge_node.functions import Functions, RpcError
from edge_node.functions.context import Event, FunctionSender, PublishRefused
from edge_node.functions.host import FunctionHost
from edge_node.functions.limits import CallLimits, CallSlots
from edge_node.functions.loader import FunctionSpecError, load_functions
from edge_node.runtime.metrics import EdgeMetrics
from edge_node.store.memory import MemoryBackend, MemoryRoomStore
from tests.unit.test_hub import FakeSession, settle


class FakeStats:
    def __init__(self) -> None:
        self.errors: Counter[int] = Counter()


class Caller(FakeSession):
    """A client session as the function host sees it."""

    def __init__(self, sid: str, claims: Claims) -> None:
        super().__init__(sid)
        self.claims = claims
        self.stats = FakeStats()

    def answers(self) -> list[Any]:
        return [decode(b) for b in self.out.bodies]


def claims(rpc: tuple[str, ...] = ("*",), rooms: tuple[str, ...] = ("*",),
           kind: str = "player", info: dict[str, Any] | None = None) -> Claims:
    return Claims("ada", kind, rooms, rooms, 2e9, None, rpc, info)


def make_hub() -> Hub:
    h = Hub("a", EdgeMetrics("a"))
    h.store = MemoryRoomStore(MemoryBackend(), "a", h, h.stats)
    return h


def host(fns: Functions, **limits: Any) -> FunctionHost:
    h = make_hub()
    fh = FunctionHost(fns, h, CallLimits(**limits))
    h.functions = fh
    return fh


async def answer(c: Caller, n: int = 1) -> Any:
    """The caller's n-th answer, waiting (bounded) for the background call."""
    for _ in range(500):
        if len(c.out.bodies) >= n:
            return c.answers()[n - 1]
        await asyncio.sleep(0.002)
    raise AssertionError("no answer")


# -- registration and loading -----------------------------------------------------------


def test_registration_checks_names_triggers_and_timeouts() -> None:
    f = Functions()

    @f.rpc("a.b")
    async def ab(ctx: Any, args: Any) -> None: ...

    with pytest.raises(ValueError, match="twice"):
        f.rpc("a.b")(ab)
    with pytest.raises(ValueError, match="bad RPC name"):
        f.rpc("has space")(ab)
    with pytest.raises(ValueError, match="unknown trigger"):
        f.on("nope")
    with pytest.raises(ValueError, match="timeout"):
        f.rpc("x", timeout=0)

    def plain(ctx: Any, args: Any) -> None: ...

    f.rpc()(plain)
    assert f.rpcs["a.b"].threaded is False and f.rpcs["plain"].threaded is True


def _module(tmp_path: Path, name: str, text: str) -> None:
    (tmp_path / f"{name}.py").write_text(text)


def test_loader_merges_specs_and_says_what_is_wrong_in_one_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(tmp_path))
    _module(tmp_path, "fn_one", "from edge_node.functions import Functions\n"
            "functions = Functions()\n@functions.rpc('one')\nasync def one(c, a): return 1\n"
            "not_functions = 3\n")
    _module(tmp_path, "fn_two", "from edge_node.functions import Functions\n"
            "functions = Functions()\n@functions.rpc('one')\nasync def one(c, a): return 2\n"
            "@functions.rpc('two')\nasync def two(c, a): return 2\n")
    _module(tmp_path, "fn_three", "from edge_node.functions import Functions\n"
            "functions = Functions()\n@functions.on_message('')\nasync def m(c, e): pass\n")
    got = load_functions(["fn_one:functions"], env=" , ", entry_points=False)
    assert set(got.rpcs) == {"one"}
    cases = {"fn_one": "expected module:attr", "nope_missing:functions": "cannot import",
             "fn_one:absent": "has no", "fn_one:not_functions": "not a Functions",
             "fn_three:functions": "must not be empty"}
    for spec, text in cases.items():
        with pytest.raises(FunctionSpecError, match=text) as info:
            load_functions([spec], entry_points=False)
        assert "\n" not in str(info.value)
    with pytest.raises(FunctionSpecError, match="registered twice"):
        load_functions(["fn_one:functions"], env="fn_two:functions", entry_points=False)


def test_tokens_carry_rpc_patterns_and_info() -> None:
    tok = mint_token(b"k" * 32, "ada", rpc=["leaderboard.*"], info={"team": "red"}, now=0)
    c = verify_token(tok, [b"k" * 32], now=1)
    assert c.may_call("leaderboard.top") and not c.may_call("admin.kick")
    assert c.info == {"team": "red"}
    bare = verify_token(mint_token(b"k" * 32, "bo", now=0), [b"k" * 32], now=1)
    assert bare.rpc == () and not bare.may_call("anything") and bare.info is None


# -- slots ------------------------------------------------------------------------------


def test_call_slots_bound_the_edge_and_each_client() -> None:
    s = CallSlots(CallLimits(per_edge=3, per_client=2, per_edge_events=1))
    assert s.acquire("x") is None and s.acquire("x") is None
    assert "per connection" in (s.acquire("x") or "")
    assert s.acquire("y") is None
    assert "running on this edge" in (s.acquire("z") or "")
    s.release("x")
    assert s.acquire("z") is None
    for who in ("x", "y", "z"):
        s.release(who)
    assert s.in_flight == 0 and s.by_client == {}
    assert s.acquire_event() and not s.acquire_event()
    s.release_event()
    assert s.acquire_event()
    with pytest.raises(ValueError):
        CallLimits(per_client=0)


def test_function_sender_turns_ack_and_error_into_results() -> None:
    async def go() -> None:
        s = FunctionSender("f")
        r1, f1 = s.expect()
        r2, f2 = s.expect()
        s.send(encode(Ack(r1, 3, 9)))
        s.send(encode(Error(r2, 4403, "no")))
        s.send(b"\xc1garbage")  # ignored
        assert await f1 == (3, 9)
        with pytest.raises(PublishRefused):
            await f2
    asyncio.run(go())


# -- the host: RPCs ---------------------------------------------------------------------


def _functions() -> Functions:
    f = Functions()

    @f.rpc("echo")
    async def echo(ctx: Any, args: Any) -> Any:
        return {"args": args, "who": ctx.subject, "info": ctx.info}

    @f.rpc("refuse")
    async def refuse(ctx: Any, args: Any) -> Any:
        raise RpcError("no_such_player", "zed is not here", {"player": "zed"})

    @f.rpc("crash")
    async def crash(ctx: Any, args: Any) -> Any:
        raise KeyError("bug")

    @f.rpc("hang", timeout=0.05)
    async def hang(ctx: Any, args: Any) -> Any:
        await asyncio.Event().wait()

    @f.rpc("big")
    async def big(ctx: Any, args: Any) -> Any:
        return b"x" * 5000

    @f.rpc("odd")
    async def odd(ctx: Any, args: Any) -> Any:
        return object()

    @f.rpc("thread")
    def thread(ctx: Any, args: Any) -> Any:
        return threading.current_thread().name

    @f.rpc("say")
    async def say(ctx: Any, args: Any) -> Any:
        return list(await ctx.publish(args["room"], {"text": args["text"]}))

    return f


async def test_a_call_answers_with_the_value_the_error_or_the_failure() -> None:
    fh = host(_functions(), max_bytes=1024)
    c = Caller("s1", claims(info={"team": "red"}))
    fh.call(c, Rpc(1, "echo", pack_value([1, "two"])))
    r = await answer(c, 1)
    assert isinstance(r, RpcResult) and r.req_id == 1 and r.error == ""
    assert unpack_value(r.value) == {"args": [1, "two"], "who": "ada", "info": {"team": "red"}}
    fh.call(c, Rpc(2, "refuse"))
    r = await answer(c, 2)
    assert (r.req_id, r.error, unpack_value(r.value)) == (2, "no_such_player",
                                                          {"player": "zed"})
    expected = {3: ("crash", ErrorCode.FUNCTION_FAILED), 4: ("hang", ErrorCode.FUNCTION_TIMEOUT),
                5: ("big", ErrorCode.FUNCTION_FAILED), 6: ("odd", ErrorCode.FUNCTION_FAILED)}
    for n, (name, code) in expected.items():
        fh.call(c, Rpc(n, name))
        r = await answer(c, n)
        assert isinstance(r, Error) and (r.req_id, r.code) == (n, code), (name, r)
    fh.call(c, Rpc(7, "thread"))
    r = await answer(c, 7)
    assert unpack_value(r.value).startswith("edge-fn")
    assert fh.slots.in_flight == 0
    assert fh.tally[("echo", "ok")] == 1 and fh.tally[("crash", "failed")] == 1
    assert fh.tally[("hang", "timeout")] == 1 and fh.tally[("refuse", "app_error")] == 1
    fh.close()


async def test_calls_are_refused_at_once_when_unknown_forbidden_bad_or_too_many() -> None:
    f = _functions()
    gate = asyncio.Event()

    @f.rpc("wait")
    async def wait(ctx: Any, args: Any) -> Any:
        await gate.wait()
        return "done"

    fh = host(f, per_client=2, per_edge=3, max_bytes=64)
    c = Caller("s1", claims(rpc=("echo", "wait")))
    fh.call(c, Rpc(1, "missing"))
    fh.call(c, Rpc(2, "refuse"))
    fh.call(c, Rpc(3, "echo", pack_value("x" * 100)))
    fh.call(c, Rpc(4, "echo", b"\xc1"))
    codes = [(a.req_id, a.code) for a in c.answers()]
    assert codes == [(1, ErrorCode.UNKNOWN_FUNCTION), (2, ErrorCode.FORBIDDEN),
                     (3, ErrorCode.FRAME_TOO_LARGE), (4, ErrorCode.BAD_REQUEST)]
    fh.call(c, Rpc(5, "wait"))
    fh.call(c, Rpc(6, "wait"))
    fh.call(c, Rpc(7, "wait"))  # the third from one client
    other = Caller("s2", claims())
    fh.call(other, Rpc(1, "wait"))
    fh.call(other, Rpc(2, "wait"))  # the fourth on the edge
    assert (c.answers()[-1].req_id, c.answers()[-1].code) == (7, ErrorCode.FUNCTION_BUSY)
    assert other.answers()[-1].code == ErrorCode.FUNCTION_BUSY
    gate.set()
    assert unpack_value((await answer(c, 6)).value) == "done"
    await answer(other, 2)
    assert fh.slots.in_flight == 0 and fh.tally[("(unknown)", "unknown")] == 1
    fh.close()


async def test_a_caller_gone_before_the_answer_gets_nothing_and_frees_its_slot() -> None:
    f = Functions()
    gate = asyncio.Event()

    @f.rpc("slow")
    async def slow(ctx: Any, args: Any) -> Any:
        await gate.wait()
        return 1

    fh = host(f)
    c = Caller("s1", claims())
    fh.call(c, Rpc(1, "slow"))
    c.closed = True
    gate.set()
    for _ in range(100):
        await asyncio.sleep(0.001)
    assert c.out.bodies == [] and fh.slots.in_flight == 0
    fh.close()


async def test_a_function_publishes_with_the_callers_rights_and_durably() -> None:
    fh = host(_functions())
    reader = FakeSession("r")
    await fh.hub.join(reader, "chat", 0)
    c = Caller("s1", claims(rooms=("chat",)))
    fh.call(c, Rpc(1, "say", pack_value({"room": "chat", "text": "hi"})))
    r = await answer(c, 1)
    assert isinstance(r, RpcResult) and r.error == "" and unpack_value(r.value)[1] >= 1
    [(room, sender, payload)] = [(f[1], f[4], f[5]) for f in reader.frames(MessageType.MESSAGE)]
    assert (room, sender, msgpack.unpackb(payload)) == ("chat", "fn:say", {"text": "hi"})
    fh.call(c, Rpc(2, "say", pack_value({"room": "secret", "text": "x"})))
    r = await answer(c, 2)
    assert isinstance(r, Error) and r.code == ErrorCode.FUNCTION_FAILED
    assert len(reader.frames(MessageType.MESSAGE)) == 1
    fh.close()


# -- the host: events -------------------------------------------------------------------


async def test_events_reach_matching_handlers_and_a_flood_is_dropped_and_counted() -> None:
    f = Functions()
    seen: list[Event] = []
    gate = asyncio.Event()

    @f.on_presence("lobby-*")
    async def on_join(ctx: Any, event: Event) -> None:
        seen.append(event)

    @f.on_message("chat")
    async def on_chat(ctx: Any, event: Event) -> None:
        await gate.wait()
        seen.append(event)

    @f.on_alert()
    async def broken(ctx: Any, event: Event) -> None:
        raise RuntimeError("handler bug")

    fh = host(f, per_edge_events=2)
    s = FakeSession("p1")
    await fh.hub.join(s, "lobby-1", 0)
    await fh.hub.join(s, "other", 0)
    await settle()
    assert [(e.trigger, e.key, e.body["joined"]) for e in seen] == [
        ("presence", "lobby-1", True)]
    fh.emit("alert", "dev-1", {"state": "raised"})
    await settle()
    assert fh.tally[("alert:broken", "failed")] == 1 and fh.slots.events_in_flight == 0
    await fh.hub.join(s, "chat", 0)
    for i in range(4):  # the message handler blocks: two run, two are dropped
        fh.hub.publish(s, "chat", b"m%d" % i, True, 0, 0)
    await settle()
    assert fh.events_dropped == 2 and fh.tally[("message:on_chat", "dropped")] == 2
    gate.set()
    await settle()
    bodies = [e.body for e in seen if e.trigger == "message"]
    assert [b["payload"] for b in bodies] == [b"m0", b"m1"]
    assert [b["pos"][1] for b in bodies] == [1, 2] and bodies[0]["sender"] == "p1"
    assert fh.slots.events_in_flight == 0
    fh.close()


async def test_no_handler_for_a_room_leaves_its_machine_without_uplink_commands() -> None:
    f = Functions()

    @f.on_message("watched-*")
    async def h(ctx: Any, event: Event) -> None: ...

    fh = host(f)
    s = FakeSession("p1")
    await fh.hub.join(s, "watched-1", 0)
    await fh.hub.join(s, "plain", 0)
    assert fh.hub.rooms["watched-1"].machine.to_origin is True
    assert fh.hub.rooms["plain"].machine.to_origin is False
    fh.close()
