"""Where an edge's functions come from: ``module:attr`` specs naming a
:class:`~edge_node.functions.api.Functions` object.

Specs come from ``--functions`` (repeatable), the ``EDGE_FUNCTIONS`` environment
variable (comma-separated) or the ``edge_relay.functions`` entry-point group (value =
``module:attr``) — the same three sources as room handlers.  All of them are merged into
one set; a bad spec, or an RPC name defined twice, is a :class:`FunctionSpecError` with
one clear line, raised at start-up, never later.
"""

from __future__ import annotations

import importlib
from importlib import metadata

from edge_node.functions.api import Functions

__all__ = ["ENTRY_POINT_GROUP", "FunctionSpecError", "load_functions", "describe"]

ENTRY_POINT_GROUP = "edge_relay.functions"


class FunctionSpecError(ValueError):
    """A functions spec that cannot be used (the message says why)."""


def _load(spec: str) -> Functions:
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise FunctionSpecError(f"functions {spec!r}: expected module:attr")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise FunctionSpecError(f"functions {spec!r}: cannot import {module_name!r} "
                                f"({exc})") from exc
    except ValueError as exc:  # a registration error raised while importing
        raise FunctionSpecError(f"functions {spec!r}: {exc}") from exc
    obj: object = module
    for part in attr.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise FunctionSpecError(f"functions {spec!r}: {module_name!r} has no {attr!r}")
    if not isinstance(obj, Functions):
        raise FunctionSpecError(f"functions {spec!r}: {attr!r} is not a Functions object")
    return obj


def load_functions(specs: list[str] | tuple[str, ...], env: str = "",
                   entry_points: bool = True) -> Functions:
    """Flags, then the environment variable, then installed entry points, merged."""
    all_specs = [s.strip() for s in [*specs, *env.split(",")] if s.strip()]
    if entry_points:
        all_specs += [ep.value for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)]
    out = Functions()
    seen: set[str] = set()
    for spec in all_specs:
        if spec in seen:
            continue
        seen.add(spec)
        try:
            out.merge(_load(spec))
        except ValueError as exc:
            if isinstance(exc, FunctionSpecError):
                raise
            raise FunctionSpecError(f"functions {spec!r}: {exc}") from exc
    return out


def describe(functions: Functions) -> list[str]:
    """One line per function (``rpc NAME`` / ``TRIGGER PATTERN NAME``), for logs."""
    return ([f"rpc {n}" for n in sorted(functions.rpcs)]
            + [f"{e.trigger} {e.pattern} {e.name}" for e in functions.events])
