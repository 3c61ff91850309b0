"""The edge's downlink consumer: commands from the origin to devices on this edge.

The origin writes to ``er:{edge:ID}:down`` (see ``origin/downlink.py``).  The edge
reads it through the consumer group ``edge`` (consumer = the edge id), so its
position survives restarts: on start it first re-reads its own pending entries
(delivered before a crash but not acknowledged), then new ones.  Each entry is
handed to :meth:`IotService.deliver_command`, then XACKed and XDELed (finished
entries do not pile up).  Delivery to the device is at least once; the origin
re-pushes unacknowledged commands when the device comes online again, and the
SDK deduplicates by command id.

Redis outages: errors are logged and retried with capped backoff; the blocking
read uses its own connection without a socket timeout shorter than BLOCK
(redis-py would otherwise retry silently, see PITFALLS).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from typing import Any

from redis.exceptions import RedisError, ResponseError

from edge_node.redis_io import conn as redis_conn
from edge_node.uplink.wire import downlink_key

__all__ = ["DownlinkConsumer", "GROUP"]

log = logging.getLogger("edge_node.iot.downlink")

#: Consumer group of every edge on its own downlink stream.
GROUP = "edge"

Deliver = Callable[[str, str, dict[str, Any], int], bool]


def parse_entry(fields: dict[bytes, bytes]) -> tuple[str, str, dict[str, Any], int] | None:
    """``(device, command_id, body, expires_ms)`` of a downlink entry, None if unusable."""
    try:
        if fields.get(b"t") != b"command":
            return None
        device = fields[b"device"].decode()
        cid = fields[b"id"].decode()
        body = json.loads(fields.get(b"body") or b"{}")
        exp_raw = fields.get(b"expires") or b"0"
        expires = int(float(exp_raw.decode())) if exp_raw not in (b"None", b"") else 0
    except (KeyError, ValueError, UnicodeDecodeError):
        return None
    if not isinstance(body, dict):
        body = {"name": str(body), "args": {}}
    return device, cid, body, expires


class DownlinkConsumer:
    """Consumes this edge's downlink stream until :meth:`stop`."""

    def __init__(self, redis_url: str, edge_id: str, deliver: Deliver, *,
                 block_ms: int = 1000, count: int = 100) -> None:
        self.key = downlink_key(edge_id)
        self.edge_id = edge_id
        self.deliver = deliver
        self.block_ms = block_ms
        self.count = count
        # No socket timeout below BLOCK: a blocking read must not time out client-side.
        self._redis = redis_conn.connect(redis_url, socket_timeout=block_ms / 1000 + 5,
                                         socket_connect_timeout=2.0)
        self._task: asyncio.Task[None] | None = None
        self._stopped = False
        self.received = 0
        self.bad = 0
        self.errors = 0

    def start(self) -> None:
        """Start consuming in the background."""
        self._task = asyncio.get_running_loop().create_task(self._run(), name="downlink")

    async def stop(self) -> None:
        """Stop and close the connection.

        The loop also checks a stop flag: on Python 3.11 a cancellation that
        lands as the blocking read's own timeout fires comes back as a timeout
        (a ``RedisError`` here), which the retry loop would otherwise swallow,
        leaving ``stop`` waiting for ever.
        """
        self._stopped = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(RedisError, OSError):
            await self._redis.aclose()

    async def _ensure_group(self) -> None:
        try:
            await self._redis.xgroup_create(self.key, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def _run(self) -> None:
        delay = 0.1
        backlog = True  # first our own pending entries (id 0), then new ones (>)
        while not self._stopped:
            try:
                await self._ensure_group()
                while not self._stopped:
                    resp: Any = await self._redis.xreadgroup(
                        GROUP, self.edge_id, {self.key: "0" if backlog else ">"},
                        count=self.count, block=None if backlog else self.block_ms)
                    entries = resp[0][1] if resp else []
                    if backlog and not entries:
                        backlog = False
                        continue
                    if entries:
                        await self._handle(entries)
                    delay = 0.1
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                if self._stopped:
                    return
                self.errors += 1
                log.warning("downlink read failed; retrying", extra={"error": repr(exc)})
                backlog = True  # anything read but not acked is pending: re-read it
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def _handle(self, entries: list[tuple[bytes, dict[bytes, bytes]]]) -> None:
        ids = []
        for eid, fields in entries:
            ids.append(eid)
            parsed = parse_entry(fields) if fields else None
            if parsed is None:
                self.bad += 1
                continue
            self.received += 1
            try:
                self.deliver(*parsed)
            except Exception:
                log.exception("command delivery failed")
        pipe = self._redis.pipeline(transaction=False)
        pipe.xack(self.key, GROUP, *ids)
        pipe.xdel(self.key, *ids)
        await pipe.execute()
