"""Trace readers: ElasticFlow's job traces and ptctl's own prompt-tuning traces.

ElasticFlow CSV (either spelling of three columns):
    job_id, submission_time|submit_time, num_iteration|iteration, model_name,
    deadline|ddl, batch_size [, num_gpu, duration]          (seconds; deadline absolute)

ptctl prompt-tuning CSV (written by `ptctl sim gen`):
    job_id, arrival_s, deadline_s, model, iterations, iterations_bank, global_batch,
    min_gpus, max_gpus [, iterations_predicted [, predicted_sd_log]]
  `iterations` is what the job needs from a random initial prompt, `iterations_bank` from the
  Prompt Bank's initial prompt, `iterations_predicted` what the bank's query predicted for it
  and `predicted_sd_log` the spread the query stated (empty or absent: no prediction, or the
  measured spread of all predictions); times are seconds, the deadline absolute.

Every malformed row raises BadInputError naming the file, the row (the line it starts on,
header = line 1) and the column; the file itself is read through safeload.read_csv (size limit,
UTF-8, unclosed quotes, csv's field limit).
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

from ptctl.errors import BadInputError, excerpt
from ptctl.planner.throughput import ThroughputTable
from ptctl.safeload import MAX_DATA_BYTES, read_csv, read_text

PTCTL_COLUMNS = ("job_id", "arrival_s", "deadline_s", "model", "iterations", "iterations_bank",
                 "global_batch", "min_gpus", "max_gpus")
PREDICTED_COLUMN = "iterations_predicted"
SD_LOG_COLUMN = "predicted_sd_log"
_EF_SPELLINGS = {
    "arrival": ("submission_time", "submit_time"),
    "iterations": ("num_iteration", "iteration"),
    "deadline": ("deadline", "ddl"),
}
_EF_REQUIRED = ("job_id", "model_name", "batch_size")


@dataclass(frozen=True)
class SimJob:
    """One job of a trace."""

    job_id: str
    arrival_s: float
    deadline_s: float
    model: str
    global_batch: int
    iterations: float
    iterations_bank: float
    min_gpus: int = 1
    max_gpus: int = 64
    iterations_predicted: float | None = None  # the bank's prediction of iterations_bank
    predicted_sd_log: float | None = None  # the sd of log(steps) the query stated with it

    def __post_init__(self) -> None:
        if len(self.job_id) > 80:
            raise BadInputError(f"job {excerpt(self.job_id)}: job_id longer than 80 characters")
        if not (self.arrival_s >= 0 and math.isfinite(self.arrival_s)):
            raise BadInputError(f"job {self.job_id}: arrival_s={self.arrival_s} must be >= 0")
        if not self.deadline_s > self.arrival_s:
            raise BadInputError(f"job {self.job_id}: deadline_s={self.deadline_s} must be after "
                                f"arrival_s={self.arrival_s}")
        if not (self.iterations > 0 and 0 < self.iterations_bank):
            raise BadInputError(f"job {self.job_id}: iterations={self.iterations} and "
                                f"iterations_bank={self.iterations_bank} must be > 0")
        if self.iterations_predicted is not None and not self.iterations_predicted > 0:
            raise BadInputError(f"job {self.job_id}: iterations_predicted="
                                f"{self.iterations_predicted} must be > 0")
        if self.predicted_sd_log is not None and not 0 <= self.predicted_sd_log <= 10:
            raise BadInputError(f"job {self.job_id}: predicted_sd_log="
                                f"{self.predicted_sd_log} must be in [0, 10]")
        if not 1 <= self.min_gpus <= self.max_gpus:
            raise BadInputError(f"job {self.job_id}: need 1 <= min_gpus ({self.min_gpus}) <= "
                                f"max_gpus ({self.max_gpus})")


class _Row:
    """Typed access to one CSV row; every error names file, row and column."""

    def __init__(self, path: Path, line: int, row: dict[str, str]) -> None:
        self.path, self.line, self.row = path, line, row

    def fail(self, column: str, message: str) -> BadInputError:
        return BadInputError(f"{self.path.name}: row {self.line}, column '{column}': {message}")

    def text(self, column: str) -> str:
        value = (self.row.get(column) or "").strip()
        if not value:
            raise self.fail(column, "empty")
        return value

    def number(self, column: str, minimum: float | None = 0.0) -> float:
        raw = self.text(column)
        try:
            value = float(raw)
        except ValueError:
            raise self.fail(column, f"{excerpt(raw)} is not a number") from None
        if not math.isfinite(value):
            raise self.fail(column, f"{excerpt(raw)} is not finite")
        if minimum is not None and value < minimum:
            raise self.fail(column, f"{excerpt(raw)[1:-1]} must be >= {minimum:g}")
        return value

    def integer(self, column: str, minimum: int = 1) -> int:
        value = self.number(column, minimum)
        if value != int(value):
            raise self.fail(column, f"{value} is not a whole number")
        return int(value)


def _open_rows(path: Path) -> tuple[list[str], list[tuple[int, dict]]]:
    if not path.is_file():
        raise BadInputError(f"trace {path}: no such file")
    return read_csv(path, path.name)


def check_trace_file(path: Path) -> None:
    """A trace's size and encoding, checked before its header is sniffed as text."""
    if path.is_file():
        read_text(path, path.name, MAX_DATA_BYTES)


