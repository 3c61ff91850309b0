"""NAB (Numenta Anomaly Benchmark) corpora and scoring, in pure Python.

Loading: a NAB-format directory holds ``data/<category>/<name>.csv`` (``timestamp,value``,
one sample per row, in time order) and ``windows.json`` (``{"<category>/<name>.csv":
[[start, end], ...]}``, timestamps inclusive).  :func:`load` reads it into
:class:`Series` whose windows are sample indices.

Scoring follows the rules of the corpus README and, where it is silent, NAB v1.1's own
code (``nab/sweeper.py``, which both its optimiser and its scorer use):

- **Learning period**: the first ``min(floor(0.15 n), 750)`` samples
  (``getProbationPeriod``) are dropped before scoring: a detection there counts for
  nothing.  A window is scored only if it reaches past the learning period (none of
  the NAB windows starts inside it); its position scale is its whole extent.
- **Detection**: a sample whose score *reaches* the threshold (``score >= t``).
- **Window matching**: like NAB, a window starts at the first sample whose timestamp
  equals its start and ends at the first sample whose timestamp equals its end (a
  series may repeat a timestamp, e.g. at a DST change).  NAB silently skips a window
  whose start is not a sample's timestamp; here it falls back to the first sample at
  or after the start and the last one at or before the end, and an empty window is
  an error.
- **True positive**: only the first (earliest) detection of a window counts; NAB takes
  the best per-window value, which is the earliest since ``S`` falls along the window.
  Its position is NAB's ``p = -(right - i + 1) / width`` with ``width = right - left
  + 1``: exactly -1 at the left edge, ``-1/width`` (not 0) at the right edge.  It is
  worth ``A_TP * S(p) / S(-1)``.
- **False positive**: every detection outside the windows, worth ``A_FP * S(p)`` with
  ``p = (i - right) / (width - 1)`` of the closest preceding window (NAB's
  ``positionPastWindow``), or ``-A_FP`` when no window precedes it.  ``S(p)`` is
  exactly -1 from ``p >= 3`` on (NAB's cut-off).  A preceding window of one sample
  (NAB would divide by zero) counts as ``p = 3``.
- **Missed window**: ``-A_FN``.
- **Normalised score**: ``100 * (raw - null) / (perfect - null)`` over the whole
  corpus, with ``null = -A_FN * windows`` (never detects) and ``perfect = A_TP *
  windows`` (every window detected at its left edge), as NAB's ``normalize`` (which
  takes the window count of ``combined_windows.json``).
- **Threshold optimisation** (:func:`sweep`, :func:`optimise`): NAB's exact sweep:
  every distinct score seen (after the learning periods, all series together) is a
  candidate, plus 1.1 (nothing detected); the samples are sorted by score once and the
  tallies updated incrementally, O(N log N).  Per profile the threshold with the best
  corpus score wins; on a tie the highest threshold, as NAB's stable sort of its
  descending sweep does.
"""

from __future__ import annotations

import bisect
import csv
import itertools
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import NamedTuple

from bench.errors import BenchError

__all__ = [
    "LEARNING_FRACTION",
    "LEARNING_MAX",
    "NO_DETECTION",
    "PROFILES",
    "Profile",
    "Series",
    "Tally",
    "Truth",
    "learning_period",
    "load",
    "optimise",
    "scaled_sigmoid",
    "score",
    "sweep",
    "total",
    "truth",
]

LEARNING_FRACTION = 0.15
LEARNING_MAX = 750
#: The threshold above every score in [0, 1]: nothing is detected (NAB's start value).
NO_DETECTION = 1.1


class Profile(NamedTuple):
    """Weights of a true positive, a false positive and a missed window."""

    tp: float
    fp: float
    fn: float


PROFILES: dict[str, Profile] = {
    "standard": Profile(1.0, 0.11, 1.0),
    "reward_low_FP": Profile(1.0, 0.22, 1.0),
    "reward_low_FN": Profile(1.0, 0.11, 2.0),
}


def learning_period(n: int) -> int:
    """Samples at the start of an ``n``-sample series whose detections are ignored."""
    return min(math.floor(LEARNING_FRACTION * n), LEARNING_MAX)


def scaled_sigmoid(p: float) -> float:
    """``S(p) = 2 / (1 + exp(5 p)) - 1``, exactly -1 from ``p >= 3`` on (as NAB)."""
    if p >= 3.0:
        return -1.0
    return 2.0 / (1.0 + math.exp(5.0 * p)) - 1.0


_S_LEFT = scaled_sigmoid(-1.0)


# --- the truth of one series -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Truth:
    """What a detection at each scored sample is worth, before the profile's weights.

    ``window_of[k]`` / ``worth[k]`` describe sample ``learning + k``: the index of the
    window it lies in (its worth is then ``S(p) / S(-1)`` as a true positive) or -1
    (its worth is ``S(p)`` as a false positive, negative).  ``windows`` counts the
    windows that reach past the learning period.
    """

    n: int
    learning: int
    windows: int
    window_of: tuple[int, ...]
    worth: tuple[float, ...]


