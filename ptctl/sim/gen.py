"""`ptctl sim gen`: synthetic prompt-tuning traces.

Jobs arrive as a Poisson process; each picks a model from a mix and its iterations to the target
from a random initial prompt, log-normal around a per-model median. Its start from the Prompt
Bank is resampled from what was measured (`measured_starts.json`, built by
`benchmarks/measured_starts.py` from the held-out runs): a held-out task drawn uniformly, then
one of that task's runs, which gives both the picked start's step ratio to a random start
(iterations_bank = iterations x ratio, above 1 where the bank's start was slower) and the
query's prediction error (iterations_predicted = iterations_bank x predicted/measured). So tasks
the bank slows, and predictions that miss, appear as often as they were measured. The deadline
is arrival + k x the job's duration at a reference GPU count, with k uniform in a range.

Convergence file (`--convergence FILE`, JSON), every key optional:
    {"random_iterations_median": {"gpt-base": 3000, ...}, "random_iterations_sigma": 0.5,
     "bank_over_random_median": 1.0, "bank_over_random_sigma": 0.0}
`random_iterations_*` override DEFAULT_CONVERGENCE. `bank_over_random_median` replaces the
measured starts by one log-normal ratio (sigma `bank_over_random_sigma`, default 0): a model of
the bank, not a measurement, so its jobs carry no bank prediction and every policy plans on the
simulator's estimate noise alike (median 1, sigma 0 = no Prompt Bank effect: the scheduler
alone). Medians are at most 1e9 iterations and sigmas at most 5 (beyond, exp() of the noise
overflows to infinite iterations).

Throughput of the prompt-tuning models (`PROMPT_TUNING_THROUGHPUTS`, iterations/s on A100s at
global batch 32) is an assumption stated here, shaped by the Universal Scalability Law: small
models scale poorly, a 7B model well.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

import numpy as np

from ptctl.errors import BadInputError, excerpt
from ptctl.planner.throughput import ThroughputCurve, ThroughputTable
from ptctl.safeload import load_json, parse_json
from ptctl.sim.traces import SimJob

PROMPT_TUNING_BATCH = 32
PROMPT_TUNING_GPUS = (1, 2, 4, 8, 16, 32)
# model: (iterations/s on 1 GPU, USL contention s, USL coherency k)
_PT_USL = {
    "gpt-base": (10.0, 0.20, 0.004),
    "gpt-large": (4.0, 0.10, 0.002),
    "vicuna-7b": (0.8, 0.04, 0.0005),
}
DEFAULT_CONVERGENCE = {
    "bank_over_random_median": None,  # None: the measured starts; a number: one log-normal ratio
    "bank_over_random_sigma": 0.0,
    "random_iterations_median": {"gpt-base": 3000.0, "gpt-large": 2500.0, "vicuna-7b": 1500.0},
    "random_iterations_sigma": 0.5,
}
MEASURED_STARTS = "measured_starts.json"


def prompt_tuning_throughputs() -> ThroughputTable:
    """Built-in table for the prompt-tuning models (see the module docstring)."""
    table = ThroughputTable()
    for model, (x1, s, k) in _PT_USL.items():
        rates = {g: x1 * g / (1 + s * (g - 1) + k * g * (g - 1)) for g in PROMPT_TUNING_GPUS}
        table.add(ThroughputCurve(model, PROMPT_TUNING_BATCH, rates))
    return table


def load_convergence(path: str | Path | None) -> dict:
    """The convergence settings: DEFAULT_CONVERGENCE overridden by the file's keys."""
    settings = json.loads(json.dumps(DEFAULT_CONVERGENCE))
    if path is None:
        return settings
    path = Path(path)
    origin = f"convergence file {path}"
    if not path.is_file():
        raise BadInputError(f"{origin}: no such file")
    data = load_json(path, origin)
    if not isinstance(data, dict):
        raise BadInputError(f"{origin}: expected a JSON object")
    for key, value in data.items():
        if key not in settings:
            raise BadInputError(f"{origin}: unknown key {excerpt(key)}")
        if key == "random_iterations_median":
            if not isinstance(value, dict) or not all(_number(v) and 0 < v <= 1e9
                                                      for v in value.values()):
                raise BadInputError(f"{origin}: {key} must map models to numbers in (0, 1e9]")
            settings[key].update(value)
        elif not _number(value) or not 0 <= value <= (5 if key.endswith("sigma") else 1.5):
            raise BadInputError(f"{origin}: {key}={excerpt(value)} must be a number >= 0 and "
                                f"<= {5 if key.endswith('sigma') else 1.5}")
        else:
            settings[key] = float(value)
    median = settings["bank_over_random_median"]
    if median is None and "bank_over_random_sigma" in data:
        raise BadInputError(f"{origin}: bank_over_random_sigma needs bank_over_random_median")
    if median is not None and not 0 < median <= 1.5:
        raise BadInputError(f"{origin}: bank_over_random_median={median} must be in (0, 1.5]")
    return settings


