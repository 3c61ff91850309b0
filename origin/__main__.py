"""``python -m origin``: run origin workers, the HTTP API, or both; print stats.

Commands (each has ``--help``): ``worker``, ``api``, ``run`` (N workers + the API,
one process group; Ctrl-C/SIGTERM stops all), ``stats`` (JSON of the origin's
counters).  Settings: flags, or ``REDIS_URL``, ``ORIGIN_SHARDS``, ``ORIGIN_API_KEYS``;
origin functions and webhooks: ``--functions``/``ORIGIN_FUNCTIONS``,
``--webhook``/``ORIGIN_WEBHOOKS``, ``--webhook-secret``/``ORIGIN_WEBHOOK_SECRET``
(:mod:`origin.hooks.cli`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
from typing import TYPE_CHECKING

from edge_node.contract import ShardCountMismatch
from edge_node.redis_io.conn import RedisURLError, check_url
from origin.settings import OriginSettings, api_keys_from_env

if TYPE_CHECKING:
    from origin.supervise import WorkerSupervisor

__all__ = ["main", "build_parser"]


class UsageError(Exception):
    """A mistake the user can fix (bad setting, Redis unreachable): one line, exit 2."""


def require_redis(url: str) -> None:
    """At start: one PING to ``url``; :class:`UsageError` naming the cause and the fix.

    Only at start: once running, workers and the API ride out Redis outages."""
    from redis.exceptions import RedisError

    from edge_node.redis_io import conn as redis_conn

    try:
        asyncio.run(redis_conn.ping(url))
    except (RedisError, OSError, TimeoutError) as exc:
        raise UsageError(f"cannot reach Redis at {url}: {exc or type(exc).__name__} (start it, "
                         "or point --redis-url / REDIS_URL at a running one)") from None


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
                   help="Redis URL (env REDIS_URL)")
    p.add_argument("--shards", type=int, default=int(os.environ.get("ORIGIN_SHARDS", "4")),
                   help="uplink streams; must equal the edges' (env ORIGIN_SHARDS, default 4)")
    p.add_argument("--log-level", default=os.environ.get("ORIGIN_LOG_LEVEL", "INFO"),
                   help="logging level (env ORIGIN_LOG_LEVEL, default %(default)s)")


def _worker_args(p: argparse.ArgumentParser) -> None:
    d = OriginSettings()
    p.add_argument("--claim-idle-ms", type=int, default=d.claim_idle_ms,
                   help="claim entries pending longer than this (default %(default)s)")
    p.add_argument("--claim-interval", type=float, default=d.claim_interval,
                   help="seconds between XAUTOCLAIM rounds (default %(default)s)")
    p.add_argument("--read-count", type=int, default=d.read_count,
                   help="stream entries (batches) per read (default %(default)s)")
    p.add_argument("--block-ms", type=int, default=d.block_ms,
                   help="longest wait of one stream read, ms (default %(default)s)")
    p.add_argument("--command-ttl", type=float, default=d.command_ttl,
                   help="default seconds a command waits for an offline device")


def settings_from_args(a: argparse.Namespace) -> OriginSettings:
    """Build settings from parsed arguments (worker flags are optional)."""
    if a.shards < 1:
        raise UsageError("--shards must be >= 1")
    try:
        check_url(a.redis_url)
    except RedisURLError as exc:
        raise UsageError(f"{exc} (--redis-url or REDIS_URL)") from None
    d = OriginSettings()
    return OriginSettings(
        redis_url=a.redis_url, shards=a.shards,
        claim_idle_ms=getattr(a, "claim_idle_ms", d.claim_idle_ms),
        claim_interval=getattr(a, "claim_interval", d.claim_interval),
        read_count=getattr(a, "read_count", d.read_count),
        block_ms=getattr(a, "block_ms", d.block_ms),
        command_ttl=getattr(a, "command_ttl", d.command_ttl),
        api_keys=api_keys_from_env(),
    )


#: Set by ``origin run`` for its workers: the pid of the ``run`` process.
_PARENT_ENV = "ORIGIN_RUN_PID"


async def _watch_parent(parent: int, stop: asyncio.Event, every: float = 0.5) -> None:
    """Stop the worker when the ``origin run`` process that started it is gone (its
    parent changes: SIGKILL, or any exit that skipped stopping its children)."""
    while not stop.is_set():
        if os.getppid() != parent:
            print(f"origin worker: the 'origin run' process {parent} is gone: stopping",
                  file=sys.stderr)
            stop.set()
            return
        await asyncio.sleep(every)


def cmd_worker(a: argparse.Namespace) -> int:
    """Run one worker until SIGINT/SIGTERM (on uvloop when it is installed)."""
    from edge_node.runtime.gc_tuning import tune_gc
    from origin.hooks.cli import hook_config_from_args
    from origin.worker import Worker

    s = settings_from_args(a)
    hooks = hook_config_from_args(a)  # a bad --functions/--webhook stops here
    require_redis(s.redis_url)
    with contextlib.suppress(ImportError):  # uvloop is a dependency on Linux/macOS
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    tune_gc()

    parent = int(os.environ.get(_PARENT_ENV, "0") or 0)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        watch = asyncio.create_task(_watch_parent(parent, stop)) if parent else None
        await Worker(s, a.consumer, hooks).run(stop)
        if watch is not None:
            watch.cancel()

    asyncio.run(run())
    return 0


def cmd_api(a: argparse.Namespace, workers: WorkerSupervisor | None = None) -> int:
    """Serve the HTTP API until SIGINT/SIGTERM (``workers``: the supervisor of
    ``origin run``'s worker processes)."""
    import uvicorn

    from origin.api import create_app

    s = settings_from_args(a)
    if not s.api_keys:
        print("origin: warning: ORIGIN_API_KEYS is empty: every API call but /healthz "
              "will be refused", file=sys.stderr)
    app = create_app(s, workers)  # a bad ORIGIN_FORECAST_* setting stops here, before Redis
    require_redis(s.redis_url)
    uvicorn.run(app, host=a.host, port=a.port, log_level="warning",
                access_log=False)
    return 0


def cmd_run(a: argparse.Namespace) -> int:
    """N worker processes plus the API in this process; a worker that exits is
    restarted (:mod:`origin.supervise`); stopping this stops them."""
    from origin.hooks.cli import hook_config_from_args, worker_hook_args
    from origin.supervise import WorkerSupervisor

    hook_config_from_args(a)  # once, before any child starts: one line if it is bad
    require_redis(settings_from_args(a).redis_url)  # once, before any child starts
    hook_args, hook_env = worker_hook_args(a)
    base = [sys.executable, "-m", "origin", "worker", "--redis-url", a.redis_url,
            "--shards", str(a.shards), *hook_args]
    prefix = a.consumer_prefix or f"w{os.getpid()}"
    # SIGTERM before the API's server has its own handler (starting up) must still
    # reach the ``finally`` below; a SIGKILL cannot, so each worker also watches us.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    env = {**os.environ, **hook_env, _PARENT_ENV: str(os.getpid())}
    workers = WorkerSupervisor([[*base, "--consumer", f"{prefix}-{i}"]
                                for i in range(a.workers)], env)
    try:
        workers.start()
        return cmd_api(a, workers)
    finally:
        workers.stop()


def cmd_stats(a: argparse.Namespace) -> int:
    """Print the origin's counters as JSON."""
    from edge_node.redis_io import conn as redis_conn
    from origin.view import origin_stats

    s = settings_from_args(a)
    require_redis(s.redis_url)

    async def run() -> None:
        r = redis_conn.connect(s.redis_url, socket_timeout=5.0)
        try:
            print(json.dumps(await origin_stats(r, s), indent=2))
        finally:
            await r.aclose()

    asyncio.run(run())
    return 0


def build_parser(prog: str = "python -m origin") -> argparse.ArgumentParser:
    """The ``python -m origin`` parser (``prog``: how the usage line names it)."""
    from origin.hooks.cli import add_hook_args

    p = argparse.ArgumentParser(prog=prog, description="edge-relay origin: "
                                "uplink workers, HTTP API (see docs/origin.md)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    pw = sub.add_parser("worker", help="run one uplink worker (consumer group member)")
    _common(pw)
    _worker_args(pw)
    add_hook_args(pw)
    pw.add_argument("--consumer", required=True, help="consumer name, unique per worker")
    pw.set_defaults(func=cmd_worker)
    for name, helptext in (("api", "serve the HTTP API"),
                           ("run", "run N workers and the HTTP API")):
        pa = sub.add_parser(name, help=helptext)
        _common(pa)
        pa.add_argument("--host", default="127.0.0.1",
                        help="API listen address (default %(default)s)")
        pa.add_argument("--port", type=int, default=8780, help="API port (default 8780)")
        if name == "run":
            pa.add_argument("--workers", type=int, default=2, help="worker processes")
            pa.add_argument("--consumer-prefix", default="",
                            help="consumer names are PREFIX-0..N-1 (default w<pid>)")
            add_hook_args(pa)
            pa.set_defaults(func=cmd_run)
        else:
            pa.set_defaults(func=cmd_api)
    sub.add_parser("forecast-eval", add_help=False,
                   help="evaluate the demand forecast on a generated load curve "
                   f"(see `{prog} forecast-eval --help`)")
    ps = sub.add_parser("stats", help="print the origin's counters as JSON")
    _common(ps)
    ps.set_defaults(func=cmd_stats)
    return p


def main(argv: list[str] | None = None, *, prog: str = "python -m origin") -> int:
    """Entry point (``prog``: the command name in usage lines and errors)."""
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "forecast-eval":
        from origin.forecast_eval import main as forecast_eval

        return forecast_eval(argv[1:], prog=f"{prog} forecast-eval")
    parser = build_parser(prog)
    a = parser.parse_args(argv)
    if not getattr(a, "func", None):
        parser.print_help()
        return 2
    logging.basicConfig(level=a.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    from origin.forecast import ForecastSettingsError
    from origin.functions.loader import FunctionSpecError
    from origin.webhooks.config import WebhookSpecError

    name = "origin" if prog == "python -m origin" else prog
    try:
        return int(a.func(a))
    except KeyboardInterrupt:
        return 130
    except (UsageError, ForecastSettingsError, ShardCountMismatch, RedisURLError,
            FunctionSpecError, WebhookSpecError) as exc:
        print(f"{name}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
