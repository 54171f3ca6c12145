"""Throughput model: iterations/s of one (model, global batch) as a function of its GPU count.

Three sources, in order of trust:
  1. measured tables in ElasticFlow's CSV format (`<dir>/<model>.csv`: a `global_batch_size`
     column, then one column per GPU count; empty or 0 cells mean "cannot run there");
  2. ptctl's own progress records (`observe(gpus, iterations, seconds)`), averaged per count;
  3. a fitted Universal Scalability Law curve X(g) = X1*g / (1 + s*(g-1) + k*g*(g-1)) for counts
     never measured, so a planner can still price them.

`allowed_gpus` are the counts a scheduler may use: measured (or observed) counts only, so
ElasticFlow-style simulations stay on the table's columns.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from ptctl.errors import BadInputError, excerpt
from ptctl.safeload import read_csv


@dataclass
class ThroughputCurve:
    """Iterations/s per GPU count for one (model, global batch)."""

    model: str
    global_batch: int
    measured: dict[int, float] = field(default_factory=dict)
    _observed: dict[int, tuple[float, float]] = field(default_factory=dict, repr=False)
    _fit: tuple[float, float, float] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        for g, x in self.measured.items():
            if g < 1 or not x > 0 or not math.isfinite(x):
                raise BadInputError(f"throughput {self.model}/{self.global_batch}: gpus={g} "
                                    f"iterations/s={x} must be a positive count and rate")
        self._refresh()

    def _points(self) -> dict[int, float]:
        points = dict(self.measured)
        for g, (iters, secs) in self._observed.items():
            points[g] = iters / secs
        return points

    def _refresh(self) -> None:
        points = self._points()
        self.allowed_gpus: tuple[int, ...] = tuple(sorted(points))
        self._rate = points
        self._fit = fit_usl(points) if points else None

    def observe(self, gpus: int, iterations: float, seconds: float) -> None:
        """Learn from a progress record: `iterations` done in `seconds` of training on `gpus`."""
        if gpus < 1 or iterations < 0 or seconds <= 0:
            raise BadInputError(f"progress record gpus={gpus} iterations={iterations} "
                                f"seconds={seconds}: need gpus>=1, iterations>=0, seconds>0")
        iters, secs = self._observed.get(gpus, (0.0, 0.0))
        self._observed[gpus] = (iters + iterations, secs + seconds)
        self._refresh()

    def rate(self, gpus: int) -> float:
        """Iterations/s on `gpus` GPUs: measured/observed when known, else the fitted curve."""
        if gpus <= 0:
            return 0.0
        known = self._rate.get(gpus)
        if known is not None:
            return known
        if self._fit is None:
            raise BadInputError(f"no throughput data for {self.model} batch {self.global_batch}")
        x1, s, k = self._fit
        return x1 * gpus / (1.0 + s * (gpus - 1) + k * gpus * (gpus - 1))


def fit_usl(points: dict[int, float]) -> tuple[float, float, float]:
    """Least-squares fit of the Universal Scalability Law; returns (X1, s, k), s and k >= 0.

    Linearised: g*X1/X(g) - 1 = s*(g-1) + k*g*(g-1). X1 is the 1-GPU rate (or extrapolated
    linearly from the smallest measured count when 1 GPU was never run).
    """
    import numpy as np

    g_min = min(points)
    x1 = points[g_min] / g_min if g_min > 1 else points[1]
    rows = [(g - 1.0, g * (g - 1.0), g * x1 / x - 1.0) for g, x in points.items() if g > 1]
    if not rows:
        return x1, 0.0, 0.0
    a = np.array([[r[0], r[1]] for r in rows])
    b = np.array([r[2] for r in rows])
    (s, k), *_ = np.linalg.lstsq(a, b, rcond=None)
    return x1, max(0.0, float(s)), max(0.0, float(k))


class ThroughputTable:
    """All curves known to a cluster, keyed by (model, global batch)."""

    def __init__(self, curves: dict[tuple[str, int], ThroughputCurve] | None = None) -> None:
        self.curves: dict[tuple[str, int], ThroughputCurve] = dict(curves or {})

    def curve(self, model: str, global_batch: int) -> ThroughputCurve:
        try:
            return self.curves[(model, int(global_batch))]
        except KeyError:
            known = sorted({m for m, _ in self.curves})
            raise BadInputError(f"no throughput table for model {model!r} batch {global_batch} "
                                f"(known models: {', '.join(known) or 'none'})") from None

    def has(self, model: str, global_batch: int) -> bool:
        return (model, int(global_batch)) in self.curves

    def add(self, curve: ThroughputCurve) -> None:
        self.curves[(curve.model, curve.global_batch)] = curve

    @classmethod
    def from_elasticflow_dir(cls, folder: str | Path) -> "ThroughputTable":
        """Read every `<model>.csv` of an ElasticFlow throughput folder."""
        folder = Path(folder)
        files = sorted(folder.glob("*.csv"))
        if not files:
            raise BadInputError(f"{folder}: no throughput CSV files")
        table = cls()
        for path in files:
            for curve in read_elasticflow_throughputs(path):
                table.add(curve)
        return table


# Bounds of a table's GPU-count columns (ElasticFlow's go to 64) and global batch sizes.
MAX_TABLE_GPUS = 65536
MAX_TABLE_BATCH = 10**6


def read_elasticflow_throughputs(path: str | Path) -> list[ThroughputCurve]:
    """One file of ElasticFlow's format: rows per global batch, a column per GPU count. Read
    through safeload.read_csv (size, UTF-8, unclosed quotes); every error names file and line."""
    path = Path(path)
    header, rows = read_csv(path, str(path))
    if not header or header[0] != "global_batch_size":
        raise BadInputError(f"{path}: first column must be 'global_batch_size'")
    counts: list[int] = []
    for column in header[1:]:
        count = _whole(column, MAX_TABLE_GPUS)
        if count is None:
            raise BadInputError(f"{path}: column {excerpt(column)}: expected a GPU count, "
                                f"1..{MAX_TABLE_GPUS}")
        if count in counts:
            raise BadInputError(f"{path}: column {column}: a GPU count given twice")
        counts.append(count)
    curves = []
    for line, row in rows:
        cells = [(row[h] or "").strip() for h in header]
        batch = _whole(cells[0], MAX_TABLE_BATCH)
        if batch is None:
            raise BadInputError(f"{path}:line {line}: global_batch_size: got "
                                f"{excerpt(cells[0])}, expected an integer 1..{MAX_TABLE_BATCH}")
        curves.append(ThroughputCurve(path.stem, batch, {
            g: rate for g, cell in zip(counts, cells[1:])
            if (rate := _rate(cell, f"{path}:line {line}: column {g}")) > 0}))
    return curves


def _whole(text: str, most: int) -> int | None:
    """`text` as an integer in 1..`most`; None when it is not one."""
    if not (text.isascii() and text.isdigit() and len(text) <= len(str(most))):
        return None
    return int(text) if 1 <= int(text) <= most else None


def _rate(cell: str, where: str) -> float:
    """Iterations/s in one cell; an empty cell or 0 means the batch cannot run there."""
    try:
        rate = float(cell) if cell else 0.0
    except ValueError:
        rate = math.nan
    if not (math.isfinite(rate) and rate >= 0):
        raise BadInputError(f"{where}: got {excerpt(cell)}, expected iterations/s (a number "
                            ">= 0; empty or 0 where the batch cannot run)")
    return rate
