"""The IoT part of an edge (I/O glue): device sessions, the pipeline clock, acks,
alerts, shadows and commands.

Wiring (``edge_node.server``): :meth:`IotService.attach` when a session opens,
:meth:`IotService.detach` when it ends, :meth:`IotService.handle` for device
frames (``ClientSession.handle`` dispatches them), :meth:`IotService.start` /
:meth:`IotService.stop` with the edge.  :meth:`IotService.deliver_command` is
called by the downlink consumer (``edge_node.iot.downlink``).

Durability tickets: the uplink sends entries in submission order (memory queue,
then spool, both FIFO), so the ``n``-th entry this process submitted is in Redis
once ``sent + dropped_overflow >= spool_at_start + n``.  A TELEMETRY_ACK goes out
only after that, so a device keeps every batch that might not have reached Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import msgpack

from client_sdk.protocol import (
    Ack,
    Command,
    CommandAck,
    Error,
    ErrorCode,
    Member,
    ReportState,
    ShadowDelta,
    Telemetry,
    TelemetryAck,
    TelemetryError,
    encode,
)
from edge_node.iot.pipeline import Alert, IotSettings, Pipeline
from edge_node.iot.shadow import Shadow, StaleVersion
from edge_node.iot.validate import Validator
from edge_node.runtime.tasks import spawn

if TYPE_CHECKING:
    from edge_node.fanout.hub import Hub
    from edge_node.functions.host import FunctionHost
    from edge_node.iot.downlink import DownlinkConsumer
    from edge_node.sessions.session import ClientSession
    from edge_node.transports.outbound import FrameSink
    from edge_node.uplink import Uplink

__all__ = ["IotService", "IOT_FRAMES"]

log = logging.getLogger("edge_node.iot")

#: Frame classes handled here (sent by devices).
IOT_FRAMES = (Telemetry, CommandAck, ReportState)


class _EdgeSender:
    """The edge itself as the publisher of alerts (a SessionLike that is no member)."""

    def __init__(self, edge_id: str) -> None:
        self.session_id = f"iot@{edge_id}"
        self.member = Member(self.session_id, self.session_id, "service")
        self.out = cast("FrameSink", None)
        self.closed = False

    def send(self, data: bytes) -> None:
        """Acks of alert publishes: nothing to do."""


@dataclass(slots=True)
class _PendingCommand:
    cid: str
    body: dict[str, Any]
    expires_ms: int


class IotService:
    """Device telemetry, shadows and commands on one edge."""

    def __init__(self, settings: IotSettings, hub: Hub, edge_id: str) -> None:
        self.settings = settings
        self.hub = hub
        self.edge_id = edge_id
        self.pipeline = Pipeline(settings)
        self.uplink: Uplink | None = None
        #: The downlink consumer (set by the server; its counters go in the metrics).
        self.downlink: DownlinkConsumer | None = None
        self.devices: dict[str, ClientSession] = {}
        self.shadows: dict[str, Shadow] = {}
        self._validators: dict[tuple[tuple[str, float, float], ...] | None, Validator] = {}
        self._commands: dict[str, dict[str, _PendingCommand]] = {}
        self._ticket_base = 0
        self._sender = _EdgeSender(edge_id)
        #: Alerts waiting for the alerts room to become active on this edge.
        self._alert_queue: list[dict[str, Any]] = []
        self._task: asyncio.Task[None] | None = None
        self.acks_sent = 0
        self.commands_delivered = 0
        self.commands_acked = 0
        self.stale_reports = 0
        self.alert_latency_ms: list[float] = []
        #: The edge's functions (None: none loaded): telemetry, window and alert events.
        self.functions: FunctionHost | None = None

    # -- lifecycle ----------------------------------------------------------

    def start(self, uplink: Uplink | None) -> None:
        """Start the pipeline clock; ``uplink`` None = an edge without Redis (acks at once).
        Call right after ``await uplink.start()`` (before the loop runs the uplink)."""
        self.uplink = uplink
        if uplink is not None:
            # Entries left in the spool by a previous run are sent first and counted
            # in ``sent``: they are not ours.
            self._ticket_base = uplink.spool_size - uplink.sent - uplink.submitted
        self._task = asyncio.get_running_loop().create_task(self._clock(), name="iot-clock")

    async def stop(self) -> None:
        """Close every window and submit its rollup (the uplink then sends or spools it)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._flush(force=True)

    def register_metrics(self, registry: Any) -> None:
        """Add the ``edge_iot_*`` collector to a prometheus ``CollectorRegistry``."""
        from edge_node.iot.metrics import IotCollector

        registry.register(IotCollector(self))

    def _durable(self) -> int:
        up = self.uplink
        if up is None:
            return math.inf  # type: ignore[return-value]
        return up.sent + up.dropped_overflow

    async def _clock(self) -> None:
        period = max(0.02, min(0.1, self.settings.window_ms / 10_000))
        last_sweep = time.monotonic()
        while True:
            await asyncio.sleep(period)
            try:
                self._flush()
                if time.monotonic() - last_sweep >= 10.0:
                    last_sweep = time.monotonic()
                    self._sweep()
            except Exception:
                log.exception("iot pipeline tick failed")

    def _sweep(self) -> None:
        """Forget devices that left, once nothing of theirs is open or unacknowledged
        (a device that comes back has its re-sent batches counted once by the origin),
        drop expired waiting commands, and bound the shadow cache."""
        p = self.pipeline
        for device in [d for d in p.devices if d not in self.devices]:
            st = p.devices[device]
            if all(b.done for b in st.batches.values()):
                p.forget(device)
        now = time.time_ns() // 1_000_000
        for device in list(self._commands):
            waiting = self._commands[device]
            for cid in [c for c, pc in waiting.items() if pc.expires_ms and pc.expires_ms < now]:
                del waiting[cid]
            if not waiting:
                del self._commands[device]
        if len(self.shadows) > self.settings.max_shadows:
            for device in [d for d in self.shadows if d not in self.devices][
                    :len(self.shadows) - self.settings.max_shadows]:
                del self.shadows[device]

    def _flush(self, force: bool = False) -> None:
        p = self.pipeline
        for name, rollup in p.close_due(time.time_ns() // 1_000_000, force=force):
            ticket = 0
            if self.uplink is not None:
                self.uplink.submit("rollup", rollup.device, rollup.body())
                ticket = self.uplink.submitted + self._ticket_base
            p.submitted(name, rollup, ticket)
            if self.functions is not None and not rollup.late:
                self.functions.emit("window", rollup.device, {
                    "start_ms": rollup.start_ms, "length_ms": rollup.length_ms,
                    "samples": rollup.samples, "metrics": rollup.metrics})
        for device, bid, acc, rej in p.ready_acks(self._durable()):
            s = self.devices.get(device)
            if s is not None and not s.closed:
                s.send(encode(TelemetryAck(bid, acc, rej)))
                self.acks_sent += 1

    # -- sessions -----------------------------------------------------------

    def attach(self, session: ClientSession) -> None:
        """A session opened: for a device, send its shadow delta and waiting commands."""
        if session.claims.kind != "device":
            return
        device = session.claims.subject
        self.devices[device] = session
        sh = self.shadows.get(device)
        if sh is not None:
            # Always, even with no delta: it tells a device that restarted (and counts
            # from 0 again) the reported version the edge holds.
            session.send(encode(ShadowDelta(sh.version, sh.desired_version, sh.delta(), "")))
        waiting = self._commands.pop(device, None)
        if waiting:
            for pc in waiting.values():
                self._send_command(device, pc.cid, pc.body, pc.expires_ms)

    def detach(self, session: ClientSession) -> None:
        """A session ended."""
        device = session.claims.subject
        if self.devices.get(device) is session:
            del self.devices[device]

    def handle(self, session: ClientSession, frame: Telemetry | CommandAck | ReportState
               ) -> None:
        """A device frame from ``session``."""
        if session.claims.kind != "device":
            req = frame.req_id if isinstance(frame, ReportState) else 0
            session.send(encode(Error(req, ErrorCode.FORBIDDEN,
                                      f"{type(frame).__name__} frames need a device token")))
            return
        if isinstance(frame, Telemetry):
            self._telemetry(session, frame)
        elif isinstance(frame, ReportState):
            self._report(session, frame)
        else:
            self._command_ack(session, frame)

    # -- telemetry ----------------------------------------------------------

    def _validator(self, session: ClientSession) -> Validator:
        key = session.claims.metrics  # tokens with the same claim share a validator
        v = self._validators.get(key)
        if v is None:
            if len(self._validators) > 10_000:
                self._validators.clear()
            v = self._validators[key] = self.pipeline.validator(key)
        return v

    def _telemetry(self, session: ClientSession, f: Telemetry) -> None:
        device = session.claims.subject
        now = time.time_ns() // 1_000_000
        res = self.pipeline.ingest(device, self._validator(session), f.batch_id, f.samples,
                                   now)
        if res.errors:
            session.send(encode(TelemetryError(f.batch_id, tuple(res.errors))))
        fn = self.functions
        if (fn is not None and res.accepted and not res.duplicate
                and fn.watches("telemetry", device)):
            bad = {e[0] for e in res.errors}
            fn.emit("telemetry", device, {"batch": f.batch_id, "samples": [
                list(x) for i, x in enumerate(f.samples) if i not in bad]})
        for a in res.alerts:
            self._alert(a, now)

    def _alert(self, a: Alert, now_ms: int) -> None:
        body = a.body()
        body["edge"] = self.edge_id
        if a.state == "raised":
            self.alert_latency_ms.append(float(now_ms - a.ts_ms))
            del self.alert_latency_ms[:-10_000]
        room = self.settings.alerts_room
        if room and room in self.hub.rooms and not self._alert_queue:
            self._publish_alert(room, body)
        elif room:
            # The alerts room is not active here (nobody on this edge joined it): make
            # it active, then publish, in order, so members on every edge get alerts.
            self._alert_queue.append(body)
            if len(self._alert_queue) == 1:
                spawn(self._alerts_later(room), name="iot-alerts")
        if self.uplink is not None:
            self.uplink.submit("alert", a.device, body)
        if self.functions is not None:
            self.functions.emit("alert", a.device, body)

    def _publish_alert(self, room: str, body: dict[str, Any]) -> None:
        try:
            self.hub.publish(self._sender, room, msgpack.packb(body), True, 0, 0)
        except Exception:
            log.exception("alert publish failed")

    async def _alerts_later(self, room: str) -> None:
        try:
            await self.hub.ensure_room(room)
        except Exception:
            log.exception("alerts room could not be activated; alerts dropped",
                          extra={"room": room, "alerts": len(self._alert_queue)})
            self._alert_queue.clear()
            return
        queued, self._alert_queue = self._alert_queue, []
        for body in queued:
            self._publish_alert(room, body)

    # -- shadows ------------------------------------------------------------

    def _shadow(self, device: str) -> Shadow:
        sh = self.shadows.get(device)
        if sh is None:
            sh = self.shadows[device] = Shadow()
        return sh

    def _report(self, session: ClientSession, f: ReportState) -> None:
        device = session.claims.subject
        sh = self._shadow(device)
        try:
            sh.report(f.version, f.state)
        except StaleVersion as exc:
            self.stale_reports += 1
            # The current version first (a SHADOW_DELTA, frames keep their order), so
            # the device knows it when the refusal arrives.
            session.send(encode(ShadowDelta(sh.version, sh.desired_version, sh.delta(), "")))
            session.send(encode(Error(f.req_id, ErrorCode.STALE_VERSION, str(exc))))
            return
        session.send(encode(Ack(f.req_id, 0, f.version)))
        if self.uplink is not None:
            self.uplink.submit("shadow", device, {**f.state, "_v": f.version})
        delta = sh.delta()
        if delta:
            session.send(encode(ShadowDelta(sh.version, sh.desired_version, delta, "")))

    # -- commands -----------------------------------------------------------

    def deliver_command(self, device: str, cid: str, body: dict[str, Any],
                        expires_ms: int) -> bool:
        """A command from the downlink: to the device now if it is here, else kept until
        it connects here or the command expires.  True if sent now."""
        if expires_ms and expires_ms < time.time_ns() // 1_000_000:
            return False
        if body.get("name") == "desired" and isinstance(body.get("args"), dict):
            ver = body.get("version")
            self._shadow(device).set_desired(ver if type(ver) is int else 0, body["args"])
        if device in self.devices:
            self._send_command(device, cid, body, expires_ms)
            return True
        waiting = self._commands.setdefault(device, {})
        waiting[cid] = _PendingCommand(cid, body, expires_ms)
        now = time.time_ns() // 1_000_000
        for k in [k for k, pc in waiting.items() if pc.expires_ms and pc.expires_ms < now]:
            del waiting[k]
        return False

    def _send_command(self, device: str, cid: str, body: dict[str, Any],
                      expires_ms: int) -> None:
        s = self.devices[device]
        if body.get("name") == "desired":
            sh = self._shadow(device)
            s.send(encode(ShadowDelta(sh.version, sh.desired_version, sh.delta(), cid)))
        else:
            args = body.get("args")
            s.send(encode(Command(cid, str(body.get("name", "")),
                                  args if isinstance(args, dict) else {}, expires_ms)))
        self.commands_delivered += 1

    def _command_ack(self, session: ClientSession, f: CommandAck) -> None:
        self.commands_acked += 1
        if self.uplink is not None:
            self.uplink.submit("command_ack", session.claims.subject,
                               {"id": f.command_id, "status": f.status, "result": f.result})

    # -- introspection ------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Counters for the demo, ``/healthz``-style probes and tests."""
        p = self.pipeline
        lat = sorted(self.alert_latency_ms)

        def q(x: float) -> float:
            return lat[min(len(lat) - 1, int(x * len(lat)))] if lat else 0.0

        return {"batches": p.batches, "samples": p.samples, "accepted": p.accepted,
                "rejected": dict(p.rejected), "duplicates": p.duplicates,
                "late": sum(d.windows.late_samples for d in p.devices.values()),
                "alerts": p.alerts, "rollups": p.rollups, "acks": self.acks_sent,
                "devices": len(self.devices), "commands_delivered": self.commands_delivered,
                "commands_acked": self.commands_acked, "stale_reports": self.stale_reports,
                "alert_latency_ms": {"p50": q(0.5), "p99": q(0.99)}}


def iot_settings(s: Any) -> IotSettings:
    """:class:`IotSettings` from an ``EdgeSettings`` (its ``iot_*`` fields)."""
    from edge_node.iot.detect import DetectorSettings

    return IotSettings(window_ms=s.iot_window_ms, grace_ms=s.iot_grace_ms, raw=s.iot_raw,
                       alerts_room=s.iot_alerts_room,
                       detector=DetectorSettings(mode=s.iot_detector, z_on=s.iot_z_on))
