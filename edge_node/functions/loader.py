"""Where an edge's functions come from: ``module:attr`` specs naming a
:class:`~edge_node.functions.api.Functions` object.

Specs come from ``--functions`` (repeatable), the ``EDGE_FUNCTIONS`` environment
variable (comma-separated) or the ``edge_relay.functions`` entry-point group (value =
``module:attr``) — the same three sources as room handlers.  All of them are merged into
one set; a bad spec, or an RPC name defined twice, is a :class:`FunctionSpecError` with
one clear line, raised at start-up, never later.
"""

from __future__ import annotations

from importlib import metadata

from edge_node.functions.api import Functions
from edge_node.runtime.plugins import resolve

__all__ = ["ENTRY_POINT_GROUP", "FunctionSpecError", "load_functions", "describe"]

ENTRY_POINT_GROUP = "edge_relay.functions"


class FunctionSpecError(ValueError):
    """A functions spec that cannot be used (the message says why)."""


def _load(spec: str) -> Functions:
    obj = resolve(spec, f"functions {spec!r}", "module:attr", FunctionSpecError)
    if not isinstance(obj, Functions):
        raise FunctionSpecError(f"functions {spec!r}: {spec.partition(':')[2]!r} is not a "
                                "Functions object")
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
