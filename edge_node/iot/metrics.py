"""Prometheus collector of the edge's IoT counters (read at scrape time; low cardinality:
no per-device labels)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from edge_node.iot.service import IotService

__all__ = ["IotCollector"]


class IotCollector(Collector):
    """``edge_iot_*`` metrics of one :class:`IotService`."""

    def __init__(self, service: IotService) -> None:
        self.svc = service

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        p, s = self.svc.pipeline, self.svc
        c = CounterMetricFamily("edge_iot_samples", "Telemetry samples received, by outcome "
                                "(accepted or the refusal reason)", labels=["outcome"])
        c.add_metric(["accepted"], p.accepted)
        for reason, n in sorted(p.rejected.items()):
            c.add_metric([reason], n)
        yield c
        for name, text, value in (
            ("edge_iot_batches", "TELEMETRY batches received", p.batches),
            ("edge_iot_duplicate_batches", "Batches received again (dropped, re-acked)",
             p.duplicates),
            ("edge_iot_rollups", "Window rollups sent to the origin", p.rollups),
            ("edge_iot_alerts", "Anomaly alerts raised", p.alerts),
            ("edge_iot_acks", "TELEMETRY_ACK frames sent", s.acks_sent),
            ("edge_iot_commands_delivered", "Commands sent to devices", s.commands_delivered),
            ("edge_iot_commands_acked", "Command acks from devices", s.commands_acked),
            ("edge_iot_stale_reports", "REPORT_STATE refused as stale", s.stale_reports),
        ):
            fam = CounterMetricFamily(name, text)
            fam.add_metric([], value)
            yield fam
        g = GaugeMetricFamily("edge_iot_devices", "Device sessions connected")
        g.add_metric([], len(s.devices))
        yield g
        g = GaugeMetricFamily("edge_iot_open_windows", "Telemetry windows open")
        g.add_metric([], sum(len(d.windows.open) for d in p.devices.values()))
        yield g
        dl = s.downlink
        if dl is not None:
            for name, text, value in (
                ("edge_downlink_received", "Commands read from the downlink stream",
                 dl.received),
                ("edge_downlink_bad", "Unusable downlink entries (acknowledged, skipped)",
                 dl.bad),
                ("edge_downlink_errors", "Failed downlink reads (retried)", dl.errors),
            ):
                fam = CounterMetricFamily(name, text)
                fam.add_metric([], value)
                yield fam
