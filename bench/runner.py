"""Run a scenario against each target, several times, and build the report.

A scenario supplies ``run_once(session, run_index, progress) -> result``; this module
starts a fresh server per run (so one run cannot warm or leak into the next), pins
processes when asked, and collects medians, ratios and warnings.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import psutil

from bench import report
from bench.errors import BenchError
from bench.procstats import can_pin, pin_pid, pin_self
from bench.progress import Progress
from bench.targets import RunningTarget, check_available, start_target

SERVER_CPUS = frozenset({0})
LOAD_CPUS = frozenset({1})


@dataclass(frozen=True)
class RunOptions:
    """Options every scenario shares."""

    targets: tuple[str, ...]
    runs: int
    procs: int
    pin: bool
    out: Path
    quiet: bool = False
    plot: bool = True
    #: Extra command-line options for edge targets (e.g. ``--write-delay-ms 1``).
    edge_args: tuple[str, ...] = ()
    #: Start edge targets with their QUIC listener too (for QUIC transports).
    quic: bool = False


class TargetSession:
    """A freshly started target, pinned if asked; a context manager that stops it."""

    def __init__(self, kind: str, pin: bool, edge_args: tuple[str, ...] = (),
                 quic: bool = False) -> None:
        self.kind = kind
        self.pin = pin
        self.target: RunningTarget = start_target(kind, edge_args, quic)
        try:
            self.proc = psutil.Process(self.target.pid)
            self.helpers = {
                role: psutil.Process(pid) for role, pid in self.target.helper_pids.items()
            }
        except psutil.Error:
            self.target.stop()
            raise
        if pin:
            pin_pid(self.target.pid, set(SERVER_CPUS))
            for pid in self.target.helper_pids.values():
                # Helpers (the edge's Redis) share the load's core, not the server's.
                pin_pid(pid, set(LOAD_CPUS))

    @property
    def load_cpus(self) -> frozenset[int] | None:
        return LOAD_CPUS if self.pin else None

    def __enter__(self) -> TargetSession:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.target.stop()


RunOnce = Callable[[TargetSession, Progress], dict[str, Any]]


def run_all(
    scenario: str,
    params: Mapping[str, Any],
    options: RunOptions,
    run_once: RunOnce,
    ratio_figures: tuple[str, ...],
) -> dict[str, Any]:
    """Run ``run_once`` ``options.runs`` times per target; return the report document."""
    for kind in options.targets:
        check_available(kind, quic=options.quic)
    warnings: list[str] = []
    pinned = options.pin and can_pin()
    if options.pin and not pinned:
        warnings.append("--pin ignored: CPUs 0 and 1 are not both available to this process")
    stamp = report.timestamp()
    meta = report.make_meta(scenario, {**params, **_option_params(options, pinned)}, stamp)
    progress = Progress(enabled=not options.quiet)
    old_affinity = os.sched_getaffinity(0) if pinned else None
    targets: dict[str, Any] = {}
    try:
        if pinned:
            pin_self(set(LOAD_CPUS))
        # Interleave the targets run by run, so that a change of the host's load
        # during the session affects both alike.
        runs: dict[str, list[dict[str, Any]]] = {kind: [] for kind in options.targets}
        for k in range(options.runs):
            for kind in options.targets:
                progress.label = f"[{scenario} {kind} run {k + 1}/{options.runs}]"
                with TargetSession(kind, pinned, options.edge_args,
                                   options.quic) as session:
                    result = run_once(session, progress)
                progress.done()
                runs[kind].append(result)
                warnings += [f"{kind} run {k + 1}: {w}" for w in result.get("warnings", [])]
        for kind, results in runs.items():
            targets[kind] = {"runs": results, "median": report.medians(results)}
    finally:
        progress.done()
        if old_affinity is not None:
            pin_self(old_affinity)
    doc: dict[str, Any] = {
        "schema": report.SCHEMA,
        "meta": meta,
        "targets": targets,
        "ratios": {},
        "warnings": warnings,
    }
    pairs = [("edge", o) for o in ("baseline", "baseline-default", "edge-local", "nats")]
    for mine, other in [*pairs, ("edge-tls", "edge")]:  # edge-tls/edge: what TLS costs
        if mine in targets and other in targets:
            edge, base = targets[mine]["median"], targets[other]["median"]
            doc["ratios"][f"{mine}/{other}"] = {
                fig: report.ratio(edge.get(fig), base.get(fig)) for fig in ratio_figures
            }
    return doc


def _option_params(options: RunOptions, pinned: bool) -> dict[str, Any]:
    return {
        "targets": list(options.targets),
        "runs": options.runs,
        "procs": options.procs,
        "pin": pinned,
        "edge_args": list(options.edge_args),
    }


def split(indices: range, parts: int) -> list[tuple[int, ...]]:
    """Deal ``indices`` round-robin into ``parts`` tuples."""
    if parts < 1:
        raise BenchError("--procs must be at least 1")
    return [tuple(indices[i::parts]) for i in range(parts)]
