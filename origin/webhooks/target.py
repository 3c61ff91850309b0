"""A webhook URL as a hooks target: a signed POST per attempt, behind the URL's breaker.

Request: ``POST URL`` with the event as JSON (:meth:`OriginEvent.to_json_bytes`) and
the headers ``X-Edge-Relay-Event-Id`` (the event id: deduplicate on it),
``X-Edge-Relay-Event-Kind``, ``X-Edge-Relay-Attempt`` (1-based) and
``X-Edge-Relay-Signature`` (:mod:`origin.webhooks.signing`).  A 2xx status is a
delivery; 4xx other than 408, 425 and 429 is permanent (dead-lettered at once, and
not a breaker failure: the receiver answered); anything else (3xx, 5xx, 408/425/429,
no connection, a timeout) is a failure that is retried and counts toward the breaker.
"""

from __future__ import annotations

import time

from origin.hooks.record import OriginEvent
from origin.hooks.target import Outcome
from origin.webhooks.breaker import CircuitBreaker
from origin.webhooks.http import HttpError, post
from origin.webhooks.signing import EVENT_ID_HEADER, SIGNATURE_HEADER, sign

__all__ = ["WebhookTarget", "classify"]

_RETRYABLE_4XX = frozenset({408, 425, 429})


def classify(status: int) -> str:
    """``ok``, ``retry`` or ``permanent`` for an HTTP status."""
    if 200 <= status < 300:
        return "ok"
    if 400 <= status < 500 and status not in _RETRYABLE_4XX:
        return "permanent"
    return "retry"


class WebhookTarget:
    """POSTs events to one URL; shares that URL's breaker with its other kinds."""

    family = "webhook"

    def __init__(self, url: str, breaker: CircuitBreaker, secrets: tuple[bytes, ...],
                 timeout: float = 10.0) -> None:
        self.url = url
        self.name = f"url:{url}"
        self.breaker = breaker
        self.secrets = secrets
        self.timeout = timeout

    async def attempt(self, event: OriginEvent, attempt: int, now: float) -> Outcome:
        """One signed POST, if the breaker lets it go (else ``not_before``)."""
        if not self.breaker.allow(now):
            return Outcome(False, "circuit breaker open",
                           not_before=self.breaker.retry_at(now))
        probe = self.breaker.state.name == "HALF_OPEN"
        body = event.to_json_bytes()
        headers = {EVENT_ID_HEADER: event.id, "X-Edge-Relay-Event-Kind": event.kind,
                   "X-Edge-Relay-Attempt": str(attempt),
                   SIGNATURE_HEADER: sign(self.secrets, body, int(time.time()))}
        t0 = time.perf_counter()
        try:
            resp = await post(self.url, body, headers, timeout=self.timeout)
        except HttpError as exc:
            self.breaker.record(False, now + (time.perf_counter() - t0), probe=probe)
            return Outcome(False, str(exc), latency=time.perf_counter() - t0)
        latency = time.perf_counter() - t0
        verdict = classify(resp.status)
        # A permanent refusal still means the receiver is up: a success for the breaker.
        self.breaker.record(verdict != "retry", now + latency, probe=probe)
        if verdict == "ok":
            return Outcome(True, latency=latency)
        return Outcome(False, f"HTTP {resp.status} {resp.reason}".strip(),
                       permanent=verdict == "permanent", latency=latency)
