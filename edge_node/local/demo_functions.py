"""Functions in ``edge-relay demo``: players calling the leaderboard RPCs of
:mod:`edge_node.local.demo_app` on every edge, and a local webhook receiver the origin
POSTs its alert events to.

- :class:`RpcCallers`: a few of the demo's players submit a score once a second
  (``score.submit``; one in ten is negative on purpose, an application error), and read
  the board every other second (``leaderboard.top``), through the kill and the drain.
  A call whose connection dropped is *interrupted* (never re-sent: the function may or
  may not have run).  At the end one read of the whole board is checked against what
  was acknowledged: each player's best score on the board is at least its best
  acknowledged score and at most its best submitted one (an interrupted submit may have
  been stored).
- :class:`WebhookReceiver`: an HTTP server on loopback, in a thread, that checks each
  request's signature (HMAC, as a receiver must) and counts deliveries and distinct
  event ids (delivery is at least once).
"""

from __future__ import annotations

import asyncio
import json
import random
import secrets
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from client_sdk import Client, FunctionError
from client_sdk.errors import (
    ClientClosedError,
    ConnectionLostError,
    EdgeRelayError,
    RequestTimeoutError,
)
from edge_node.local.scrape import LABELS
from origin.webhooks.signing import EVENT_ID_HEADER, SIGNATURE_HEADER, verify

__all__ = ["RpcCallers", "WebhookReceiver", "function_metrics", "functions_ok",
           "FUNCTIONS_SPEC", "RPC_PATTERNS"]

#: The edges' ``--functions`` for the demo.
FUNCTIONS_SPEC = "edge_node.local.demo_app:functions"
#: What the demo's player tokens may call.
RPC_PATTERNS = ["score.submit", "leaderboard.*"]
_INTERRUPTED = (ConnectionLostError, ClientClosedError, RequestTimeoutError)


@dataclass
class _Caller:
    client: Client
    subject: str
    rng: random.Random
    best_acked: int = -1
    best_sent: int = -1


@dataclass
class _Counts:
    calls: int = 0
    ok: int = 0
    app_errors: int = 0
    interrupted: int = 0
    failed: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    failures: dict[str, int] = field(default_factory=dict)


