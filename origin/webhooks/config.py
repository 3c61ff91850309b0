"""Webhook settings: which URLs get which event kinds, the signing secrets, bounds.

Specs are ``KIND=URL`` (``*=URL``: every kind), from ``--webhook`` (repeatable) and
``ORIGIN_WEBHOOKS`` (comma-separated).  Secrets: ``--webhook-secret`` or
``ORIGIN_WEBHOOK_SECRET`` (comma-separated: every one signs, for rotation).  Webhooks
without a secret are refused: receivers must be able to tell our requests from
anyone's.  Mistakes are a :class:`WebhookSpecError` with one line, at start-up.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlsplit

from edge_node.contract import KINDS
from origin.hooks.retry import RetryPolicy
from origin.webhooks.http import parse_url

__all__ = ["WebhookSpecError", "WebhookSettings", "parse_webhooks", "parse_secrets",
           "redact"]


class WebhookSpecError(ValueError):
    """A webhook setting that cannot be used (the message says why)."""


@dataclass(frozen=True, slots=True)
class WebhookSettings:
    """Every webhook setting of a worker."""

    #: ``(kind, url)`` pairs; one URL may serve several kinds (one breaker per URL).
    hooks: tuple[tuple[str, str], ...] = ()
    secrets: tuple[bytes, ...] = ()
    #: One delivery (connect, send, response head), seconds.
    timeout: float = 10.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    #: Breaker: consecutive failures that open it; how long it stays open, seconds.
    breaker_failures: int = 5
    breaker_cooldown: float = 30.0


def parse_webhooks(specs: list[str], env: str = "") -> tuple[tuple[str, str], ...]:
    """``["alert=http://h/p", ...]`` plus ``env`` (comma-separated) -> ``(kind, url)``."""
    out: list[tuple[str, str]] = []
    for spec in [*specs, *env.split(",")]:
        spec = spec.strip()
        if not spec:
            continue
        kind, sep, url = spec.partition("=")
        kind, url = kind.strip(), url.strip()
        if not sep or not kind or not url:
            raise WebhookSpecError(f"webhook {spec!r}: expected KIND=URL")
        if kind != "*" and kind not in KINDS:
            raise WebhookSpecError(f"webhook {spec!r}: unknown event kind {kind!r} (one of "
                                   f"{', '.join(sorted(KINDS))}, or '*')")
        try:
            parse_url(url)
        except ValueError as exc:
            raise WebhookSpecError(f"webhook {spec!r}: {exc}") from None
        if (kind, url) not in out:
            out.append((kind, url))
    return tuple(out)


def parse_secrets(value: str) -> tuple[bytes, ...]:
    """Comma-separated secrets (each at least 16 bytes)."""
    out = tuple(s.strip().encode() for s in value.split(",") if s.strip())
    for s in out:
        if len(s) < 16:
            raise WebhookSpecError("webhook secret: each secret needs at least 16 characters")
    return out


def check(settings: WebhookSettings) -> None:
    """Refuse webhooks without a secret (one line)."""
    if settings.hooks and not settings.secrets:
        raise WebhookSpecError("webhooks need a signing secret: set --webhook-secret or "
                               "ORIGIN_WEBHOOK_SECRET")


def redact(url: str) -> str:
    """The URL as metrics and logs show it: no query string (it may hold a token)."""
    u = urlsplit(url)
    return f"{u.scheme}://{u.netloc}{u.path or '/'}"
