"""IoT at the edge: telemetry validation, tumbling windows, anomaly detection,
device shadows (sans-I/O cores) and the service that wires them to sessions,
the hub and the uplink.  See ``docs/iot.md``."""

from __future__ import annotations

from edge_node.iot.detect import Detector, DetectorSettings
from edge_node.iot.pipeline import Alert, IotSettings, Pipeline
from edge_node.iot.shadow import Shadow, StaleVersion
from edge_node.iot.validate import Validator
from edge_node.iot.window import Quantiles, Rollup, Windows

__all__ = ["Alert", "Detector", "DetectorSettings", "IotSettings", "Pipeline", "Quantiles",
           "Rollup", "Shadow", "StaleVersion", "Validator", "Windows"]
