"""``recv-path``: how many messages per second one core receives through the SDK.

A feeder process (``python -m bench.recv_path``; it speaks just enough of the edge
protocol: WELCOME, JOINED, then MESSAGE frames as fast as the sockets take them)
sends ``--messages`` messages to each of ``--clients`` connections. This process
receives them with ``--receiver``:

- ``sdk``: ``client_sdk.connect`` + ``join(on_message=...)`` (the SDK's whole
  receive path: its WebSocket link (:mod:`client_sdk.transport.ws`), codec,
  subscription, dedupe);
- ``websockets``: a plain ``websockets`` client and the SDK codec (no SDK
  dispatch): what the WebSocket library alone costs;
- ``lean``: :mod:`bench.lean_client` (asyncio Protocol, the SDK's frame parser and
  codec, messages handed over in ``data_received``: no reading task, no subscription).

It reports CPU per message and messages/s per core of the receiving process (its
CPU from the first to the last message), against the 120,000 msg/s target. With
``--rate`` (and ``--batch 1``) the feeder is paced, the receiver is not saturated and
each socket read brings one message: the per-wake-up cost that dominates a real
fanout load, where every subscriber socket gets one message per publish.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench import report
from bench.errors import BenchError, BenchFailure
from bench.procstats import can_pin, pin_pid, pin_self
from bench.validators import positive_float, positive_int

RECEIVERS = ("sdk", "websockets", "lean")
TARGET_PER_S = 120_000
ROOM = "recv-room"
ROWS = [
    ("messages received", "recv.messages"),
    ("receiver CPU µs per message", "recv.cpu_us_per_message"),
    ("messages/s per core (receiver)", "recv.per_core_per_s"),
    ("wall-clock messages/s", "recv.wall_per_s"),
    ("receiver CPU % of a core", "recv.cpu_percent"),
]


# --- the feeder (a child process) ------------------------------------------------------


async def _feed(port: int, clients: int, messages: int, payload_size: int,
                batch: int, rate: float) -> None:
    from websockets.asyncio.server import serve

    from client_sdk.protocol import Decoder, Joined, Welcome, encode, encode_message
    from client_sdk.transport.ws_frames import OP_BINARY, encode_frame

    dec = Decoder()
    joined: list[Any] = []
    ready = asyncio.Event()
    done = asyncio.Event()

    async def handler(ws: Any) -> None:
        hello = await ws.recv()
        dec.decode(hello)
        await ws.send(encode(Welcome(f"s{len(joined)}", "feeder",
                                     {"ping_interval": 30, "max_frame_bytes": 1 << 20,
                                      "max_rooms": 100, "neighbours": []})))
        join = dec.decode(await ws.recv())
        await ws.send(encode(Joined(join.req_id, join.room, 1, 0)))  # type: ignore[union-attr]
        joined.append(ws)
        if len(joined) == clients:
            ready.set()
        with contextlib.suppress(Exception):
            await ws.wait_closed()
        done.set()

    async with serve(handler, "127.0.0.1", port, compression=None, max_size=None,
                     ping_interval=None) as server:
        sock = next(iter(server.sockets))
        print(f"READY port={sock.getsockname()[1]}", flush=True)
        await ready.wait()
        pad = bytes(payload_size)
        # Pre-framed batches written straight to the transports: the feeder must be
        # much faster than any receiver, so that the receiver is the bottleneck.
        t0 = time.monotonic()
        for start in range(1, messages + 1, batch):
            if rate:
                # Paced: batches due at t0 + (message index) / rate.
                await asyncio.sleep(max(0.0, t0 + (start - 1) / rate - time.monotonic()))
            data = b"".join(encode_frame(OP_BINARY, encode_message(ROOM, 1, seq, "feeder-pub",
                                                                   pad, seq), mask=False)
                            for seq in range(start, min(messages, start + batch - 1) + 1))
            for w in joined:
                w.transport.write(data)
            # Keep the send buffers bounded: wait while any is above 1 MiB.
            while any(w.transport.get_write_buffer_size() > 1 << 20  # noqa: ASYNC110
                      for w in joined):
                await asyncio.sleep(0.0005)
        await done.wait()


def feeder_main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.recv_path")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--clients", type=int, required=True)
    p.add_argument("--messages", type=int, required=True)
    p.add_argument("--payload-size", type=int, default=88)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--rate", type=float, default=0.0)
    a = p.parse_args(argv)
    import uvloop

    uvloop.run(_feed(a.port, a.clients, a.messages, a.payload_size, max(1, a.batch),
                     max(0.0, a.rate)))
    return 0


# --- the receiving side --------------------------------------------------------------


class _Count:
    def __init__(self, total: int) -> None:
        self.n = 0
        self.total = total
        self.first: tuple[float, float] | None = None
        self.last: tuple[float, float] = (0.0, 0.0)
        self.done = asyncio.Event()

    def hit(self, _m: Any = None) -> None:
        if self.first is None:
            self.first = (time.process_time(), time.monotonic())
        self.n += 1
        if self.n == self.total:
            self.last = (time.process_time(), time.monotonic())
            self.done.set()


async def _receive(url: str, receiver: str, clients: int, messages: int,
                   timeout: float) -> dict[str, Any]:
    count = _Count(clients * messages)
    conns: list[Any] = []
    tasks: list[asyncio.Task[None]] = []
    if receiver == "sdk":
        from client_sdk import connect

        for i in range(clients):
            c = await connect(url, "feeder-does-not-check", name=f"r{i}", reconnect=False,
                              ping_interval=None, ping_timeout=None, rtt_probe_interval=None)
            await c.join(ROOM, on_message=count.hit)
            conns.append(c)
    elif receiver == "lean":
        from bench.lean_client import open_lean

        for i in range(clients):
            conns.append(await open_lean(url, "x", f"r{i}", ROOM, count.hit))
    else:
        from websockets.asyncio.client import connect as ws_connect

        from client_sdk.protocol import Decoder, Hello, Join, Message, encode

        dec = Decoder()

        async def read(ws: Any) -> None:
            decode, hit = dec.decode, count.hit
            async for raw in ws:
                if type(decode(raw)) is Message:
                    hit()

        for i in range(clients):
            ws = await ws_connect(url, compression=None, max_size=None, ping_interval=None)
            await ws.send(encode(Hello(1, "x", f"r{i}", None)))
            await ws.recv()
            await ws.send(encode(Join(1, ROOM, 0)))
            await ws.recv()
            conns.append(ws)
            tasks.append(asyncio.create_task(read(ws)))
    try:
        async with asyncio.timeout(timeout):
            await count.done.wait()
    except TimeoutError:
        raise BenchFailure(f"received {count.n} of {count.total} messages "
                           f"within {timeout:.0f} s") from None
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*(c.close() for c in conns), return_exceptions=True)
    assert count.first is not None
    cpu = count.last[0] - count.first[0]
    wall = count.last[1] - count.first[1]
    n = count.n - 1  # intervals between the first and the last message
    return {"recv": {
        "receiver": receiver,
        "messages": count.n,
        "cpu_s": round(cpu, 4),
        "cpu_us_per_message": round(cpu / n * 1e6, 3) if n else 0.0,
        "per_core_per_s": round(n / cpu) if cpu else 0,
        "wall_per_s": round(n / wall) if wall else 0,
        "cpu_percent": round(100 * cpu / wall, 1) if wall else 0.0,
    }, "warnings": []}


def _start_feeder(clients: int, messages: int, payload: int, batch: int,
                  rate: float) -> tuple[subprocess.Popen[str], int]:
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.recv_path", "--clients", str(clients), "--messages",
         str(messages), "--payload-size", str(payload), "--batch", str(batch),
         "--rate", str(rate)],
        stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True, env=env)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("READY port="):
        proc.kill()
        raise BenchFailure(f"the feeder did not start: {line!r}")
    return proc, int(line.split("=", 1)[1])


def register(subs: Any) -> None:
    sp = subs.add_parser("recv-path", help="messages/s one core receives through the SDK",
                         description=__doc__,
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    sp.add_argument("--receiver", choices=[*RECEIVERS, "all"], default="all",
                    help="(default: all three, alternating run by run)")
    sp.add_argument("--clients", type=positive_int, default=10, help="(default: 10)")
    sp.add_argument("--messages", type=positive_int, default=20_000,
                    help="messages per client (default: 20000)")
    sp.add_argument("--payload-size", type=positive_int, default=88, help="(default: 88)")
    sp.add_argument("--batch", type=positive_int, default=256,
                    help="messages the feeder writes at once per connection; 1 = one "
                    "socket read per message (default: 256)")
    sp.add_argument("--rate", type=positive_float, default=None,
                    help="pace the feeder: messages/s to each client (default: as fast as "
                    "possible). With --batch 1 and a rate the receiver is not saturated and "
                    "reads one message per wake-up, as subscribers in a fanout load do")
    sp.add_argument("--runs", type=positive_int, default=3, help="(default: 3)")
    sp.add_argument("--pin", action="store_true",
                    help="feeder on CPU 0, receiver on CPU 1")
    sp.add_argument("--out", type=Path, default=Path("bench-results"),
                    help="report directory (default: bench-results)")
    sp.set_defaults(func=cmd)


def cmd(args: argparse.Namespace) -> int:
    import uvloop

    args.rate = args.rate or 0.0
    if args.clients * args.messages > 5_000_000:
        raise BenchError("--clients x --messages must be at most 5,000,000")
    receivers = RECEIVERS if args.receiver == "all" else (args.receiver,)
    pinned = args.pin and can_pin()
    old = os.sched_getaffinity(0) if pinned else None
    runs: dict[str, list[dict[str, Any]]] = {r: [] for r in receivers}
    try:
        if pinned:
            pin_self({1})
        for _ in range(args.runs):
            for r in receivers:
                proc, port = _start_feeder(args.clients, args.messages, args.payload_size,
                                           args.batch, args.rate)
                try:
                    if pinned:
                        pin_pid(proc.pid, {0})
                    timeout = 30 + args.clients * args.messages / 10_000
                    runs[r].append(uvloop.run(_receive(f"ws://127.0.0.1:{port}", r,
                                                       args.clients, args.messages, timeout)))
                finally:
                    proc.kill()
                    proc.wait(5)
                    if proc.stdout is not None:
                        proc.stdout.close()
    finally:
        if old is not None:
            pin_self(set(old))
    warnings = []
    targets: dict[str, Any] = {r: {"runs": v, "median": report.medians(v)} for r, v in runs.items()}
    sdk = targets["sdk"]["median"].get("recv.per_core_per_s") if "sdk" in targets else None
    if sdk is not None and sdk < TARGET_PER_S:
        warnings.append(f"the SDK receives {sdk:,.0f} msg/s per core, below the "
                        f"{TARGET_PER_S:,}/s target")
    params = {k: v for k, v in vars(args).items() if k != "func"}
    params["out"], params["pin"] = str(args.out), pinned
    doc = {"schema": report.SCHEMA,
           "meta": report.make_meta("recv-path", params, report.timestamp()),
           "targets": targets, "ratios": {}, "warnings": warnings}
    md = report.markdown(doc, ROWS)
    json_path, _ = report.write(doc, args.out, md)
    print(md)
    print(f"report: {json_path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(feeder_main())
