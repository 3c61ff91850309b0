"""IoT at the edge: telemetry validation, tumbling windows, anomaly detection,
device shadows (sans-I/O cores) and the service that wires them to sessions,
the hub and the uplink.  See ``docs/iot.md``."""

from __future__ import annotations

from .detect import Detector, DetectorSettings
from .pipeline import Alert, IotSettings, Pipeline
from .shadow import Shadow, StaleVersion
from .validate import Validator
from .window import Quantiles, Rollup, Windows

__all__ = ["Alert", "Detector", "DetectorSettings", "IotSettings", "Pipeline", "Quantiles",
           "Rollup", "Shadow", "StaleVersion", "Validator", "Windows"]
