"""The load generator's NATS client: the NATS text protocol over WebSocket.

Just what the benchmark needs, on a plain ``websockets`` connection (the same
client library the baseline's clients use): ``CONNECT`` (no echo, not
verbose), ``SUB`` one subject, ``PUB`` payloads to it, answer ``PING``, and
hand every ``MSG`` payload to ``on_payload(payload, recv_ns)``.  The parser
(:class:`NatsParser`) is sans-I/O: bytes in, events out.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import deque
from collections.abc import Callable

from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

__all__ = ["NatsError", "NatsParser", "NatsWsClient", "open_nats"]

OnPayload = Callable[[bytes, int], None]
OPEN_TIMEOUT_S = 30.0
CONNECT = {"verbose": False, "pedantic": False, "echo": False, "protocol": 1,
           "name": "edge-relay-bench", "lang": "python", "version": "0"}


class NatsError(Exception):
    """The server answered ``-ERR`` or broke the protocol."""


class NatsParser:
    """Incremental parser of what a NATS server sends.

    :meth:`feed` takes any chunk of the byte stream and returns the events it
    completes: ``("MSG", payload)``, ``("PING", b"")``, ``("PONG", b"")``,
    ``("INFO", json)``, ``("ERR", text)``; ``+OK`` is dropped.  Raises
    :class:`NatsError` on a line it does not know.
    """

    __slots__ = ("_buf", "_need")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._need = -1  # payload bytes (+2 for CRLF) still expected after a MSG line

    def feed(self, data: bytes) -> list[tuple[str, bytes]]:
        """Append ``data``; return the complete events in order."""
        buf = self._buf
        buf += data
        out: list[tuple[str, bytes]] = []
        pos = 0
        end = len(buf)
        while True:
            if self._need >= 0:
                if end - pos < self._need + 2:
                    break
                out.append(("MSG", bytes(buf[pos:pos + self._need])))
                pos += self._need + 2
                self._need = -1
                continue
            eol = buf.find(b"\r\n", pos)
            if eol < 0:
                break
            line = bytes(buf[pos:eol])
            pos = eol + 2
            if line.startswith(b"MSG "):
                try:
                    self._need = int(line.rsplit(b" ", 1)[1])
                except ValueError as exc:
                    raise NatsError(f"bad MSG line {line[:80]!r}") from exc
            elif line == b"PING":
                out.append(("PING", b""))
            elif line == b"PONG":
                out.append(("PONG", b""))
            elif line.startswith(b"INFO "):
                out.append(("INFO", line[5:]))
            elif line.startswith(b"-ERR"):
                out.append(("ERR", line[4:].strip()))
            elif line != b"+OK":
                raise NatsError(f"unexpected line from the server: {line[:80]!r}")
        del buf[:pos]
        return out


class NatsWsClient:
    """One NATS connection over WebSocket (subscriber, publisher or idle).

    Publishes go to ``subject`` (the room).  ``acked`` counts payloads written
    (NATS core has no acknowledgements), like the baseline's clients.
    """

    def __init__(self, ws: ClientConnection, subject: str, on_payload: OnPayload | None) -> None:
        self.ws = ws
        self.subject = subject
        self.acked = 0
        self.errors = 0
        self.last_error = ""
        self._on_payload = on_payload
        self._parser = NatsParser()
        self._pongs: deque[asyncio.Future[None]] = deque()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        feed = self._parser.feed
        on_payload = self._on_payload
        monotonic_ns = time.monotonic_ns
        try:
            async for message in self.ws:
                data = message.encode() if isinstance(message, str) else message
                now = monotonic_ns()
                for kind, body in feed(data):
                    if kind == "MSG":
                        if on_payload is not None:
                            on_payload(body, now)
                    elif kind == "PING":
                        await self.ws.send(b"PONG\r\n")
                    elif kind == "PONG":
                        if self._pongs:
                            fut = self._pongs.popleft()
                            if not fut.done():
                                fut.set_result(None)
                    elif kind == "ERR":
                        self.errors += 1
                        self.last_error = body.decode(errors="replace")
        except ConnectionClosed:
            pass
        except NatsError as exc:
            self.errors += 1
            self.last_error = str(exc)
        finally:
            for fut in self._pongs:
                if not fut.done():
                    fut.set_exception(NatsError(self.last_error or "connection closed"))

    async def flush(self, timeout: float = OPEN_TIMEOUT_S) -> None:
        """``PING`` and wait for its ``PONG``: everything sent before is processed."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pongs.append(fut)
        await self.ws.send(b"PING\r\n")
        await asyncio.wait_for(fut, timeout)

    async def subscribe(self) -> None:
        """``SUB`` the subject and wait until the server has registered it."""
        await self.ws.send(f"SUB {self.subject} 1\r\n".encode())
        await self.flush()

    async def send(self, payload: bytes) -> None:
        """``PUB`` one payload to the subject (counted in ``acked`` once written)."""
        try:
            await self.ws.send(b"PUB %s %d\r\n%s\r\n"
                               % (self.subject.encode(), len(payload), payload))
        except ConnectionClosed as exc:
            self.errors += 1
            self.last_error = f"connection closed: {exc}"
        else:
            self.acked += 1

    async def settle(self, timeout: float) -> None:
        """Nothing to wait for: NATS core has no acknowledgements."""
        return None

    def is_open(self) -> bool:
        return self.ws.state is State.OPEN

    async def close(self) -> None:
        await self.ws.close()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


async def open_nats(url: str, subject: str, on_payload: OnPayload | None) -> NatsWsClient:
    """Connect to a NATS WebSocket endpoint and send ``CONNECT`` (confirmed by a PONG)."""
    ws = await ws_connect(url, compression=None, open_timeout=OPEN_TIMEOUT_S, max_size=None)
    client = NatsWsClient(ws, subject, on_payload)
    await ws.send(f"CONNECT {json.dumps(CONNECT, separators=(',', ':'))}\r\n".encode())
    await client.flush()
    if client.errors:
        await client.close()
        raise NatsError(f"NATS refused the connection: {client.last_error}")
    return client