class RpcCallers:
    """``await run(duration)`` then ``await summary()``; ``room`` is the board room
    (the players' tokens must allow it and :data:`RPC_PATTERNS`)."""

    def __init__(self, callers: list[tuple[Client, str]], room: str, seed: int = 11) -> None:
        self.room = room
        self.callers = [_Caller(c, s, random.Random(seed + i))
                        for i, (c, s) in enumerate(callers)]
        self.counts = _Counts()

    async def _call(self, c: _Caller, name: str, args: Any) -> tuple[bool, Any]:
        """One call, counted; ``(answered, value)``.  Raises nothing."""
        n = self.counts
        n.calls += 1
        t0 = time.perf_counter()
        try:
            value = await c.client.rpc(name, args, timeout=5.0)
        except FunctionError:
            n.app_errors += 1
            return True, None
        except _INTERRUPTED:
            n.interrupted += 1
            return False, None
        except EdgeRelayError as e:  # busy, timeout, failed: should not happen here
            n.failed += 1
            n.failures[type(e).__name__] = n.failures.get(type(e).__name__, 0) + 1
            return True, None
        n.ok += 1
        n.latencies_ms.append((time.perf_counter() - t0) * 1000)
        return True, value

    async def _one(self, c: _Caller, duration: float, start: float) -> None:
        k = 0
        phase = c.rng.random()  # spread the callers over each second
        while True:
            due = start + phase + k
            if due - start >= duration:
                return
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            if not c.client.connected:  # failing over: a call now would be interrupted
                k += 1
                continue
            score = c.rng.randint(0, 1000) if k % 10 != 9 else -1
            if score >= 0:
                c.best_sent = max(c.best_sent, score)
            answered, value = await self._call(c, "score.submit",
                                               {"room": self.room, "score": score})
            if answered and value is not None:
                c.best_acked = max(c.best_acked, score)
            if k % 2 == 1:
                await self._call(c, "leaderboard.top", {"room": self.room, "n": 3})
            k += 1

    async def run(self, duration: float) -> None:
        """Call for ``duration`` seconds (open loop, one submit per caller per second)."""
        start = time.perf_counter()
        await asyncio.gather(*(self._one(c, duration, start) for c in self.callers))

    async def summary(self) -> dict[str, Any]:
        """The ``functions.rpc`` and ``functions.leaderboard`` blocks."""
        n = self.counts
        lat = sorted(n.latencies_ms)
        board: list[list[Any]] | None = None
        for c in self.callers:  # any caller still connected reads the whole board
            if c.client.connected:
                _, board = await self._call(c, "leaderboard.top",
                                            {"room": self.room, "n": 1000})
                if board is not None:
                    break
        consistent = board is not None
        if board is not None:
            on_board = {str(who): int(score) for who, score in board}
            for c in self.callers:
                got = on_board.get(c.subject, -1)
                if not (c.best_acked <= got <= c.best_sent):
                    consistent = False
        return {
            "rpc": {"callers": len(self.callers), "calls": n.calls, "ok": n.ok,
                    "app_errors": n.app_errors, "interrupted": n.interrupted,
                    "failed": n.failed, "failures": dict(n.failures),
                    "p50_ms": round(lat[len(lat) // 2], 3) if lat else None,
                    "p99_ms": round(lat[min(len(lat) - 1, int(len(lat) * 0.99))], 3)
                    if lat else None},
            "leaderboard": {"room": self.room, "top": (board or [])[:3],
                            "players": len(board or []), "consistent": consistent},
        }


class WebhookReceiver:
    """A webhook receiver on 127.0.0.1 (a thread): ``start()`` → its URL; ``stop()``.

    It answers 204 to a correctly signed POST and 401 to any other; it counts deliveries,
    distinct event ids and event kinds."""

    def __init__(self) -> None:
        self.secret = secrets.token_hex(24)
        self.deliveries = 0
        self.bad_signatures = 0
        self.events: set[str] = set()
        self.kinds: dict[str, int] = {}
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self.url = ""

    def start(self) -> str:
        """Listen on a free loopback port; the URL to configure at the origin."""
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                ok = verify([receiver.secret.encode()], body,
                            self.headers.get(SIGNATURE_HEADER, ""), time.time())
                receiver._record(ok, self.headers.get(EVENT_ID_HEADER, ""), body)
                self.send_response(204 if ok else 401)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return  # quiet: the demo prints its own summary

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="webhook-receiver",
                         daemon=True).start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/hooks"
        return self.url

    def _record(self, ok: bool, event_id: str, body: bytes) -> None:
        with self._lock:
            self.deliveries += 1
            if not ok:
                self.bad_signatures += 1
                return
            self.events.add(event_id)
            try:
                kind = str(json.loads(body).get("kind", "?"))
            except (ValueError, AttributeError):
                kind = "?"
            self.kinds[kind] = self.kinds.get(kind, 0) + 1

    async def settle(self, at_least: int = 0, timeout: float = 10.0) -> None:
        """Wait (bounded by ``timeout``) until ``at_least`` distinct events came and then
        no delivery for half a second."""
        deadline = time.monotonic() + timeout
        last = -1
        while time.monotonic() < deadline and (self.deliveries != last
                                               or len(self.events) < at_least):
            last = self.deliveries
            await asyncio.sleep(0.5)

    def summary(self) -> dict[str, Any]:
        """The ``functions.webhook`` block."""
        with self._lock:
            return {"url": self.url, "deliveries": self.deliveries,
                    "events": len(self.events), "bad_signatures": self.bad_signatures,
                    "kinds": dict(sorted(self.kinds.items()))}

    def stop(self) -> None:
        """Stop listening."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def function_metrics(scrapes: list[dict[str, float]]) -> dict[str, dict[str, int]]:
    """``edge_function_calls_total`` summed over the edges still up: function → outcome
    → runs."""
    out: dict[str, dict[str, int]] = {}
    for m in scrapes:
        for name, value in m.items():
            if name.startswith("edge_function_calls_total{"):
                lab = dict(LABELS.findall(name))
                per = out.setdefault(lab.get("function", "?"), {})
                per[lab.get("outcome", "?")] = per.get(lab.get("outcome", "?"), 0) + int(value)
    return {k: dict(sorted(v.items())) for k, v in sorted(out.items())}


def functions_ok(f: dict[str, Any]) -> bool:
    """The demo's verdict on its functions: no call failed on the edge's side (busy,
    timed out, crashed), the board holds every acknowledged score and nothing it was
    not sent, and every webhook request the receiver got was correctly signed."""
    rpc = f.get("rpc") or {}
    board_ok = not rpc.get("callers") or bool((f.get("leaderboard") or {}).get("consistent"))
    return (rpc.get("failed", 0) == 0 and board_ok
            and (f.get("webhook") or {}).get("bad_signatures", 0) == 0)
