"""The baseline: a plain ``websockets`` rebroadcast server.

This is the relay a Python user would write in an afternoon: every binary message a
client sends is rebroadcast to every *other* connected client with
``websockets.asyncio.server.broadcast``. It has no rooms, no positions, no history, no
metrics and no backpressure (``broadcast`` writes straight to the transports). To be
fair to it, permessage-deflate is off (``compression=None``, which halves its CPU per
small message) and the listen backlog is 1024. It runs under uvloop.

``--defaults`` runs it exactly as the afternoon version would be written: websockets'
default settings (permessage-deflate negotiated when the client offers it) on the
standard asyncio loop. The ``baseline-default`` target uses it with clients that offer
compression, as default ``websockets`` clients do.

Run: ``python -m bench.baseline_server --host 127.0.0.1 --port 0``; it prints
``READY port=P`` on stdout once listening and answers ``GET /healthz`` with 200 "ok".
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from http import HTTPStatus

from websockets.asyncio.server import Server, ServerConnection, broadcast, serve
from websockets.http11 import Request, Response

from edge_node.runtime.fd_limits import raise_nofile_limit

CLIENTS: set[ServerConnection] = set()


async def relay(ws: ServerConnection) -> None:
    CLIENTS.add(ws)
    try:
        async for message in ws:
            if isinstance(message, bytes):
                broadcast([c for c in CLIENTS if c is not ws], message)
    finally:
        CLIENTS.discard(ws)


def health(connection: ServerConnection, request: Request) -> Response | None:
    if request.path == "/healthz":
        return connection.respond(HTTPStatus.OK, "ok\n")
    return None


async def run(host: str, port: int, defaults: bool = False) -> None:
    stop = asyncio.get_running_loop().create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set_result, None)
    server: Server
    opts: dict[str, object] = {} if defaults else {"compression": None, "backlog": 1024}
    async with serve(relay, host, port, process_request=health, **opts) as server:  # type: ignore[arg-type]
        bound = next(iter(server.sockets)).getsockname()[1]
        print(f"READY port={bound}", flush=True)
        await stop


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.baseline_server",
        description="Plain websockets rebroadcast server (the benchmark baseline).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=0, help="port (0: any free port)")
    parser.add_argument("--defaults", action="store_true",
                        help="websockets defaults (compression on) on the asyncio loop")
    args = parser.parse_args(argv)
    raise_nofile_limit()
    if args.defaults:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(run(args.host, args.port, defaults=True))
        return 0
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency off Windows
        asyncio.run(run(args.host, args.port))
    else:
        with contextlib.suppress(KeyboardInterrupt):
            uvloop.run(run(args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
