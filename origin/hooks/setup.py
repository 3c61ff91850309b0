"""Wiring origin functions and webhooks into a worker: :class:`HookConfig` (what a
worker was told to run) and :func:`build_runner`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import redis.asyncio as aioredis

from origin.functions.registry import Registered
from origin.functions.target import FunctionTarget
from origin.hooks.runner import HookRunner, HookSettings
from origin.hooks.stats import HookStats
from origin.hooks.target import Target
from origin.webhooks.breaker import CircuitBreaker
from origin.webhooks.config import WebhookSettings, redact
from origin.webhooks.target import WebhookTarget

__all__ = ["HookConfig", "build_runner"]


@dataclass(frozen=True, slots=True)
class HookConfig:
    """Handlers, webhooks and bounds of one worker."""

    functions: Sequence[Registered] = ()
    webhooks: WebhookSettings = field(default_factory=WebhookSettings)
    settings: HookSettings = field(default_factory=HookSettings)

    def kinds(self) -> frozenset[str]:
        """Kinds the apply step queues for hooks (``*``: all)."""
        return frozenset([r.kind for r in self.functions]
                         + [k for k, _ in self.webhooks.hooks])

    def __bool__(self) -> bool:
        return bool(self.functions or self.webhooks.hooks)


def build_runner(cfg: HookConfig, r: aioredis.Redis, rb: aioredis.Redis, shards: int,
                 consumer: str) -> HookRunner:
    """A runner with one target per handler and per URL (one breaker per URL)."""
    stats = HookStats(consumer)
    targets: dict[str, list[Target]] = {}
    for reg in cfg.functions:
        targets.setdefault(reg.kind, []).append(
            FunctionTarget(reg, r, consumer, cfg.settings.function_timeout))
    wh = cfg.webhooks
    breakers: dict[str, CircuitBreaker] = {}
    for kind, url in wh.hooks:
        b = breakers.get(url)
        if b is None:
            b = breakers[url] = CircuitBreaker(wh.breaker_failures, wh.breaker_cooldown)
            stats.breakers[redact(url)] = b
        targets.setdefault(kind, []).append(WebhookTarget(url, b, wh.secrets, wh.timeout))
    return HookRunner(r, rb, shards, consumer, targets,
                      {"function": cfg.settings.function_retry, "webhook": wh.retry},
                      cfg.settings, stats)
