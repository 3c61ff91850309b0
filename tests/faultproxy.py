"""A fault-injecting TCP proxy for chaos tests (loopback only).

``FaultProxy(target_host, target_port)`` listens on a free loopback port and
forwards bytes both ways.  ``blackhole()`` stops forwarding without closing
anything, like a network cut that leaves both ends believing the link is up
(a half-open connection): not even a close crosses it.  ``restore()`` resumes
forwarding; ``cut()`` closes every proxied connection at once.  ``delay`` (seconds,
settable at any time) holds each chunk that long before forwarding it, in each
direction: a longer path (a request and its answer cross it twice).  ``port``: listen
there instead of on a free port.  ``target`` may be changed before the first connection.
"""

from __future__ import annotations

import asyncio
import contextlib


class FaultProxy:
    """Start with :meth:`start`, stop with :meth:`stop`."""

    def __init__(self, target_host: str, target_port: int, *, delay: float = 0.0,
                 port: int = 0) -> None:
        self.target = (target_host, target_port)
        self.port = port
        self.delay = delay
        self._server: asyncio.Server | None = None
        self._open = asyncio.Event()
        self._open.set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        """WebSocket URL of the edge behind this proxy."""
        return f"ws://127.0.0.1:{self.port}"

    async def start(self) -> FaultProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def blackhole(self) -> None:
        """Silently drop traffic in both directions from now on."""
        self._open.clear()

    def restore(self) -> None:
        """Forward traffic again."""
        self._open.set()

    def cut(self) -> None:
        """Close every proxied connection (both sides see the close)."""
        for w in list(self._writers):
            w.close()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        self.cut()
        for t in list(self._tasks):
            t.cancel()
        for t in list(self._tasks):
            with contextlib.suppress(BaseException):
                await t

    async def _accept(self, cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        try:
            ur, uw = await asyncio.open_connection(*self.target)
        except OSError:
            cw.close()
            return
        self._writers |= {cw, uw}
        for src, dst in ((cr, uw), (ur, cw)):
            t = asyncio.get_running_loop().create_task(self._pump(src, dst))
            self._tasks.add(t)
            t.add_done_callback(self._tasks.discard)

    async def _pump(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while True:
                data = await src.read(65536)
                if not data:
                    break
                if self.delay:
                    await asyncio.sleep(self.delay)
                if self._open.is_set():
                    dst.write(data)
                    await dst.drain()
                # else: dropped on the floor, like a cut link
        except (OSError, asyncio.CancelledError):
            pass
        if not self._open.is_set():
            return  # a cut link carries no FIN either: the far end keeps waiting
        dst.close()
        self._writers.discard(dst)
