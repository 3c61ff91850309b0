"""The lean append connection (:class:`~edge_node.redis_io.resp_writer.RespWriter`) on a
Redis Cluster.

:class:`ClusterRespWriter` keeps one :class:`RespWriter` per primary and routes each
command by the hash slot of its key (``CLUSTER SLOTS`` map).  Same contract as
:meth:`RespWriter.execute` (replies in order, error replies as values, connection
trouble raised as :class:`RespConnectionError`), plus:

- Redirections: a ``MOVED`` reply updates the slot map and re-sends that command to the
  named node; ``ASK`` re-sends it there once, preceded by ``ASKING`` (at most 3 hops).
  ``CLUSTERDOWN``/``TRYAGAIN`` count as connection trouble: the caller retries later,
  and the slot map is re-read before the next call.
- Replication check (``wait_replicas`` > 0): after each node's commands the writer sends
  ``WAIT wait_replicas wait_ms`` on the same connection.  If fewer replicas confirmed,
  every reply of that node's group that was not already an error is replaced by a
  ``ResponseError("UNREPLICATED …")``: the commands ran on the primary, but a failover
  could still lose them, so the caller must not report them as durable yet (it re-sends
  later; our appends are idempotent).  ``WAIT`` covers every earlier write of the
  primary, so an acknowledged position implies everything before it is on a replica.
- Only single-key commands (``EVAL``/``EVALSHA`` keys must share one slot, as our
  scripts' do); the routing key is the first key.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from redis.crc import key_slot
from redis.exceptions import ResponseError

from edge_node.redis_io.resp_writer import Command, RespConnectionError, RespWriter

__all__ = ["ClusterRespWriter", "routing_key"]

_SLOTS = 16384
_HOPS = 3


def routing_key(cmd: Command) -> bytes:
    """The key a command is routed by: ``EVAL``/``EVALSHA``'s first key, else argument 1."""
    name = cmd[0].decode() if isinstance(cmd[0], bytes) else str(cmd[0])
    idx = 3 if name.upper() in ("EVAL", "EVALSHA") else 1
    if len(cmd) <= idx or (idx == 3 and int(cmd[2]) < 1):
        raise ValueError(f"{name} has no key to route it by")
    k = cmd[idx]
    return k if isinstance(k, bytes) else str(k).encode()


def _s(b: Any) -> str:
    return b.decode() if isinstance(b, bytes) else str(b)


