"""Device shadows kept at the edge (sans-I/O): reported and desired state with versions.

Like AWS IoT Device Shadow, kept current on the edge so a reconnecting device
gets its delta without a trip to the origin:

- ``reported`` comes from the device (REPORT_STATE) with a version the device
  counts up; a version not above the known one is *stale* and refused;
- ``desired`` comes from the origin (``PUT /v1/devices/{id}/desired`` → a
  ``desired`` command on the downlink) with the origin's ``desired_version``;
  an older desired version than the one known is ignored (out-of-order
  delivery, a re-push after reconnect);
- the *delta* is every desired field whose value differs from the reported one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["Shadow", "StaleVersion"]


class StaleVersion(ValueError):
    """A reported version not above the current one."""

    def __init__(self, given: int, current: int) -> None:
        super().__init__(f"reported version {given} is not above the current version "
                         f"{current}")
        self.given = given
        self.current = current


@dataclass(slots=True)
class Shadow:
    """One device's shadow."""

    reported: dict[str, Any] = field(default_factory=dict)
    version: int = 0
    desired: dict[str, Any] = field(default_factory=dict)
    desired_version: int = 0

    def report(self, version: int, state: dict[str, Any]) -> None:
        """Merge reported ``state`` at ``version``; raises :class:`StaleVersion`."""
        if version <= self.version:
            raise StaleVersion(version, self.version)
        self.reported.update(state)
        self.version = version

    def set_desired(self, version: int, state: dict[str, Any]) -> bool:
        """Merge desired ``state`` at ``version``; False (ignored) if older than known.
        The same version again is accepted (a re-push of the same command)."""
        if version < self.desired_version:
            return False
        self.desired.update(state)
        self.desired_version = version
        return True

    def delta(self) -> dict[str, Any]:
        """Desired fields whose value differs from the reported one."""
        rep = self.reported
        return {k: v for k, v in self.desired.items() if k not in rep or rep[k] != v}
