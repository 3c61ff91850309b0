"""The edge's telemetry pipeline (sans-I/O): validate → dedupe → window → detect.

The caller (``edge_node.iot.service``) owns sockets, clocks and the uplink:

1. :meth:`Pipeline.ingest` for each TELEMETRY batch, with the edge clock
   ``now_ms``: returns the refused samples, the alerts raised or cleared, and
   whether the batch was a duplicate (already folded in here);
2. :meth:`Pipeline.close_due` periodically: the rollups of closed windows,
   each to be submitted to the uplink; then :meth:`Pipeline.submitted` with
   the uplink ticket (the running number of the submission);
3. :meth:`Pipeline.ready_acks` with the highest ticket known durable: the
   batches that may be acknowledged (TELEMETRY_ACK) now.

A batch is acknowledged only when every window it went into has been closed
and its rollup is durable, so a device that loses its edge re-sends exactly the
batches that might not have reached the origin; the origin counts each
``(window, batch)`` piece once (see :mod:`edge_node.iot.window`).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

from edge_node.iot.detect import Detector, DetectorSettings
from edge_node.iot.validate import REASONS, SampleError, Validator
from edge_node.iot.window import Rollup, Windows

__all__ = ["IotSettings", "Alert", "IngestResult", "Pipeline"]


@dataclass(frozen=True, slots=True)
class IotSettings:
    """Telemetry settings (``EdgeSettings.iot_*`` fill them)."""

    #: Tumbling window length and grace for late samples, ms.
    window_ms: int = 1000
    grace_ms: int = 500
    #: Also forward the raw samples inside each rollup entry.
    raw: bool = False
    #: Percentile estimate per window (p50/p95/p99).
    quantiles: bool = True
    #: Accepted device-timestamp skew, ms.
    max_past_ms: int = 3_600_000
    max_future_ms: int = 60_000
    #: Recent batch ids remembered per device (duplicates are dropped).
    dedupe_batches: int = 4096
    detector: DetectorSettings = field(default_factory=DetectorSettings)
    #: Room that receives alerts on the edge ("" = none).
    alerts_room: str = "alerts"
    #: Shadows cached for devices not connected here (oldest dropped beyond).
    max_shadows: int = 100_000


@dataclass(frozen=True, slots=True)
class Alert:
    """An anomaly raised or cleared for one device metric."""

    device: str
    metric: str
    state: str
    value: float
    score: float
    baseline: float
    ts_ms: int
    detector: str

    def body(self) -> dict[str, Any]:
        """The alert as a map (uplink ``alert`` body and the alerts-room payload)."""
        return {"device": self.device, "metric": self.metric, "state": self.state,
                "value": self.value, "score": round(min(self.score, 1e9), 3),
                "baseline": self.baseline, "ts": self.ts_ms, "detector": self.detector}


@dataclass(slots=True)
class IngestResult:
    """What one batch produced."""

    accepted: int
    errors: list[SampleError]
    alerts: list[Alert]
    duplicate: bool


@dataclass(slots=True)
class _Batch:
    windows: set[int]
    accepted: int
    rejected: int
    ticket: int = 0
    done: bool = False


class _Device:
    __slots__ = ("batches", "detectors", "windows")

    def __init__(self, device: str, s: IotSettings) -> None:
        self.windows = Windows(device, s.window_ms, s.grace_ms, quantiles=s.quantiles,
                               raw=s.raw)
        self.detectors: dict[str, Detector] = {}
        self.batches: OrderedDict[int, _Batch] = OrderedDict()


class Pipeline:
    """All devices of one edge.  Counters are plain attributes (read at scrape)."""

    def __init__(self, settings: IotSettings) -> None:
        self.settings = settings
        self.devices: dict[str, _Device] = {}
        self._complete: deque[tuple[int, str, int]] = deque()
        self.batches = 0
        self.samples = 0
        self.accepted = 0
        self.rejected: dict[str, int] = dict.fromkeys(REASONS, 0)
        self.duplicates = 0
        self.alerts = 0
        self.rollups = 0

    def validator(self, metrics: tuple[tuple[str, float, float], ...] | None) -> Validator:
        """A validator for a device token's ``metrics`` claim (build once per session)."""
        s = self.settings
        spec = None if metrics is None else {n: (lo, hi) for n, lo, hi in metrics}
        return Validator(spec, s.max_past_ms, s.max_future_ms)

    def _device(self, device: str) -> _Device:
        d = self.devices.get(device)
        if d is None:
            d = self.devices[device] = _Device(device, self.settings)
        return d

    def ingest(self, device: str, validator: Validator, batch_id: int,
               samples: tuple[Any, ...], now_ms: int) -> IngestResult:
        """Fold one batch in (or recognise it as a duplicate)."""
        d = self._device(device)
        self.batches += 1
        known = d.batches.get(batch_id)
        if known is not None:
            self.duplicates += 1
            if known.done:  # acknowledged before (the ack may have been lost): again
                self._complete.append((known.ticket, device, batch_id))
            return IngestResult(0, [], [], True)
        ok, errors = validator.check(samples, now_ms)
        self.samples += len(samples)
        self.accepted += len(ok)
        for _i, reason, _m in errors:
            self.rejected[reason] += 1
        touched = d.windows.add_batch(batch_id, ok) if ok else set()
        b = _Batch(touched, len(ok), len(errors))
        d.batches[batch_id] = b
        if len(d.batches) > self.settings.dedupe_batches:
            d.batches.popitem(last=False)
        if not touched:
            b.done = True
            self._complete.append((0, device, batch_id))
        alerts: list[Alert] = []
        dets = d.detectors
        for name, v, ts in ok:
            det = dets.get(name)
            if det is None:
                det = dets[name] = Detector(self.settings.detector)
            verdict = det.update(v, ts / 1000.0)
            if verdict is not None:
                alerts.append(Alert(device, name, verdict.state, v, verdict.score,
                                    verdict.baseline, ts, verdict.detector))
        self.alerts += sum(1 for a in alerts if a.state == "raised")
        return IngestResult(len(ok), errors, alerts, False)

    def close_due(self, now_ms: int, *, force: bool = False) -> list[tuple[int, Rollup]]:
        """Rollups of every device's closed windows (all windows with ``force``), each
        with its window name for :meth:`submitted`."""
        out: list[tuple[int, Rollup]] = []
        for d in self.devices.values():
            if d.windows.open or d.windows.late:
                out.extend(d.windows.close_due(now_ms, force=force))
        self.rollups += len(out)
        return out

    def submitted(self, name: int, rollup: Rollup, ticket: int) -> None:
        """Record that ``rollup`` (window ``name``) went to the uplink as ``ticket``."""
        d = self.devices.get(rollup.device)
        if d is None:
            return
        for bid in rollup.pieces:
            b = d.batches.get(bid)
            if b is None or b.done:
                continue
            b.windows.discard(name)
            b.ticket = max(b.ticket, ticket)
            if not b.windows:
                b.done = True
                self._complete.append((b.ticket, rollup.device, bid))

    def ready_acks(self, durable_ticket: int) -> list[tuple[str, int, int, int]]:
        """``(device, batch_id, accepted, rejected)`` of batches now durable."""
        out: list[tuple[str, int, int, int]] = []
        q = self._complete
        while q and q[0][0] <= durable_ticket:
            _t, device, bid = q.popleft()
            d = self.devices.get(device)
            b = d.batches.get(bid) if d is not None else None
            if b is not None:
                out.append((device, bid, b.accepted, b.rejected))
        return out

    def forget(self, device: str) -> None:
        """Drop a device with no open windows (its dedupe memory goes too)."""
        d = self.devices.get(device)
        if d is not None and not d.windows.open and not d.windows.late:
            del self.devices[device]