def load_measured_starts() -> list[list[tuple[float, float, float | None]]]:
    """Per held-out task, its runs as (start/random step ratio, predicted/measured steps, the
    sd of log(steps) the query stated or None), from the package's measured_starts.json."""
    origin = f"ptctl/sim/{MEASURED_STARTS}"
    data = parse_json((files("ptctl.sim") / MEASURED_STARTS).read_text(), origin)
    tasks = data.get("tasks") if isinstance(data, dict) else None
    if not isinstance(tasks, dict) or not tasks:
        raise BadInputError(f"{origin}: expected an object with a non-empty 'tasks'")
    table = []
    for task, runs in tasks.items():
        rows = []
        for run in runs if isinstance(runs, list) else [None]:
            ratio, error = ((run.get("start_over_random"), run.get("predicted_over_measured"))
                            if isinstance(run, dict) else (None, None))
            if not (_number(ratio) and _number(error) and ratio >= 0 and error > 0
                    and math.isfinite(ratio) and math.isfinite(error)):
                raise BadInputError(f"{origin}: task {excerpt(task)}: each run needs "
                                    "start_over_random >= 0 and predicted_over_measured > 0")
            sd_log = run.get("predicted_sd_log")
            if sd_log is not None and not (_number(sd_log) and 0 <= sd_log <= 10):
                raise BadInputError(f"{origin}: task {excerpt(task)}: predicted_sd_log must "
                                    "be a number in [0, 10]")
            rows.append((float(ratio), float(error), None if sd_log is None else float(sd_log)))
        if not rows:
            raise BadInputError(f"{origin}: task {excerpt(task)} has no runs")
        table.append(rows)
    return table


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True)
class GenSpec:
    """What to generate."""

    jobs: int = 200
    rate_per_hour: float = 30.0
    models: tuple[str, ...] = ("gpt-base", "gpt-large", "vicuna-7b")
    model_weights: tuple[float, ...] = (0.4, 0.35, 0.25)
    k_min: float = 0.5
    k_max: float = 1.5
    reference_gpus: int = 2
    max_gpus: int = 32
    seed: int = 0

    def __post_init__(self) -> None:
        if self.jobs < 1:
            raise BadInputError(f"jobs={self.jobs} must be >= 1")
        if not self.rate_per_hour > 0:
            raise BadInputError(f"rate_per_hour={self.rate_per_hour} must be > 0")
        if len(self.models) != len(self.model_weights) or not self.models:
            raise BadInputError(f"models {self.models} and weights {self.model_weights} must "
                                f"be non-empty and of equal length")
        unknown = [m for m in self.models if m not in _PT_USL]
        if unknown:
            raise BadInputError(f"unknown model {unknown[0]!r}; known: {', '.join(_PT_USL)}")
        if any(w < 0 for w in self.model_weights) or sum(self.model_weights) <= 0:
            raise BadInputError(f"model_weights={self.model_weights} must be >= 0, not all 0")
        if not 0 < self.k_min <= self.k_max:
            raise BadInputError(f"need 0 < k_min ({self.k_min}) <= k_max ({self.k_max})")
        if self.reference_gpus not in PROMPT_TUNING_GPUS:
            raise BadInputError(f"reference_gpus={self.reference_gpus} must be one of {PROMPT_TUNING_GPUS}")
        if self.max_gpus < 1:
            raise BadInputError(f"max_gpus={self.max_gpus} must be >= 1")


def generate(spec: GenSpec, convergence: dict | None = None) -> list[SimJob]:
    """A trace for `spec`; the same spec and convergence give the same trace."""
    conv = convergence or load_convergence(None)
    rng = np.random.default_rng(spec.seed)
    table = prompt_tuning_throughputs()
    weights = np.asarray(spec.model_weights, dtype=float)
    gaps = rng.exponential(3600.0 / spec.rate_per_hour, size=spec.jobs)
    arrivals = np.cumsum(gaps) - gaps[0]
    models = rng.choice(len(spec.models), size=spec.jobs, p=weights / weights.sum())
    iter_noise = rng.normal(0.0, conv["random_iterations_sigma"], size=spec.jobs)
    ks = rng.uniform(spec.k_min, spec.k_max, size=spec.jobs)
    # A stream of its own: the same seed gives the same arrivals, models, random-start
    # iterations and deadlines whatever the bank's starts are drawn from.
    starts = _bank_starts(np.random.default_rng((spec.seed, 1)), spec.jobs, conv)
    jobs = []
    for i in range(spec.jobs):
        model = spec.models[models[i]]
        random_iters = max(50.0, round(conv["random_iterations_median"][model] * math.exp(iter_noise[i])))
        ratio, error, sd_log = starts[i]
        # Not capped at 1: a bank prompt can also start a task worse than a random one.
        bank_iters = max(10.0, round(random_iters * ratio))
        predicted = None if error is None else max(1.0, round(bank_iters * error))
        duration = random_iters / table.curve(model, PROMPT_TUNING_BATCH).rate(spec.reference_gpus)
        arrival = round(float(arrivals[i]), 3)
        jobs.append(SimJob(f"pt-{i:05d}", arrival, round(arrival + ks[i] * duration, 3), model,
                           PROMPT_TUNING_BATCH, random_iters, bank_iters, 1, spec.max_gpus,
                           predicted, None if predicted is None else sd_log))
    return jobs


def _bank_starts(rng: np.random.Generator, count: int,
                 conv: dict) -> list[tuple[float, float | None, float | None]]:
    """Per job, (bank/random step ratio, predicted/measured steps or None for no prediction,
    the prediction's stated sd of log(steps) or None)."""
    if conv["bank_over_random_median"] is not None:
        noise = rng.normal(0.0, conv["bank_over_random_sigma"], size=count)
        return [(conv["bank_over_random_median"] * math.exp(x), None, None) for x in noise]
    measured = load_measured_starts()
    tasks = rng.integers(len(measured), size=count)
    picks = rng.random(size=count)
    return [measured[t][int(p * len(measured[t]))] for t, p in zip(tasks, picks)]
