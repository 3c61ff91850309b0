"""Which origin functions a worker runs: ``module:attribute`` specs.

Specs come from ``--functions`` (repeatable), the ``ORIGIN_FUNCTIONS`` environment
variable (comma-separated) and the ``edge_relay.origin_functions`` entry-point group
(value ``module:attribute``).  The attribute is an
:class:`~origin.functions.registry.OriginFunctions`.  A bad spec (cannot import, no
such attribute, not an ``OriginFunctions``, an error raised while importing) is a
:class:`FunctionSpecError` with one line, raised at start-up.
"""

from __future__ import annotations

from importlib import metadata

from edge_node.runtime.plugins import resolve
from origin.functions.registry import OriginFunctions, Registered

__all__ = ["FunctionSpecError", "load_functions", "ENTRY_POINT_GROUP", "ENV"]

ENTRY_POINT_GROUP = "edge_relay.origin_functions"
ENV = "ORIGIN_FUNCTIONS"


class FunctionSpecError(ValueError):
    """An origin functions spec that cannot be used (the message says why)."""


def _load_one(spec: str) -> OriginFunctions:
    obj = resolve(spec, f"origin functions {spec!r}", "module:attribute", FunctionSpecError)
    if not isinstance(obj, OriginFunctions):
        raise FunctionSpecError(f"origin functions {spec!r}: {spec.partition(':')[2]!r} is a "
                                f"{type(obj).__name__}, not an OriginFunctions")
    return obj


def load_functions(specs: list[str], env: str = "", entry_points: bool = True
                   ) -> list[Registered]:
    """Every handler of the specs given by flag, then ``env``, then entry points;
    :class:`FunctionSpecError` for a bad spec or a handler name used twice."""
    all_specs = [s.strip() for s in [*specs, *env.split(",")] if s.strip()]
    if entry_points:
        all_specs += [ep.value for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)]
    out: list[Registered] = []
    seen: set[tuple[str, str]] = set()
    loaded: set[int] = set()
    for spec in all_specs:
        fns = _load_one(spec)
        if id(fns) in loaded:  # the same object named twice (flag and env)
            continue
        loaded.add(id(fns))
        for r in fns.handlers:
            if (r.kind, r.name) in seen:
                raise FunctionSpecError(f"origin functions {spec!r}: handler {r.name!r} "
                                        f"for {r.kind!r} is registered twice")
            seen.add((r.kind, r.name))
            out.append(r)
    return out
