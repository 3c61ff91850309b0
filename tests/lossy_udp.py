"""A lossy UDP proxy for QUIC tests (loopback only).

``LossyUdpProxy(target_host, target_port)`` listens on a free loopback UDP port
and relays datagrams between each client and the target, dropping each one
with probability ``loss`` (per direction, from a seeded RNG so a run can be
replayed).  ``rebind()`` moves every client's upstream flow to a new source
port, as a NAT rebinding does: the target sees the same QUIC connection arrive
from a new address.  ``blackhole()``/``restore()`` cut and restore all traffic.
"""

from __future__ import annotations

import asyncio
import random


class _Upstream(asyncio.DatagramProtocol):
    def __init__(self, proxy: LossyUdpProxy, client: tuple[str, int]) -> None:
        self.proxy, self.client = proxy, client
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.proxy._to_client(data, self.client)


class LossyUdpProxy(asyncio.DatagramProtocol):
    """Start with :meth:`start`, stop with :meth:`stop`.  Counters: ``sent``, ``dropped``."""

    def __init__(self, target_host: str, target_port: int, *, loss: float = 0.0,
                 seed: int = 1) -> None:
        self.target = (target_host, target_port)
        self.loss = loss
        self.port = 0
        self.sent = 0
        self.dropped = 0
        self.rebinds = 0
        self._open = True
        self._rng = random.Random(seed)
        self._listen: asyncio.DatagramTransport | None = None
        self._up: dict[tuple[str, int], _Upstream] = {}
        self._starting: dict[tuple[str, int], list[bytes]] = {}

    @property
    def url(self) -> str:
        """QUIC URL of the target behind this proxy."""
        return f"quic://127.0.0.1:{self.port}"

    async def start(self) -> LossyUdpProxy:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: self,
                                                           local_addr=("127.0.0.1", 0))
        self._listen = transport
        self.port = transport.get_extra_info("sockname")[1]
        return self

    def _lose(self) -> bool:
        if not self._open:
            self.dropped += 1
            return True
        if self.loss and self._rng.random() < self.loss:
            self.dropped += 1
            return True
        self.sent += 1
        return False

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if self._lose():
            return
        up = self._up.get(addr)
        if up is not None and up.transport is not None:
            up.transport.sendto(data, self.target)
            return
        pending = self._starting.get(addr)
        if pending is not None:
            pending.append(data)
            return
        self._starting[addr] = [data]
        asyncio.get_running_loop().create_task(self._connect(addr))

    async def _connect(self, client: tuple[str, int]) -> None:
        loop = asyncio.get_running_loop()
        _, up = await loop.create_datagram_endpoint(lambda: _Upstream(self, client),
                                                    local_addr=("127.0.0.1", 0))
        old = self._up.pop(client, None)
        self._up[client] = up
        for data in self._starting.pop(client, []):
            assert up.transport is not None
            up.transport.sendto(data, self.target)
        if old is not None and old.transport is not None:
            old.transport.close()

    def _to_client(self, data: bytes, client: tuple[str, int]) -> None:
        if self._lose() or self._listen is None:
            return
        self._listen.sendto(data, client)

    async def rebind(self) -> None:
        """Give every client flow a new upstream source port (NAT rebinding)."""
        for client in list(self._up):
            self._starting.setdefault(client, [])
            await self._connect(client)
        self.rebinds += 1

    def blackhole(self) -> None:
        """Drop everything from now on."""
        self._open = False

    def restore(self) -> None:
        """Relay again."""
        self._open = True

    def stop(self) -> None:
        for up in self._up.values():
            if up.transport is not None:
                up.transport.close()
        self._up.clear()
        if self._listen is not None:
            self._listen.close()
