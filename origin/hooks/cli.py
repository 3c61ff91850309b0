"""The origin CLI's flags for origin functions and webhooks (``worker`` and ``run``).

``run`` checks them once (a bad spec: one line, exit 2, before any worker starts) and
passes them on to each worker it starts; the webhook secret goes to the workers in
their environment (``ORIGIN_WEBHOOK_SECRET``), never on a command line.
"""

from __future__ import annotations

import argparse
import os

from origin.functions.loader import ENV as FUNCTIONS_ENV
from origin.functions.loader import load_functions
from origin.hooks.retry import RetryPolicy
from origin.hooks.runner import HookSettings
from origin.hooks.setup import HookConfig
from origin.webhooks.config import (
    WebhookSettings,
    WebhookSpecError,
    check,
    parse_secrets,
    parse_webhooks,
)

__all__ = ["add_hook_args", "hook_config_from_args", "worker_hook_args", "SECRET_ENV"]

WEBHOOKS_ENV = "ORIGIN_WEBHOOKS"
SECRET_ENV = "ORIGIN_WEBHOOK_SECRET"

#: Flags passed on from ``run`` to its workers as they are: (dest, flag).
_PASS_ON = (("webhook_timeout", "--webhook-timeout"),
            ("webhook_max_attempts", "--webhook-max-attempts"),
            ("webhook_max_elapsed", "--webhook-max-elapsed"),
            ("webhook_backoff", "--webhook-backoff"),
            ("webhook_backoff_max", "--webhook-backoff-max"),
            ("breaker_failures", "--webhook-breaker-failures"),
            ("breaker_cooldown", "--webhook-breaker-cooldown"),
            ("function_max_attempts", "--function-max-attempts"),
            ("function_timeout", "--function-timeout"),
            ("hooks_claim_idle_ms", "--hooks-claim-idle-ms"),
            ("hooks_max_inflight", "--hooks-max-inflight"),
            ("hooks_concurrency", "--hooks-concurrency"))


def add_hook_args(p: argparse.ArgumentParser) -> None:
    """Add the functions and webhooks flags to a ``worker`` or ``run`` parser."""
    w, h, fr = WebhookSettings(), HookSettings(), HookSettings().function_retry
    g = p.add_argument_group("origin functions and webhooks (docs/webhooks.md)")
    g.add_argument("--functions", action="append", default=[], metavar="MODULE:ATTR",
                   help="an OriginFunctions object to run (repeatable; env "
                   f"{FUNCTIONS_ENV}, comma-separated; entry points "
                   "edge_relay.origin_functions)")
    g.add_argument("--webhook", action="append", default=[], metavar="KIND=URL",
                   help=f"POST events of KIND ('*': all) to URL (repeatable; env "
                   f"{WEBHOOKS_ENV}, comma-separated)")
    g.add_argument("--webhook-secret", default=None,
                   help=f"HMAC-SHA256 signing secret(s), comma-separated (env {SECRET_ENV})")
    g.add_argument("--webhook-timeout", type=float, default=w.timeout,
                   help="seconds for one delivery (default %(default)s)")
    g.add_argument("--webhook-max-attempts", type=int, default=w.retry.max_attempts,
                   help="attempts before dead-lettering (default %(default)s)")
    g.add_argument("--webhook-max-elapsed", type=float, default=w.retry.max_elapsed,
                   help="seconds from the first attempt after which an event is "
                   "dead-lettered (default %(default)s)")
    g.add_argument("--webhook-backoff", type=float, default=w.retry.base,
                   help="first retry waits up to this, seconds (default %(default)s)")
    g.add_argument("--webhook-backoff-max", type=float, default=w.retry.cap,
                   help="longest wait between attempts, seconds (default %(default)s)")
    g.add_argument("--webhook-breaker-failures", dest="breaker_failures", type=int,
                   default=w.breaker_failures,
                   help="consecutive failures that open a URL's breaker (default %(default)s)")
    g.add_argument("--webhook-breaker-cooldown", dest="breaker_cooldown", type=float,
                   default=w.breaker_cooldown,
                   help="seconds an open breaker waits before a probe (default %(default)s)")
    g.add_argument("--function-max-attempts", type=int, default=fr.max_attempts,
                   help="handler attempts before dead-lettering (default %(default)s)")
    g.add_argument("--function-timeout", type=float, default=h.function_timeout,
                   help="seconds one handler call may take (default %(default)s)")
    g.add_argument("--hooks-claim-idle-ms", type=int, default=h.claim_idle_ms,
                   help="claim hooks events another worker held this long (default "
                   "%(default)s)")
    g.add_argument("--hooks-max-inflight", type=int, default=h.max_inflight,
                   help="events a worker holds at once (default %(default)s)")
    g.add_argument("--hooks-concurrency", type=int, default=h.concurrency,
                   help="handler and webhook attempts a worker runs at once; its "
                   "hooks Redis pool has this many connections + 20 + shards (default "
                   "%(default)s)")


def hook_config_from_args(a: argparse.Namespace) -> HookConfig:
    """Load the functions and parse the webhooks; ``FunctionSpecError`` or
    :class:`WebhookSpecError` (one line) for a bad setting."""
    functions = load_functions(a.functions, os.environ.get(FUNCTIONS_ENV, ""))
    hooks = parse_webhooks(a.webhook, os.environ.get(WEBHOOKS_ENV, ""))
    secret = a.webhook_secret if a.webhook_secret is not None else os.environ.get(
        SECRET_ENV, "")
    try:
        retry = RetryPolicy(a.webhook_max_attempts, a.webhook_backoff,
                            a.webhook_backoff_max, a.webhook_max_elapsed)
        d = HookSettings()
        fretry = RetryPolicy(a.function_max_attempts, d.function_retry.base,
                             d.function_retry.cap, d.function_retry.max_elapsed)
    except ValueError as exc:
        raise WebhookSpecError(f"retry settings: {exc}") from None
    for name, value in (("--webhook-timeout", a.webhook_timeout),
                        ("--webhook-breaker-failures", a.breaker_failures),
                        ("--webhook-breaker-cooldown", a.breaker_cooldown),
                        ("--function-timeout", a.function_timeout),
                        ("--hooks-claim-idle-ms", a.hooks_claim_idle_ms),
                        ("--hooks-max-inflight", a.hooks_max_inflight),
                        ("--hooks-concurrency", a.hooks_concurrency)):
        if value <= 0:
            raise WebhookSpecError(f"{name} must be > 0")
    wh = WebhookSettings(hooks, parse_secrets(secret), a.webhook_timeout, retry,
                         a.breaker_failures, a.breaker_cooldown)
    check(wh)
    settings = HookSettings(max_inflight=a.hooks_max_inflight,
                            concurrency=a.hooks_concurrency,
                            claim_idle_ms=a.hooks_claim_idle_ms,
                            function_retry=fretry, function_timeout=a.function_timeout)
    return HookConfig(functions, wh, settings)


def worker_hook_args(a: argparse.Namespace) -> tuple[list[str], dict[str, str]]:
    """What ``run`` gives each worker: flags, and environment additions (the secret)."""
    args: list[str] = []
    for spec in a.functions:
        args += ["--functions", spec]
    for spec in a.webhook:
        args += ["--webhook", spec]
    for dest, flag in _PASS_ON:
        args += [flag, str(getattr(a, dest))]
    env = {SECRET_ENV: a.webhook_secret} if a.webhook_secret is not None else {}
    return args, env
