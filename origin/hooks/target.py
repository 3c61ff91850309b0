"""What the hooks runner drives: targets (an origin function, a webhook URL), each
tried once per :meth:`Target.attempt` and reporting an :class:`Outcome`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from origin.hooks.record import OriginEvent

__all__ = ["Outcome", "Target"]


@dataclass(frozen=True, slots=True)
class Outcome:
    """One attempt's result.

    ``ok``: done.  Otherwise ``error`` says why; ``permanent``: do not retry;
    ``not_before`` set: no attempt was made (an open breaker), ask again then."""

    ok: bool
    error: str = ""
    permanent: bool = False
    not_before: float | None = None
    #: Seconds the attempt took (None when no attempt was made).
    latency: float | None = None


class Target(Protocol):
    """Something an event is handed to."""

    #: Unique among the targets: ``fn:NAME`` or ``url:URL`` (the done-record field).
    name: str
    #: ``function`` or ``webhook`` (which counters it moves).
    family: str

    async def attempt(self, event: OriginEvent, attempt: int, now: float) -> Outcome:
        """Try once (``attempt``: 1-based; ``now``: the runner's clock)."""
        ...
