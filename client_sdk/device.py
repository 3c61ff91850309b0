"""The device side of the SDK: telemetry with batching and an offline buffer,
commands, reported state and shadow deltas.

::

    dev = await Device.connect(["ws://edge-a:8700", "ws://edge-b:8700"], token)
    dev.on_command = lambda cmd: {"ok": True}          # return value = result map
    dev.on_delta = lambda delta, frame: apply(delta)   # desired != reported
    dev.send_telemetry("temp", 21.5)                   # never blocks
    await dev.report_state({"fw": "1.2.0"})
    await dev.flush(); await dev.wait_acked(5.0)
    await dev.close()

**Offline buffer.** Samples are grouped into batches (``batch_max`` samples or
``linger`` seconds).  Each batch gets an id unique for this device (counting up
from the start time in µs) and stays in the buffer until the edge acknowledges
it (TELEMETRY_ACK: its samples are durable).  While disconnected, batches keep
accumulating (up to ``buffer_max`` samples; beyond, the oldest batches are
dropped and counted in :attr:`Device.dropped`).  After a reconnect or failover,
whichever edge, every unacknowledged batch is sent again in order; edges and
the origin recognise batch ids, so nothing is counted twice.  A batch without an
ack for ``resend_after`` seconds is sent again on the same connection too.

**Commands** are delivered at least once; :class:`Device` drops repeats by id
(the last ``seen_commands`` ids) and answers each with COMMAND_ACK: status
``done`` with the handler's result map, or ``failed`` with the error text.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .client import Client, connect
from .errors import EdgeRelayError, ServerError
from .protocol import (
    Command,
    CommandAck,
    ErrorCode,
    ReportState,
    ShadowDelta,
    Telemetry,
    TelemetryAck,
    TelemetryError,
)

__all__ = ["Device", "TelemetryRejection"]

log = logging.getLogger("client_sdk.device")

CommandHandler = Callable[[Command], "dict[str, Any] | Awaitable[dict[str, Any] | None] | None"]


@dataclass(frozen=True, slots=True)
class TelemetryRejection:
    """A sample the edge refused: its batch, index, metric, reason and message."""

    batch_id: int
    index: int
    metric: str
    reason: str
    message: str


@dataclass(slots=True)
class _Batch:
    samples: list[list[Any]]
    sent_at: float = 0.0


class Device:
    """A device connection.  Create with :meth:`Device.connect` (or wrap a :class:`Client`)."""

    def __init__(self, client: Client, *, batch_max: int = 100, linger: float = 0.1,
                 buffer_max: int = 100_000, resend_after: float = 10.0,
                 seen_commands: int = 1024) -> None:
        if batch_max < 1 or buffer_max < batch_max:
            raise ValueError("need batch_max >= 1 and buffer_max >= batch_max")
        self.client = client
        self.batch_max = batch_max
        self.linger = linger
        self.buffer_max = buffer_max
        self.resend_after = resend_after
        #: Called for each command (may be async); its return value is the result map.
        self.on_command: CommandHandler | None = None
        #: Called with ``(delta, frame)`` when desired state differs from reported.
        self.on_delta: Callable[[dict[str, Any], ShadowDelta], None] | None = None
        #: Called for each refused sample.
        self.on_rejected: Callable[[TelemetryRejection], None] | None = None
        self.version = 0
        self.desired_version = 0
        self.sent_samples = 0
        self.acked_samples = 0
        self.rejected: list[TelemetryRejection] = []
        self.dropped = 0
        self.resent_batches = 0
        self.commands: list[Command] = []
        self._next_bid = time.time_ns() // 1000
        self._open: list[list[Any]] = []
        self._open_since = 0.0
        self._unacked: OrderedDict[int, _Batch] = OrderedDict()
        self._buffered = 0
        self._seen_cmds: OrderedDict[str, None] = OrderedDict()
        self._seen_max = seen_commands
        self._acked = asyncio.Event()
        self._acked.set()
        self._tasks: set[asyncio.Task[Any]] = set()
        prev_reconnect, prev_handoff = client.on_reconnect, client.on_handoff

        def again(c: Client, prev: Callable[[Client], None] | None) -> None:
            self._resend_all()
            if prev is not None:
                prev(c)

        client.on_reconnect = lambda c: again(c, prev_reconnect)
        client.on_handoff = lambda c: again(c, prev_handoff)
        # The client's extension seam: device frames come to these handlers.
        client.add_frame_handler(TelemetryAck, self._on_telemetry_ack)
        client.add_frame_handler(TelemetryError, self._on_telemetry_error)
        client.add_frame_handler(Command, self._command)
        client.add_frame_handler(ShadowDelta, self._on_delta)
        self._timer = asyncio.get_running_loop().create_task(self._tick(), name="device-tick")

    @classmethod
    async def connect(cls, urls: str | Sequence[str], token: str, *, name: str = "",
                      client_options: dict[str, Any] | None = None,
                      **options: Any) -> Device:
        """Connect to the first edge of ``urls`` that answers and return a device."""
        client = await connect(urls, token, name=name, **(client_options or {}))
        return cls(client, **options)

    # -- telemetry ----------------------------------------------------------

    @property
    def buffered(self) -> int:
        """Samples not yet acknowledged (open batch included)."""
        return self._buffered + len(self._open)

    def send_telemetry(self, metric: str, value: float, ts_ms: int | None = None) -> None:
        """Queue one sample (``ts_ms``: device time, Unix ms; default now).  Never blocks."""
        if ts_ms is None:
            ts_ms = time.time_ns() // 1_000_000
        if not self._open:
            self._open_since = time.monotonic()
        self._open.append([metric, value, ts_ms])
        if len(self._open) >= self.batch_max:
            self._seal()

    async def flush(self) -> None:
        """Send the open batch now (does not wait for its ack)."""
        self._seal()

    def _seal(self) -> None:
        if not self._open:
            return
        bid = self._next_bid
        self._next_bid += 1
        batch = _Batch(self._open)
        self._open = []
        self._unacked[bid] = batch
        self._buffered += len(batch.samples)
        self._acked.clear()
        while self._buffered > self.buffer_max and len(self._unacked) > 1:
            _old_bid, old = self._unacked.popitem(last=False)
            self._buffered -= len(old.samples)
            self.dropped += len(old.samples)
        self._send_batch(bid, batch)

    def _send_batch(self, bid: int, batch: _Batch) -> bool:
        if not self.client.connected:
            return False
        try:
            self.client.send_frame(Telemetry(bid, tuple(batch.samples)))
        except EdgeRelayError:
            return False
        if not batch.sent_at:
            self.sent_samples += len(batch.samples)
        batch.sent_at = time.monotonic()
        return True

    def _resend_all(self) -> None:
        for bid, batch in list(self._unacked.items()):
            if not self._send_batch(bid, batch):
                return
            self.resent_batches += 1

    async def wait_acked(self, timeout: float) -> bool:
        """Wait until every sealed batch is acknowledged; False on timeout."""
        try:
            async with asyncio.timeout(timeout):
                await self._acked.wait()
        except TimeoutError:
            return False
        return True

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(min(self.linger / 2, 1.0) if self.linger > 0 else 0.05)
            now = time.monotonic()
            if self._open and now - self._open_since >= self.linger:
                self._seal()
            if self.client.connected:
                for bid, batch in list(self._unacked.items()):
                    if batch.sent_at == 0.0 or now - batch.sent_at >= self.resend_after:
                        if not self._send_batch(bid, batch):
                            break
                        self.resent_batches += 1

    # -- shadow -------------------------------------------------------------

    async def report_state(self, state: dict[str, Any], version: int | None = None,
                           timeout: float = 10.0) -> int:
        """Report state (merged into the shadow) at ``version`` (default: the last one
        + 1).  Returns the version.  With the default version, a device that restarted
        just works: the edge tells it the version it holds on connect (and before a
        refusal, after which the report is sent once more at that version + 1).  An
        explicit ``version`` the edge already has raises
        :class:`~client_sdk.errors.ServerError` with code 4408.  Sent through
        :meth:`Client.request`: while the client reconnects it waits for the link
        (up to ``timeout``), then up to ``timeout`` for the answer."""
        ver = self.version + 1 if version is None else version
        try:
            await self.client.request(ReportState(0, ver, state), timeout=timeout)
        except ServerError as exc:
            # A device that restarted counts from 0 again: the edge sent the version it
            # holds (SHADOW_DELTA) just before refusing, so the next one is known.
            if version is not None or exc.code != ErrorCode.STALE_VERSION:
                raise
            ver = self.version + 1
            await self.client.request(ReportState(0, ver, state), timeout=timeout)
        self.version = max(self.version, ver)
        return ver

    # -- inbound ------------------------------------------------------------

    def _on_telemetry_ack(self, f: TelemetryAck) -> None:
        batch = self._unacked.pop(f.batch_id, None)
        if batch is not None:
            self._buffered -= len(batch.samples)
            self.acked_samples += f.accepted
        if not self._unacked:
            self._acked.set()

    def _on_telemetry_error(self, f: TelemetryError) -> None:
        batch = self._unacked.get(f.batch_id)
        for idx, reason, msg in f.errors:
            metric = ""
            if batch is not None and idx < len(batch.samples):
                metric = str(batch.samples[idx][0])
            rej = TelemetryRejection(f.batch_id, idx, metric, reason, msg)
            self.rejected.append(rej)
            del self.rejected[:-1000]
            if self.on_rejected is not None:
                self.on_rejected(rej)

    def _on_delta(self, f: ShadowDelta) -> None:
        self.version = max(self.version, f.version)  # the reported version the edge holds
        self.desired_version = max(self.desired_version, f.desired_version)
        if f.delta and self.on_delta is not None:
            try:
                self.on_delta(dict(f.delta), f)
            except Exception:
                log.exception("on_delta failed")
        if f.command_id:
            self._ack_command(f.command_id, "applied", {})

    def _ack_command(self, cid: str, status: str, result: dict[str, Any]) -> None:
        with contextlib.suppress(EdgeRelayError):
            self.client.send_frame(CommandAck(cid, status, result))

    def _command(self, cmd: Command) -> None:
        if cmd.command_id in self._seen_cmds:
            self._ack_command(cmd.command_id, "done", {})  # our ack may have been lost
            return
        self._seen_cmds[cmd.command_id] = None
        if len(self._seen_cmds) > self._seen_max:
            self._seen_cmds.popitem(last=False)
        self.commands.append(cmd)
        del self.commands[:-1000]
        handler = self.on_command
        if handler is None:
            self._ack_command(cmd.command_id, "done", {})
            return

        async def run() -> None:
            try:
                res = handler(cmd)
                if inspect.isawaitable(res):
                    res = await res
                self._ack_command(cmd.command_id, "done", res if isinstance(res, dict) else {})
            except Exception as exc:
                self._ack_command(cmd.command_id, "failed", {"error": str(exc)[:200]})

        t = asyncio.get_running_loop().create_task(run())
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """Stop the timer and close the connection (unacked batches are not sent)."""
        self._timer.cancel()
        for t in list(self._tasks):
            t.cancel()
        await self.client.close()
