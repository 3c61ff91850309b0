"""The RPCs ``bench functions`` loads on its edges (``--functions
bench.rpc_functions:functions``).

- ``echo``: returns its arguments, unchanged.  Its body is next to nothing, so the
  edge's CPU per call is the cost of the call machinery and the transport.
- ``work``: spins the edge's CPU for ``args["us"]`` microseconds of the calling
  thread's CPU time (0 to 100,000; anything else is the application error
  ``bad_us``), then returns ``args["echo"]`` (None when absent).  It runs on the
  edge's event loop like any ``async def`` without awaits, so it blocks the loop
  for that long: a known body, which the bench subtracts from the edge's CPU per call
  (it reads the body's time from ``edge_function_seconds_total``).

Both keep no state between calls, as the functions contract asks (docs/functions.md).
"""

from __future__ import annotations

import time
from typing import Any

from edge_node.functions import Functions, RpcError

__all__ = ["functions", "MAX_WORK_US"]

#: The longest body ``work`` spins (µs): far below the default call timeout (5 s).
MAX_WORK_US = 100_000

functions = Functions()


@functions.rpc("echo")
async def echo(ctx: Any, args: Any) -> Any:
    """Return ``args``."""
    return args


@functions.rpc("work")
async def work(ctx: Any, args: Any) -> Any:
    """Spin ``args["us"]`` µs of thread CPU time, then return ``args.get("echo")``."""
    us = args.get("us") if isinstance(args, dict) else None
    if not isinstance(us, int) or isinstance(us, bool) or not 0 <= us <= MAX_WORK_US:
        raise RpcError("bad_us", f"args['us'] must be an integer in 0..{MAX_WORK_US}")
    clock = time.thread_time_ns
    end = clock() + us * 1000
    while clock() < end:
        pass
    return args.get("echo")
