"""HMAC-SHA256 signatures of webhook bodies (sans-I/O).

Header ``X-Edge-Relay-Signature: t=<unix seconds>,v1=<hex>[,v1=<hex>...]`` where each
``hex = HMAC-SHA256(secret, f"{t}." + body)`` (one ``v1`` per configured secret, so a
secret can be rotated: the receiver accepts the request if any ``v1`` matches one of
its secrets).  The receiver also checks that ``t`` is recent (replay protection).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

__all__ = ["SIGNATURE_HEADER", "EVENT_ID_HEADER", "sign", "verify"]

SIGNATURE_HEADER = "X-Edge-Relay-Signature"
#: The event's stable id (``EDGE:SEQ``): receivers deduplicate on it.
EVENT_ID_HEADER = "X-Edge-Relay-Event-Id"


def _mac(secret: bytes, t: int, body: bytes) -> str:
    return hmac.new(secret, str(t).encode() + b"." + body, hashlib.sha256).hexdigest()


def sign(secrets: Sequence[bytes], body: bytes, t: int) -> str:
    """The signature header value for ``body`` sent at Unix time ``t``."""
    if not secrets:
        raise ValueError("no webhook secret")
    return ",".join([f"t={t}", *(f"v1={_mac(s, t, body)}" for s in secrets)])


def verify(secrets: Sequence[bytes], body: bytes, header: str, now: float,
           tolerance: float = 300.0) -> bool:
    """True if ``header`` signs ``body`` with one of ``secrets`` and its ``t`` is within
    ``tolerance`` seconds of ``now``."""
    t: int | None = None
    macs: list[str] = []
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        if name == "t" and value.isdigit():
            t = int(value)
        elif name == "v1":
            macs.append(value)
    if t is None or abs(now - t) > tolerance:
        return False
    return any(hmac.compare_digest(_mac(s, t, body), m) for s in secrets for m in macs)
