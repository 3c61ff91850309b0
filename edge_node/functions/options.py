"""The edge's command-line options for functions (``edge-relay edge --functions ...``)."""

from __future__ import annotations

import argparse
import os
from importlib import metadata
from typing import Any

from edge_node.functions.limits import CallLimits, call_limits
from edge_node.functions.loader import ENTRY_POINT_GROUP, load_functions

__all__ = ["add_function_args", "function_settings_from_args"]

_D = CallLimits()
#: The ``EdgeSettings`` fields of the limits, named as their options' destinations.
_LIMITS = ("function_timeout", "function_concurrency", "function_client_concurrency",
           "function_event_concurrency", "function_max_bytes", "function_threads")


def _env(name: str, default: str) -> str:
    return os.environ.get(f"EDGE_RELAY_{name}", default)


def add_function_args(p: argparse.ArgumentParser) -> None:
    """Add ``--functions`` and the limits of function calls to ``p``."""
    g = p.add_argument_group("functions (docs/functions.md)")
    g.add_argument("--functions", action="append", default=[], metavar="MOD:ATTR",
                   help="load the Functions object MOD:ATTR: RPCs clients may call and "
                   "event handlers (repeatable; also EDGE_RELAY_FUNCTIONS, comma-separated, "
                   "and the 'edge_relay.functions' entry points)")
    g.add_argument("--function-timeout", type=float,
                   default=_env("FUNCTION_TIMEOUT", str(_D.timeout)),
                   help="seconds a function may run unless it says otherwise; the caller "
                   "then gets 4009 (default %(default)s)")
    g.add_argument("--function-concurrency", type=int,
                   default=_env("FUNCTION_CONCURRENCY", str(_D.per_edge)),
                   help="RPCs in flight on this edge; more get 4010 (default %(default)s)")
    g.add_argument("--function-client-concurrency", type=int,
                   default=_env("FUNCTION_CLIENT_CONCURRENCY", str(_D.per_client)),
                   help="RPCs in flight per connection; more get 4010 (default %(default)s)")
    g.add_argument("--function-event-concurrency", type=int,
                   default=_env("FUNCTION_EVENT_CONCURRENCY", str(_D.per_edge_events)),
                   help="event handlers running at once; further events are dropped and "
                   "counted (default %(default)s)")
    g.add_argument("--function-max-bytes", type=int,
                   default=_env("FUNCTION_MAX_BYTES", str(_D.max_bytes)),
                   help="largest RPC arguments and result, msgpack bytes (default "
                   "%(default)s)")
    g.add_argument("--function-threads", type=int,
                   default=_env("FUNCTION_THREADS", str(_D.threads)),
                   help="threads for plain-def (blocking or CPU-heavy) functions (default "
                   "%(default)s)")


def function_settings_from_args(a: argparse.Namespace) -> dict[str, Any]:
    """The ``function*`` fields of ``EdgeSettings``, checked now: a bad spec or limit
    raises ``ValueError`` with one line (the CLI prints it)."""
    flags = list(a.functions) + [s for s in _env("FUNCTIONS", "").split(",") if s.strip()]
    specs = flags + [ep.value for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)]
    load_functions(specs, entry_points=False)  # FunctionSpecError (a ValueError)
    fields: dict[str, Any] = {"functions": tuple(dict.fromkeys(s.strip() for s in specs))}
    for name in _LIMITS:
        fields[name] = getattr(a, name)
    call_limits(argparse.Namespace(**fields))  # raises ValueError with the reason
    return fields