def read_trace(path: str | Path, throughputs: ThroughputTable | None = None) -> list[SimJob]:
    """Read either trace format (told apart by the header), sorted by arrival then job id.

    With `throughputs`, a model/batch with no throughput table is an error naming the row."""
    path = Path(path)
    header, rows = _open_rows(path)
    if "arrival_s" in header:
        jobs = _read_ptctl(path, rows, header, throughputs)
    else:
        jobs = _read_elasticflow(path, rows, header, throughputs)
    if not jobs:
        raise BadInputError(f"{path.name}: no jobs")
    seen: set[str] = set()
    for job in jobs:
        if job.job_id in seen:
            raise BadInputError(f"{path.name}: job_id {excerpt(job.job_id)} appears twice")
        seen.add(job.job_id)
    return sorted(jobs, key=lambda j: (j.arrival_s, j.job_id))


def _check_model(row: _Row, model_col: str, batch_col: str, model: str, batch: int,
                 throughputs: ThroughputTable | None) -> None:
    if throughputs is not None and not throughputs.has(model, batch):
        known = sorted({m for m, _ in throughputs.curves})
        raise row.fail(model_col, f"unknown model {excerpt(model)} with {batch_col}={batch} "
                                  f"(throughput tables: {', '.join(known)})")


def _header(header: list[str]) -> str:
    return excerpt(",".join(header))[1:-1]


def _read_elasticflow(path: Path, rows, header: list[str],
                      throughputs: ThroughputTable | None) -> list[SimJob]:
    columns = {}
    for role, spellings in _EF_SPELLINGS.items():
        found = [s for s in spellings if s in header]
        if not found:
            raise BadInputError(f"{path.name}: missing column '{spellings[0]}' (or "
                                f"'{spellings[1]}'); header is {_header(header)}")
        columns[role] = found[0]
    for column in _EF_REQUIRED:
        if column not in header:
            raise BadInputError(f"{path.name}: missing column '{column}'; header is "
                                f"{_header(header)}")
    jobs = []
    for line, raw in rows:
        row = _Row(path, line, raw)
        arrival = row.number(columns["arrival"])
        deadline = row.number(columns["deadline"])
        if deadline <= arrival:
            raise row.fail(columns["deadline"], f"deadline {deadline:g} is not after arrival {arrival:g}")
        iterations = row.number(columns["iterations"], minimum=1)
        model = row.text("model_name")
        batch = row.integer("batch_size")
        _check_model(row, "model_name", "batch_size", model, batch, throughputs)
        max_gpus = 64
        if throughputs is not None:
            allowed = throughputs.curve(model, batch).allowed_gpus
            max_gpus = max(g for g in allowed if g <= min(64, batch)) if any(
                g <= min(64, batch) for g in allowed) else min(allowed)
        jobs.append(SimJob(row.text("job_id"), arrival, deadline, model, batch, iterations,
                           iterations, 1, max(1, min(max_gpus, 64))))
    return jobs


def _read_ptctl(path: Path, rows, header: list[str],
                throughputs: ThroughputTable | None) -> list[SimJob]:
    missing = [c for c in PTCTL_COLUMNS if c not in header]
    if missing:
        raise BadInputError(f"{path.name}: missing column '{missing[0]}'; header is "
                            f"{_header(header)}")
    jobs = []
    for line, raw in rows:
        row = _Row(path, line, raw)
        arrival = row.number("arrival_s")
        deadline = row.number("deadline_s")
        if deadline <= arrival:
            raise row.fail("deadline_s", f"deadline {deadline:g} is not after arrival {arrival:g}")
        model = row.text("model")
        batch = row.integer("global_batch")
        _check_model(row, "model", "global_batch", model, batch, throughputs)
        min_gpus = row.integer("min_gpus")
        max_gpus = row.integer("max_gpus")
        if max_gpus < min_gpus:
            raise row.fail("max_gpus", f"{max_gpus} is below min_gpus {min_gpus}")
        predicted = sd_log = None
        if (raw.get(PREDICTED_COLUMN) or "").strip():
            predicted = row.number(PREDICTED_COLUMN, minimum=1)
        if (raw.get(SD_LOG_COLUMN) or "").strip():
            sd_log = row.number(SD_LOG_COLUMN)
            if sd_log > 10:
                raise row.fail(SD_LOG_COLUMN, f"{sd_log:g} must be <= 10")
        jobs.append(SimJob(row.text("job_id"), arrival, deadline, model, batch,
                           row.number("iterations", minimum=1),
                           row.number("iterations_bank", minimum=1), min_gpus, max_gpus,
                           predicted, sd_log))
    return jobs


def write_ptctl_trace(path: str | Path, jobs: list[SimJob]) -> None:
    """Write jobs in ptctl's trace format (atomically)."""
    import io

    from ptctl.fsutil import atomic_write_text

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(PTCTL_COLUMNS + (PREDICTED_COLUMN, SD_LOG_COLUMN))
    for j in jobs:
        predicted = "" if j.iterations_predicted is None else int(round(j.iterations_predicted))
        sd_log = "" if j.predicted_sd_log is None else repr(j.predicted_sd_log)
        writer.writerow([j.job_id, f"{j.arrival_s:.3f}", f"{j.deadline_s:.3f}", j.model,
                         int(round(j.iterations)), int(round(j.iterations_bank)), j.global_batch,
                         j.min_gpus, j.max_gpus, predicted, sd_log])
    atomic_write_text(path, buf.getvalue())


def read_cluster_layout(path: str | Path) -> tuple[int, int, int]:
    """ElasticFlow's `cluster_specs/nXgY.csv`: (switches, nodes per switch, GPUs per node)."""
    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"cluster spec {path}: no such file")
    header, rows = _open_rows(path)
    for column in ("num_switch", "num_node_p_switch", "num_gpu_p_node"):
        if column not in header:
            raise BadInputError(f"{path.name}: missing column '{column}'")
    if len(rows) != 1:
        raise BadInputError(f"{path.name}: expected one data row, found {len(rows)}")
    row = _Row(path, *rows[0])
    return row.integer("num_switch"), row.integer("num_node_p_switch"), row.integer("num_gpu_p_node")
