"""Plugs an application's functions into an edge: the host on the hub (RPCs from
sessions, presence and message events) and on the IoT service (telemetry, window and
alert events), and the ``edge_function_*`` metrics."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from edge_node.functions.host import FunctionHost
from edge_node.functions.limits import call_limits
from edge_node.functions.loader import describe, load_functions

if TYPE_CHECKING:
    from edge_node.config import EdgeSettings
    from edge_node.fanout.hub import Hub
    from edge_node.iot.service import IotService

__all__ = ["attach_functions"]

log = logging.getLogger("edge_node.functions")


class _FunctionCollector(Collector):
    def __init__(self, host: FunctionHost) -> None:
        self.host = host

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        h = self.host
        calls = CounterMetricFamily(
            "edge_function_calls", "Function runs (RPCs and event handlers) by outcome: "
            "ok, app_error, timeout, failed, busy, forbidden, unknown, too_large, "
            "bad_args, dropped, cancelled", labels=["function", "outcome"])
        for (name, outcome), n in sorted(h.tally.items()):
            calls.add_metric([name, outcome], n)
        secs = CounterMetricFamily("edge_function_seconds",
                                   "Wall time spent in each function (sum over its runs)",
                                   labels=["function"])
        for name, t in sorted(h.seconds.items()):
            secs.add_metric([name], t)
        running = GaugeMetricFamily("edge_function_in_flight",
                                    "Function runs in flight", labels=["what"])
        running.add_metric(["rpc"], h.slots.in_flight)
        running.add_metric(["event"], h.slots.events_in_flight)
        dropped = CounterMetricFamily("edge_function_events_dropped",
                                      "Events dropped: too many handlers running")
        dropped.add_metric([], h.events_dropped)
        yield from (calls, secs, running, dropped)


def attach_functions(s: EdgeSettings, hub: Hub, iot: IotService,
                     registry: Any) -> FunctionHost | None:
    """A :class:`FunctionHost` for the edge's ``functions`` specs (and the installed
    entry points), set on ``hub`` and ``iot``; None when there are none.  A bad spec
    raises :class:`~.loader.FunctionSpecError` (the CLI checks the specs first)."""
    functions = load_functions(s.functions)
    if not functions.rpcs and not functions.events:
        return None
    host = FunctionHost(functions, hub, call_limits(s))
    host.iot = iot
    hub.functions = host
    iot.functions = host
    registry.register(_FunctionCollector(host))
    log.info("functions loaded", extra={"functions": describe(functions)})
    return host