def truth(n: int, windows: Sequence[tuple[int, int]]) -> Truth:
    """The :class:`Truth` of an ``n``-sample series with inclusive index ``windows``
    (sorted, not overlapping)."""
    learning = learning_period(n)
    scored = [(a, b) for a, b in windows if b >= learning]
    window_of: list[int] = []
    worth: list[float] = []
    rights = [b for _a, b in windows]
    w = 0
    for i in range(learning, n):
        while w < len(scored) and scored[w][1] < i:
            w += 1
        if w < len(scored) and scored[w][0] <= i:
            a, b = scored[w]
            window_of.append(w)
            worth.append(scaled_sigmoid(-(b - i + 1) / (b - a + 1)) / _S_LEFT)
            continue
        k = bisect.bisect_left(rights, i) - 1  # the closest window ending before i
        if k < 0:
            worth.append(-1.0)
        else:
            a, b = windows[k]
            worth.append(scaled_sigmoid((i - b) / (b - a) if b > a else 3.0))
        window_of.append(-1)
    return Truth(n, learning, len(scored), tuple(window_of), tuple(worth))


# --- tallies -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Tally:
    """A detector's result on some series at one threshold, before weighting.

    ``tp`` sums ``S(p) / S(-1)`` of each detected window's first detection; ``fp`` sums
    ``S(p)`` of the false positives (negative); ``in_windows`` counts every detection
    inside a window (only the first of each scores).
    """

    windows: int = 0
    detected: int = 0
    tp: float = 0.0
    fp: float = 0.0
    false_positives: int = 0
    in_windows: int = 0

    def __add__(self, other: Tally) -> Tally:
        return Tally(self.windows + other.windows, self.detected + other.detected,
                     self.tp + other.tp, self.fp + other.fp,
                     self.false_positives + other.false_positives,
                     self.in_windows + other.in_windows)

    @property
    def missed(self) -> int:
        return self.windows - self.detected

    def raw(self, p: Profile) -> float:
        """NAB's raw score under profile ``p``."""
        return p.tp * self.tp + p.fp * self.fp - p.fn * self.missed

    def null(self, p: Profile) -> float:
        return -p.fn * self.windows

    def perfect(self, p: Profile) -> float:
        return p.tp * self.windows

    def normalised(self, p: Profile) -> float | None:
        """``100 (raw - null) / (perfect - null)``; None without any window."""
        span = self.perfect(p) - self.null(p)
        if span <= 0:
            return None
        return 100.0 * (self.raw(p) - self.null(p)) / span


def total(tallies: Iterable[Tally]) -> Tally:
    out = Tally()
    for t in tallies:
        out = out + t
    return out


def _check(scores: Sequence[float], n: int) -> None:
    if len(scores) != n:
        raise ValueError(f"{len(scores)} scores for {n} samples")
    for s in scores:
        if not 0.0 <= s <= 1.0:
            raise ValueError(f"score {s!r} outside [0, 1]")


def score(t: Truth, scores: Sequence[float], threshold: float) -> Tally:
    """Score one series: the samples whose score reaches ``threshold`` are detections."""
    _check(scores, t.n)
    best: dict[int, float] = {}
    fp = 0.0
    fps = inside = 0
    for k in range(t.n - t.learning):
        if scores[t.learning + k] < threshold:
            continue
        w = t.window_of[k]
        if w < 0:
            fp += t.worth[k]
            fps += 1
        else:
            inside += 1
            best.setdefault(w, t.worth[k])  # the first detection of the window
    return Tally(t.windows, len(best), math.fsum(best.values()), fp, fps, inside)


def sweep(truths: Sequence[Truth], scores: Sequence[Sequence[float]]) -> list[tuple[float, Tally]]:
    """The corpus tally at every candidate threshold, highest first: ``NO_DETECTION``,
    then each distinct score seen after the learning periods (detections: ``>=``)."""
    if len(truths) != len(scores):
        raise ValueError("one score list per series")
    points: list[tuple[float, int, float]] = []  # (score, global window or -1, worth)
    base = 0
    for t, sc in zip(truths, scores, strict=True):
        _check(sc, t.n)
        for k, (w, v) in enumerate(zip(t.window_of, t.worth, strict=True)):
            points.append((sc[t.learning + k], base + w if w >= 0 else -1, v))
        base += t.windows
    points.sort(key=lambda x: x[0], reverse=True)
    windows = base
    best: dict[int, float] = {}
    tp = fp = 0.0
    fps = inside = 0
    out = [(NO_DETECTION, Tally(windows))]
    for j, (s, w, v) in enumerate(points):
        if w < 0:
            fp += v
            fps += 1
        else:
            inside += 1
            old = best.get(w)
            if old is None or v > old:
                best[w] = v
                tp += v - (old or 0.0)
        if j + 1 == len(points) or points[j + 1][0] != s:
            out.append((s, Tally(windows, len(best), tp, fp, fps, inside)))
    return out


