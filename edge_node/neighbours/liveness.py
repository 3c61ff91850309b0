"""Is another edge alive?  A quick probe, used to move a dead owner's rooms
without waiting for its leases to lapse.

The probe asks the edge's ``/healthz`` over plain HTTP (HTTPS for a ``wss://`` edge,
without checking its certificate: nothing secret is sent, and an edge that answers
is alive whoever signed its certificate) with a short timeout.
A refused connection (process gone) or a timeout (frozen or cut off) counts
as dead; any HTTP answer (a draining edge says 503) as alive.  A false "dead"
(a partition between two edges that both still reach Redis) is safe: the stolen rooms' old owner is
fenced on its next append and becomes a mirror; messages it fanned out but
could not append are re-sent by their publishers' outboxes.
"""

from __future__ import annotations

from client_sdk.probe import healthz
from client_sdk.transport import TlsOptions

__all__ = ["probe_edge"]

_ANY_CERT = TlsOptions(verify=False)


async def probe_edge(ws_url: str, timeout: float = 0.3) -> bool:
    """True when the edge at ``ws_url`` answers ``/healthz`` within ``timeout``.

    Any HTTP answer counts as alive, a 503 too: a draining edge still owns its
    rooms until it hands them over.
    """
    return await healthz(ws_url, timeout, _ANY_CERT) is not None