class ClusterRespWriter:
    """Pipelined commands to a Redis Cluster's primaries (see the module docstring)."""

    def __init__(self, seeds: Sequence[tuple[str, int]], *, username: str | None = None,
                 password: str | None = None, connect_timeout: float = 2.0,
                 timeout: float = 5.0, scripts: Sequence[str] = (), wait_replicas: int = 0,
                 wait_ms: int = 200) -> None:
        self.seeds = list(seeds)
        self._kw: dict[str, Any] = {"username": username, "password": password,
                                    "connect_timeout": connect_timeout, "timeout": timeout,
                                    "scripts": list(scripts)}
        self.wait_replicas = wait_replicas
        self.wait_ms = wait_ms
        self._slots: list[tuple[str, int] | None] = [None] * _SLOTS
        self._writers: dict[tuple[str, int], RespWriter] = {}
        self._stale = True
        self._refreshing: asyncio.Lock | None = None
        self._closed = False
        self.redirects = 0  # MOVED/ASK replies followed
        self.refreshes = 0  # slot map reads
        self.unreplicated = 0  # node groups whose WAIT fell short

    @property
    def connects(self) -> int:
        """Connections made, over every node."""
        return sum(w.connects for w in self._writers.values())

    def _writer(self, node: tuple[str, int]) -> RespWriter:
        w = self._writers.get(node)
        if w is None:
            w = self._writers[node] = RespWriter(node[0], node[1], **self._kw)
        return w

    async def connect(self) -> None:
        """Read the slot map and connect to every primary."""
        await self._refresh()
        await asyncio.gather(*(self._writer(n).connect() for n in set(self._nodes())))

    def _nodes(self) -> list[tuple[str, int]]:
        return [n for n in self._slots if n is not None]

    async def close(self) -> None:
        """Close every connection; later calls raise."""
        self._closed = True
        for w in list(self._writers.values()):
            await w.close()

    async def _refresh(self) -> None:
        if self._refreshing is None:
            self._refreshing = asyncio.Lock()
        async with self._refreshing:
            if not self._stale:
                return
            known = list(dict.fromkeys([*self._nodes(), *self.seeds]))
            last: Exception | None = None
            for node in known:
                w = self._writer(node)
                try:
                    [reply] = await w.execute([("CLUSTER", "SLOTS")])
                except RespConnectionError as exc:
                    last = exc
                    continue
                if isinstance(reply, ResponseError):
                    last = reply
                    continue
                slots: list[tuple[str, int] | None] = [None] * _SLOTS
                for rng in reply:
                    host = _s(rng[2][0]) or node[0]
                    target = (host, int(rng[2][1]))
                    for s in range(int(rng[0]), int(rng[1]) + 1):
                        slots[s] = target
                self._slots = slots
                self._stale = False
                self.refreshes += 1
                for n in set(self._writers) - set(slots) - set(self.seeds):
                    await self._writers.pop(n).close()  # gone from the map
                return
            raise RespConnectionError(f"no cluster node answered CLUSTER SLOTS: {last}")

    def _node_of(self, cmd: Command) -> tuple[str, int]:
        node = self._slots[key_slot(routing_key(cmd))]
        if node is None:
            self._stale = True
            raise RespConnectionError("slot not served by any node (cluster down?)")
        return node

    async def execute(self, commands: Sequence[Command]) -> list[Any]:
        """Run ``commands`` (each single-slot) on their primaries, one round trip per node,
        nodes in parallel; replies in the order of ``commands``."""
        if not commands:
            return []
        if self._closed:
            raise RespConnectionError("writer closed")
        if self._stale:
            await self._refresh()
        groups: dict[tuple[str, int], list[int]] = {}
        for i, cmd in enumerate(commands):
            groups.setdefault(self._node_of(cmd), []).append(i)
        replies: list[Any] = [None] * len(commands)
        results = await asyncio.gather(
            *(self._run(node, [commands[i] for i in idx]) for node, idx in groups.items()),
            return_exceptions=True)
        failed: BaseException | None = None
        for idx, res in zip(groups.values(), results, strict=True):
            if isinstance(res, BaseException):
                failed = failed or res
                continue
            for i, rep in zip(idx, res, strict=True):
                replies[i] = rep
        if failed is not None:
            self._stale = True  # a failover may have moved the slots
            if isinstance(failed, RespConnectionError):
                raise failed
            raise failed
        return replies

    async def _run(self, node: tuple[str, int], cmds: list[Command]) -> list[Any]:
        """One node's group (+ WAIT), then redirections of the commands that got one."""
        wait = self.wait_replicas > 0
        batch: list[Command] = list(cmds)
        if wait:
            batch.append(("WAIT", self.wait_replicas, self.wait_ms))
        out = await self._writer(node).execute(batch)
        if wait:
            acked = out.pop()
            if not isinstance(acked, int) or acked < self.wait_replicas:
                self.unreplicated += 1
                err = ResponseError(f"UNREPLICATED {acked} of {self.wait_replicas} replicas "
                                    f"confirmed within {self.wait_ms} ms")
                out = [r if isinstance(r, ResponseError) else err for r in out]
        for i, rep in enumerate(out):
            if isinstance(rep, ResponseError):
                out[i] = await self._redirect(cmds[i], rep)
        return out

    async def _redirect(self, cmd: Command, rep: ResponseError) -> Any:
        for _ in range(_HOPS):
            msg = str(rep)
            if msg.startswith(("CLUSTERDOWN", "TRYAGAIN")):
                self._stale = True
                raise RespConnectionError(f"Redis Cluster unavailable: {msg}")
            kind, _, rest = msg.partition(" ")
            if kind not in ("MOVED", "ASK"):
                return rep
            self.redirects += 1
            slot_s, _, addr = rest.partition(" ")
            host, _, port_s = addr.rpartition(":")
            target = (host or self.seeds[0][0], int(port_s))
            if kind == "MOVED":
                self._slots[int(slot_s)] = target
                self._stale = True  # others probably moved too: re-read before next call
                batch: list[Command] = [cmd]
            else:
                batch = [("ASKING",), cmd]
            if self.wait_replicas > 0:
                batch.append(("WAIT", self.wait_replicas, self.wait_ms))
            out = await self._writer(target).execute(batch)
            rep = out[-2] if self.wait_replicas > 0 else out[-1]
            if self.wait_replicas > 0 and not isinstance(rep, ResponseError):
                acked = out[-1]
                if not isinstance(acked, int) or acked < self.wait_replicas:
                    self.unreplicated += 1
                    return ResponseError(f"UNREPLICATED {acked} of {self.wait_replicas}")
            if not isinstance(rep, ResponseError):
                return rep
        return rep
