"""How many steps a job needs from the start its query picked, and how sure that is.

The bank's entries carry their own jobs' evaluation curves: (step, accuracy, label-word loss)
from a start on their source task until that task's target (or until the job's steps ran out).
Those curves are the record of how tasks like the new one train under these settings. The
rule, in `docs/bank.md` ("Predicted steps"):

1. References: the `REFERENCES` entries whose tasks are nearest the new task by task embedding
   (without task features: the best-scoring entries), each with its curve.
2. Where the pick stands on each reference's curve: the first evaluation at which that
   reference's loss, per nat of chance (loss / ln(labels)), was as low as the pick's score on
   the new task. A start that scores like a reference did after t steps has t of its steps
   behind it; one that scores better than the reference ever did has all of them.
3. Each reference that reached its target gives steps_to_target - t. One that never reached it
   gives the steps it ran (how far it got says nothing about the rest of the way), and marks
   the prediction open-ended: the interval then reaches max_steps.
4. The prediction is the median of those, within [1, max_steps]; the spread of log(steps) is
   that of the references, with a floor of `SEED_SD_LOG`, the spread between training seeds
   from one start; the interval is exp(+-z sd) around the prediction, z for `COVERAGE`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

REFERENCES = 3
# Seed-to-seed spread of log(steps to target): on the held-out tweet tasks of
# benchmarks/bank_convergence.py, the standard deviation of log(steps) over seeds is 0.48 and
# 0.64 from one bank start, 0.07-0.49 for random and text starts (BBC runs end within two
# evaluations, below the measurement's resolution). Training noise, whatever the task.
SEED_SD_LOG = 0.5
COVERAGE = 0.8


@dataclass(frozen=True)
class Forecast:
    steps: int           # the prediction, within [1, max_steps]
    sd_log: float        # spread of log(steps); the planner's margin
    lo: int              # an interval holding the steps with probability `coverage`
    hi: int
    coverage: float = COVERAGE


def forecast_steps(snap, spec, scored: dict[str, float], pick_score: float, labels: int,
                   similarity: np.ndarray | None, eligible: list[str]) -> Forecast:
    """The steps `spec`'s job needs from a start scoring `pick_score` (the rank-classification
    loss over `labels` label words) on its task. `similarity[i]` is eligible[i]'s task
    similarity to the new task; `scored` the entries the query scored."""
    max_steps = spec.training.max_steps
    if similarity is not None:
        order = [eligible[int(i)] for i in np.argsort(-similarity, kind="stable")]
    else:
        order = sorted(scored, key=scored.get)
    refs = [snap.entry(eid) for eid in order if snap.entry(eid).eval_curve][:REFERENCES]
    if not refs:  # entries without curves: nothing to learn from, plan for the whole run
        return _around(max_steps, SEED_SD_LOG, max_steps, open_ended=True)
    per_chance = pick_score / math.log(max(2, labels))
    values, open_ended = [], False
    for entry in refs:
        behind = steps_behind(entry, per_chance)
        if entry.steps_to_target is None:
            values.append(max(1, entry.steps))
            open_ended = True
        else:
            values.append(max(1, entry.steps_to_target - behind))
    steps = min(max_steps, max(1, round(float(np.median(values)))))
    logs = np.log(values)
    spread = float(np.std(logs, ddof=1)) if len(logs) > 1 else 0.0
    return _around(steps, max(SEED_SD_LOG, spread), max_steps, open_ended)


def steps_behind(entry, per_chance: float) -> int:
    """Steps of `entry`'s curve that a start scoring `per_chance` (loss / ln(labels)) has
    behind it: the first evaluation whose loss was as low, else the whole curve."""
    chance = math.log(max(2, len(entry.label_words) or len(entry.labels)))
    for step, _accuracy, loss, *_ in entry.eval_curve:
        if loss / chance <= per_chance:
            return int(step)
    return int(entry.eval_curve[-1][0])


def _around(steps: int, sd_log: float, max_steps: int, open_ended: bool) -> Forecast:
    z = NormalDist().inv_cdf(0.5 + COVERAGE / 2)
    lo = max(1, math.floor(steps * math.exp(-z * sd_log)))
    hi = max_steps if open_ended else min(max_steps, math.ceil(steps * math.exp(z * sd_log)))
    return Forecast(steps, round(sd_log, 4), lo, max(hi, steps))
