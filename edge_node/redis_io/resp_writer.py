"""A lean, pipelined Redis connection for the edge's append path.

redis-py spends ~66 µs of CPU on one ``execute_command`` (connection pool,
retry and parser layers).  At game publish rates most room-stream flushes
carry a single ``EVALSHA``, so that overhead is most of the durability cost per
publish.  :class:`RespWriter` is one :class:`asyncio.Protocol` connection that
writes RESP-encoded commands and parses replies with :class:`hiredis.Reader`.

Contract:

- :meth:`RespWriter.execute` sends its commands in one write and returns their
  replies in order.  Several calls may be in flight at once (pipelined); replies
  are matched to callers through a FIFO.
- An *error reply* is returned as a :class:`redis.exceptions.ResponseError`
  value, never raised (like ``pipeline.execute(raise_on_error=False)``), except
  the ones that mean the server cannot serve now (``LOADING``, ``BUSY``,
  ``MASTERDOWN``, ``READONLY``, ``NOAUTH``, too many clients), which count as
  connection trouble, as in redis-py.
- Connection trouble (cannot connect, connection lost, protocol error, or a
  reply slower than ``timeout``) raises :class:`RespConnectionError` (an
  :class:`OSError`) to every caller in flight and drops the connection; the next
  call reconnects.  Nothing is retried here, and whether a failed call's
  commands were applied is unknown: callers retry idempotent commands.
- Scripts given as ``scripts`` are loaded (``SCRIPT LOAD``) on every new
  connection (a restarted Redis has an empty script cache).  An ``EVALSHA``
  of one of them answered with ``NOSCRIPT`` (cache flushed while connected) is
  retried once after re-loading the script.
- Only ``redis://`` (TCP, optional user/password and db) and ``unix://`` URLs;
  :meth:`RespWriter.from_url` returns ``None`` for anything else (TLS).
  Replies use RESP2 shapes, with bytes for strings.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import socket
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, cast
from urllib.parse import parse_qs, unquote, urlsplit

import hiredis
from redis.exceptions import ResponseError

__all__ = ["RespWriter", "RespConnectionError", "encode_command"]

Command = Sequence[bytes | str | int | float]

_NO_DATA = object()  # hiredis.Reader.gets() result while a reply is incomplete


class RespConnectionError(ConnectionError):
    """The connection failed; the commands in flight may or may not have run."""


def _encode_py(args: Command) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        if isinstance(a, bytes):
            b = a
        elif isinstance(a, str):
            b = a.encode()
        elif isinstance(a, int | float) and not isinstance(a, bool):
            b = repr(a).encode()
        else:
            raise TypeError(f"cannot encode {type(a).__name__} as a RESP argument")
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(out)


#: hiredis >= 2.1 encodes in C (~1.6x faster); same bytes as :func:`_encode_py`.
_pack: Callable[[tuple[Any, ...]], bytes] = getattr(hiredis, "pack_command", _encode_py)


def encode_command(args: Command) -> bytes:
    """RESP encoding of one command: an array of bulk strings."""
    return _pack(tuple(args))


#: Error replies that mean "this server cannot serve now", not "this command is
#: wrong": raised as connection trouble (the connection is dropped, so a
#: reconnect can reach a promoted primary), as redis-py raises them.
_UNAVAILABLE = ("LOADING", "BUSY ", "MASTERDOWN", "READONLY", "NOAUTH",
                "ERR max number of clients")


class _Request:
    __slots__ = ("count", "deadline", "error", "fut", "replies")

    def __init__(self, count: int, fut: asyncio.Future[_Request], deadline: float) -> None:
        self.count = count
        self.fut = fut
        self.deadline = deadline
        self.replies: list[Any] = []
        self.error = False  # an error reply is among the replies


class _Protocol(asyncio.Protocol):
    """One connection: a FIFO of requests waiting for their replies."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.transport: asyncio.Transport | None = None
        self.pending: deque[_Request] = deque()
        self.reader = hiredis.Reader(replyError=ResponseError, notEnoughData=_NO_DATA)
        self.lost = False
        self._watchdog: asyncio.TimerHandle | None = None
        self._loop = asyncio.get_running_loop()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses: cast, not assert.
        self.transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._arm()

    def _arm(self) -> None:
        # One timer per ~timeout/4 instead of one per request.
        self._watchdog = self._loop.call_later(max(self.timeout / 4, 0.01), self._check)

    def _check(self) -> None:
        if self.lost:
            return
        if self.pending and self.pending[0].deadline < time.monotonic():
            self.abort(RespConnectionError(f"no reply from Redis within {self.timeout:g} s"))
            return
        self._arm()

    def send(self, data: bytes, count: int) -> asyncio.Future[_Request]:
        if self.lost or self.transport is None or self.transport.is_closing():
            raise RespConnectionError("connection to Redis is closed")
        fut: asyncio.Future[_Request] = self._loop.create_future()
        self.pending.append(_Request(count, fut, time.monotonic() + self.timeout))
        self.transport.write(data)
        return fut

    def data_received(self, data: bytes) -> None:
        reader = self.reader
        reader.feed(data)
        pending = self.pending
        while True:
            try:
                reply = reader.gets()
            except hiredis.ProtocolError as exc:
                self.abort(RespConnectionError(f"Redis protocol error: {exc}"))
                return
            if reply is _NO_DATA:
                return
            if not pending:
                self.abort(RespConnectionError("unexpected reply from Redis"))
                return
            req = pending[0]
            req.replies.append(reply)
            if type(reply) is ResponseError:
                req.error = True
            if len(req.replies) == req.count:
                pending.popleft()
                if not req.fut.done():  # the caller may have been cancelled
                    req.fut.set_result(req)

    def abort(self, exc: RespConnectionError) -> None:
        """Drop the connection and fail every request in flight."""
        if self.transport is not None:
            self.transport.abort()
        self._fail(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(RespConnectionError(f"connection to Redis lost: {exc or 'closed'}"))

    def _fail(self, exc: RespConnectionError) -> None:
        self.lost = True
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        pending, self.pending = self.pending, deque()
        for req in pending:
            if not req.fut.done():
                req.fut.set_exception(exc)


class RespWriter:
    """Pipelined commands over one dedicated connection (see the module docstring)."""

    def __init__(
        self, host: str = "127.0.0.1", port: int = 6379, *, path: str | None = None,
        db: int = 0, username: str | None = None, password: str | None = None,
        connect_timeout: float = 2.0, timeout: float = 5.0, scripts: Sequence[str] = (),
    ) -> None:
        self.host = host
        self.port = port
        self.path = path
        self.db = db
        self.username = username
        self.password = password
        self.connect_timeout = connect_timeout
        self.timeout = timeout
        self._scripts = {hashlib.sha1(s.encode()).hexdigest(): s for s in scripts}
        self._proto: _Protocol | None = None
        self._connecting: asyncio.Lock | None = None
        self._closed = False
        self.connects = 0  # connections made (the first one included)

    @classmethod
    def from_url(cls, url: str, **kw: Any) -> RespWriter | None:
        """A writer for ``url``, or ``None`` if the URL needs what it lacks (TLS)."""
        u = urlsplit(url)
        q = parse_qs(u.query)
        db_s = q.get("db", [""])[0] or (u.path.lstrip("/") if u.scheme == "redis" else "")
        user = unquote(u.username) if u.username else None
        pw = unquote(u.password) if u.password is not None else None
        if u.scheme == "redis":
            return cls(u.hostname or "127.0.0.1", u.port or 6379, db=int(db_s or 0),
                       username=user, password=pw, **kw)
        if u.scheme == "unix":
            return cls(path=u.path, db=int(db_s or 0), username=user, password=pw, **kw)
        return None

    def sha(self, script: str) -> str:
        """SHA1 of a script (the name ``EVALSHA`` wants)."""
        return hashlib.sha1(script.encode()).hexdigest()

    @property
    def connected(self) -> bool:
        """True while a connection is open."""
        return self._proto is not None and not self._proto.lost

    async def connect(self) -> None:
        """Open the connection now (otherwise the first command does)."""
        await self._conn()

    async def close(self) -> None:
        """Close the connection; commands in flight fail; later calls raise."""
        self._closed = True
        proto, self._proto = self._proto, None
        if proto is not None and proto.transport is not None:
            proto.transport.close()
            proto._fail(RespConnectionError("writer closed"))

    async def _conn(self) -> _Protocol:
        proto = self._proto
        if proto is not None and not proto.lost:
            return proto
        if self._closed:
            raise RespConnectionError("writer closed")
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            proto = self._proto
            if proto is not None and not proto.lost:
                return proto
            proto = await self._open()
            self._proto = proto
            self.connects += 1
            return proto

    async def _open(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        proto = _Protocol(self.timeout)
        where = self.path or f"{self.host}:{self.port}"
        try:
            async with asyncio.timeout(self.connect_timeout):
                if self.path is not None:
                    await loop.create_unix_connection(lambda: proto, self.path)
                else:
                    await loop.create_connection(lambda: proto, self.host, self.port)
        except (OSError, TimeoutError) as exc:
            raise RespConnectionError(f"cannot connect to Redis at {where}: {exc!r}") from exc
        setup: list[tuple[Any, ...]] = []
        if self.password is not None:
            setup.append(("AUTH", self.username, self.password) if self.username
                         else ("AUTH", self.password))
        if self.db:
            setup.append(("SELECT", self.db))
        setup += [("SCRIPT", "LOAD", src) for src in self._scripts.values()]
        try:
            replies = (await self._send(proto, setup)).replies if setup else []
            for cmd, rep in zip(setup, replies, strict=True):
                if isinstance(rep, ResponseError):
                    raise RespConnectionError(f"Redis at {where} refused {cmd[0]}: {rep}")
        except BaseException as exc:  # failed or cancelled: do not leak the connection
            proto.abort(exc if isinstance(exc, RespConnectionError)
                        else RespConnectionError("connection setup interrupted"))
            raise
        return proto

    def _script_of(self, cmd: Command) -> str | None:
        """The sha of ``cmd`` if it is an ``EVALSHA`` of one of our scripts."""
        if len(cmd) < 2 or str(cmd[0]).upper() != "EVALSHA":
            return None
        sha = cmd[1].decode() if isinstance(cmd[1], bytes) else str(cmd[1])
        return sha if sha in self._scripts else None

    @staticmethod
    def _send(proto: _Protocol, commands: Sequence[Command]) -> asyncio.Future[_Request]:
        if len(commands) == 1:
            data = _pack(tuple(commands[0]))
        else:
            data = b"".join([_pack(tuple(c)) for c in commands])
        return proto.send(data, len(commands))

    async def execute(self, commands: Sequence[Command]) -> list[Any]:
        """Run ``commands`` in one round trip; replies in order, error replies as values."""
        if not commands:
            return []
        proto = self._proto
        if proto is None or proto.lost:
            proto = await self._conn()
        req = await self._send(proto, commands)
        if req.error:
            await self._errors(proto, commands, req.replies)
        return req.replies

    async def _errors(self, proto: _Protocol, commands: Sequence[Command],
                      replies: list[Any]) -> None:
        """Raise for "server unavailable" errors; re-load scripts on ``NOSCRIPT``
        and retry those commands once (their replies replace the errors)."""
        redo = []
        for i, r in enumerate(replies):
            if not isinstance(r, ResponseError):
                continue
            msg = str(r)
            if msg.startswith(_UNAVAILABLE):
                proto.abort(RespConnectionError(f"Redis unavailable: {msg}"))
                raise RespConnectionError(f"Redis unavailable: {msg}")
            if msg.startswith("NOSCRIPT") and self._script_of(commands[i]) is not None:
                redo.append(i)
        if not redo:
            return
        shas = sorted({self._script_of(commands[i]) or "" for i in redo})
        again = await self._send(
            await self._conn(),
            [("SCRIPT", "LOAD", self._scripts[s]) for s in shas] + [commands[i] for i in redo])
        for i, rep in zip(redo, again.replies[len(shas):], strict=True):
            if isinstance(rep, ResponseError) and str(rep).startswith(_UNAVAILABLE):
                raise RespConnectionError(f"Redis unavailable: {rep}")
            replies[i] = rep
