"""Client connections of the load generator, one adaptor per target kind.

The baseline is reached with a plain ``websockets`` client (``compression=None``, like
the server), NATS with the NATS protocol over ``websockets`` (:mod:`bench.nats_client`);
our edge through the public SDK (``client_sdk``), so the benchmark
measures what an application sees. Both adaptors have the same shape: a subscriber
calls ``on_payload(payload, recv_ns)`` for each message; a publisher sends payloads
and drains (and reports) whatever the server sends it.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import time
from collections.abc import Callable
from typing import Any, Protocol, cast

from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

from bench.nats_client import NatsWsClient, open_nats
from bench.targets import TargetSpec

OnPayload = Callable[[bytes, int], None]
OPEN_TIMEOUT_S = 30.0


class Connection(Protocol):
    def is_open(self) -> bool: ...

    async def close(self) -> None: ...


class Publisher(Protocol):
    acked: int
    errors: int
    last_error: str

    async def send(self, payload: bytes) -> None: ...

    async def settle(self, timeout: float) -> None:
        """Wait (at most ``timeout`` s) until every publish is acknowledged."""

    def is_open(self) -> bool: ...

    async def close(self) -> None: ...


# --- baseline: plain websockets -------------------------------------------------------


class _WsConnection:
    """A websockets client connection; reads (and reports) everything it receives."""

    def __init__(self, ws: ClientConnection, on_payload: OnPayload | None) -> None:
        self.ws = ws
        self.acked = 0
        self.errors = 0
        self.last_error = ""
        self._on_payload = on_payload
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        on_payload = self._on_payload
        monotonic_ns = time.monotonic_ns
        with contextlib.suppress(ConnectionClosed):
            async for message in self.ws:
                if on_payload is not None and isinstance(message, bytes):
                    on_payload(message, monotonic_ns())

    def is_open(self) -> bool:
        return self.ws.state is State.OPEN

    async def settle(self, timeout: float) -> None:
        return None  # the baseline has no acks

    async def send(self, payload: bytes) -> None:
        try:
            await self.ws.send(payload)
        except ConnectionClosed as exc:
            self.errors += 1
            self.last_error = f"connection closed: {exc}"
        else:
            self.acked += 1  # the baseline has no acks: count what was written

    async def close(self) -> None:
        await self.ws.close()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


async def _ws_open(spec: TargetSpec, on_payload: OnPayload | None) -> _WsConnection:
    compression = "deflate" if spec.kind == "baseline-default" else None
    ws = await ws_connect(
        spec.url, compression=compression, open_timeout=OPEN_TIMEOUT_S, max_size=None
    )
    return _WsConnection(ws, on_payload)


# --- edge: the SDK ----------------------------------------------------------------------


class _SdkClient:
    """An SDK client. Reliable publishes' acks are counted, not awaited; unreliable
    ones (QUIC datagrams) have no ack and count as ``acked`` once sent."""

    def __init__(self, client: Any, room: str, reliable: bool = True) -> None:
        self.client = client
        self.room = room
        self.reliable = reliable
        self.acked = 0
        self.errors = 0
        self.last_error = ""
        self._pending = 0
        self._all_acked = asyncio.Event()
        self._all_acked.set()

    def _on_ack(self, fut: asyncio.Future[Any]) -> None:
        self._pending -= 1
        if self._pending == 0:
            self._all_acked.set()
        if fut.cancelled():
            self.errors += 1
            self.last_error = "publish cancelled"
        elif (exc := fut.exception()) is not None:
            self.errors += 1
            self.last_error = f"{type(exc).__name__}: {exc}"
        else:
            self.acked += 1

    def is_open(self) -> bool:
        return bool(self.client.connected)

    async def send(self, payload: bytes) -> None:
        try:
            fut = self.client.publish_nowait(self.room, payload, reliable=self.reliable)
        except Exception as exc:
            self.errors += 1
            self.last_error = f"{type(exc).__name__}: {exc}"
            return
        if fut is None:
            self.acked += 1
        else:
            self._pending += 1
            self._all_acked.clear()
            fut.add_done_callback(self._on_ack)

    async def settle(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._all_acked.wait(), timeout)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.client.close()


def _sdk() -> Any:
    return importlib.import_module("client_sdk")


def _token(spec: TargetSpec, subject: str) -> str:
    protocol = importlib.import_module("client_sdk.protocol")
    mint = cast(Callable[..., str], protocol.mint_token)
    # "service" tokens are exempt from the per-connection rate limits.
    return mint(spec.secret, subject, "service", ["*"], now=time.time(), ttl=3600)


#: Transports of the fanout scenario: WebSocket, QUIC with reliable publishes on the
#: stream, QUIC with unreliable publishes delivered as datagrams.
TRANSPORTS = ("ws", "quic-stream", "quic-datagram")


def _tls(spec: TargetSpec) -> Any:
    """The SDK's TLS options for ``spec`` (its CA file: the target's throw-away cert)."""
    from client_sdk.transport import TlsOptions

    return TlsOptions(ca_file=spec.ca_file or None)


async def _sdk_open(spec: TargetSpec, name: str, transport: str = "ws") -> _SdkClient:
    if transport == "ws":  # ws:// or, for edge-tls, wss://
        client = await _sdk().connect([spec.url], _token(spec, name), name=name,
                                      reconnect=False, tls=_tls(spec), rtt_probe_interval=None)
    else:
        if not spec.quic_url:
            raise RuntimeError(f"{transport}: the target was started without QUIC")
        client = await _sdk().connect([spec.quic_url], _token(spec, name), name=name,
                                      reconnect=False, tls=_tls(spec), rtt_probe_interval=None)
    return _SdkClient(client, spec.room, reliable=transport != "quic-datagram")


def _sdk_callback(on_payload: OnPayload) -> Callable[[Any], None]:
    monotonic_ns = time.monotonic_ns

    def on_message(msg: Any) -> None:
        on_payload(msg.payload, monotonic_ns())

    return on_message


# --- nats: a Go broker over WebSocket ---------------------------------------------------


async def _nats_open(spec: TargetSpec, on_payload: OnPayload | None,
                     subscribe: bool) -> NatsWsClient:
    client = await open_nats(spec.url, spec.room, on_payload)
    if subscribe:
        await client.subscribe()
    return client


# --- the adaptor ------------------------------------------------------------------------


class _LeanConnection:
    def __init__(self, proto: Any) -> None:
        self.proto = proto

    def is_open(self) -> bool:
        return bool(self.proto.is_open())

    async def close(self) -> None:
        await self.proto.close()


async def open_subscriber(spec: TargetSpec, name: str, on_payload: OnPayload,
                          receiver: str = "sdk", transport: str = "ws") -> Connection:
    """Connect a client that receives the room's messages.

    ``receiver="lean"`` (edge targets, WebSocket only) uses :mod:`bench.lean_client`
    instead of the SDK: the same protocol, a much cheaper receive path, no reconnect.
    ``transport`` (edge targets) is one of :data:`TRANSPORTS`.
    """
    if spec.kind.startswith("baseline"):
        return await _ws_open(spec, on_payload)
    if spec.kind == "nats":
        return await _nats_open(spec, on_payload, subscribe=True)
    if receiver == "lean":
        from bench.lean_client import open_lean
        from client_sdk.transport import client_context

        ctx = client_context(_tls(spec)) if spec.url.startswith("wss:") else None
        proto = await open_lean(spec.url, _token(spec, name), name, spec.room,
                                _sdk_callback(on_payload), ssl_context=ctx)
        return _LeanConnection(proto)
    sdk_client = await _sdk_open(spec, name, transport)
    await sdk_client.client.join(spec.room, on_message=_sdk_callback(on_payload))
    return sdk_client


async def open_publisher(spec: TargetSpec, name: str, on_receipt: OnPayload,
                         transport: str = "ws") -> Publisher:
    """Connect a client that publishes to the room.

    On both targets a publisher receives the *other* publishers' messages, not its
    own: the baseline sends everything to everyone else, and the edge requires a
    publisher to join the room (it joins with ``echo=False``). ``on_receipt`` sees them.
    """
    if spec.kind.startswith("baseline"):
        return await _ws_open(spec, on_receipt)
    if spec.kind == "nats":  # echo off: the others' messages, not its own
        return await _nats_open(spec, on_receipt, subscribe=True)
    sdk_client = await _sdk_open(spec, name, transport)
    await sdk_client.client.join(spec.room, echo=False, on_message=_sdk_callback(on_receipt))
    return sdk_client


async def open_idle(spec: TargetSpec, name: str) -> Connection:
    """Connect a client that only stays connected."""
    if spec.kind.startswith("baseline"):
        return await _ws_open(spec, None)
    if spec.kind == "nats":
        return await _nats_open(spec, None, subscribe=False)
    return await _sdk_open(spec, name)