def optimise(points: Sequence[tuple[float, Tally]], p: Profile) -> tuple[float, Tally]:
    """The (threshold, tally) of :func:`sweep` with the best raw score under ``p``
    (hence the best normalised score); the highest threshold on a tie."""
    best = points[0]
    for pt in points[1:]:
        if pt[1].raw(p) > best[1].raw(p):
            best = pt
    return best


# --- loading -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Series:
    """One labelled series; ``windows`` are inclusive sample indices, in order."""

    name: str
    timestamps: tuple[datetime, ...]
    values: tuple[float, ...]
    windows: tuple[tuple[int, int], ...]

    @property
    def category(self) -> str:
        return self.name.split("/", 1)[0]


def _read_csv(path: Path, name: str) -> tuple[tuple[datetime, ...], tuple[float, ...]]:
    ts: list[datetime] = []
    vs: list[float] = []
    try:
        with path.open(newline="", encoding="utf-8") as f:
            rows = csv.reader(f)
            header = next(rows, None)
            if header is None or [h.strip() for h in header[:2]] != ["timestamp", "value"]:
                raise BenchError(f"{name}: the first line must be 'timestamp,value'")
            for line, row in enumerate(rows, start=2):
                if not row:
                    continue
                try:
                    ts.append(datetime.fromisoformat(row[0].strip()))
                    vs.append(float(row[1]))
                except (ValueError, IndexError):
                    raise BenchError(f"{name}:{line}: not 'timestamp,value': "
                                     f"{','.join(row)[:60]!r}") from None
                if not math.isfinite(vs[-1]):
                    raise BenchError(f"{name}:{line}: value is not finite")
    except OSError as exc:
        raise BenchError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError:
        raise BenchError(f"{name}: not UTF-8 text") from None
    if not ts:
        raise BenchError(f"{name}: no samples")
    return tuple(ts), tuple(vs)


def window_indices(timestamps: Sequence[datetime], start: datetime,
                   end: datetime) -> tuple[int, int] | None:
    """Inclusive sample indices of the window ``[start, end]`` (see the module's
    docstring: exact matches first, as NAB; else the samples inside), None if empty."""
    left = right = None
    for i, t in enumerate(timestamps):
        if left is None and t == start:
            left = i
        if t == end:
            right = i
            break
    if left is None:
        left = next((i for i, t in enumerate(timestamps) if t >= start), None)
    if right is None:
        right = next((i for i in range(len(timestamps) - 1, -1, -1)
                      if timestamps[i] <= end), None)
    if left is None or right is None or right < left:
        return None
    return left, right


def _windows(name: str, limits: object, ts: Sequence[datetime]) -> tuple[tuple[int, int], ...]:
    if not isinstance(limits, list):
        raise BenchError(f"windows.json: {name}: expected a list of [start, end]")
    out: list[tuple[int, int]] = []
    for lim in limits:
        if not (isinstance(lim, list) and len(lim) == 2 and all(isinstance(x, str)
                                                                 for x in lim)):
            raise BenchError(f"windows.json: {name}: {lim!r} is not [start, end]")
        try:
            start, end = (datetime.fromisoformat(x.strip()) for x in lim)
        except ValueError:
            raise BenchError(f"windows.json: {name}: {lim!r}: not timestamps") from None
        idx = window_indices(ts, start, end)
        if idx is None:
            raise BenchError(f"windows.json: {name}: window {lim!r} holds no sample")
        out.append(idx)
    out.sort()
    for (_a0, b0), (a1, _b1) in itertools.pairwise(out):
        if a1 <= b0:
            raise BenchError(f"windows.json: {name}: windows overlap")
    return tuple(out)


def load(root: Path) -> tuple[list[Series], list[str]]:
    """Every series of the NAB-format directory ``root``, in name order, and warnings
    (windows.json entries without a CSV).  Raises :class:`BenchError` on a missing
    directory, no series, or a malformed file."""
    if not root.is_dir():
        raise BenchError(f"--data {root}: no such directory")
    data = root / "data"
    files = sorted(data.glob("*/*.csv")) if data.is_dir() else []
    if not files:
        raise BenchError(f"--data {root} holds no series: expected "
                         "data/<category>/<name>.csv and windows.json (a NAB-format "
                         "directory)")
    wpath = root / "windows.json"
    try:
        windows = json.loads(wpath.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BenchError(f"--data {root}: no windows.json (the labelled anomaly "
                         "windows)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BenchError(f"cannot read {wpath}: {exc}") from exc
    if not isinstance(windows, Mapping):
        raise BenchError(f"{wpath}: expected an object of series -> windows")
    out: list[Series] = []
    for path in files:
        name = path.relative_to(data).as_posix()
        if name not in windows:
            raise BenchError(f"windows.json has no entry for {name} (use [] for a "
                             "series without anomalies)")
        ts, vs = _read_csv(path, name)
        out.append(Series(name, ts, vs, _windows(name, windows[name], ts)))
    found = {s.name for s in out}
    stray = sorted(k for k in windows if k not in found)
    warnings = [f"windows.json lists {len(stray)} series with no CSV under data/ "
                f"(ignored), e.g. {stray[0]}"] if stray else []
    return out, warnings
