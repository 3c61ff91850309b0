"""Which errors a client retries (sans-I/O)."""

from __future__ import annotations

from .protocol.codes import Retry, retry_for

__all__ = ["publish_retryable"]


def publish_retryable(code: int) -> bool:
    """True when a publish refused with ``code`` should stay in the outbox.

    Transient refusals (4000-4099: rate limited, owner did not confirm in time,
    overloaded) are retried; anything that reconnecting or waiting cannot fix
    (forbidden, not joined, too large) fails the publish.
    """
    return retry_for(code) is Retry.RECONNECT
