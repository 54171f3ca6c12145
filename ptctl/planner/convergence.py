"""Convergence estimate: how many iterations a tuning job needs in total, with an uncertainty.

At submit the only information is the Prompt Bank's prediction (iterations to the target from
the chosen initial prompt) with a prior relative spread. At every tick the job's own loss curve
refines it: we fit the standard inverse-power convergence curve

    loss(t) = a + b * (t + 1) ** (-c),   b > 0, c > 0

(a grid over c, then a, b by least squares), solve loss(t*) = target for t*, and combine the fit
with the prior by inverse-variance weighting. The spread of the result becomes the planner's
safety margin: plan for `mean + z * sd` iterations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ptctl.errors import BadInputError


@dataclass(frozen=True)
class ConvergenceEstimate:
    """Total iterations to the target: a mean and a standard deviation, both in iterations."""

    total_iterations: float
    sd_iterations: float

    def __post_init__(self) -> None:
        if not self.total_iterations > 0:
            raise BadInputError(f"total_iterations={self.total_iterations} must be > 0")
        if self.sd_iterations < 0:
            raise BadInputError(f"sd_iterations={self.sd_iterations} must be >= 0")

    def remaining(self, done: float, z: float = 1.0) -> float:
        """Iterations still to plan for, with a safety margin of `z` standard deviations."""
        return max(0.0, self.total_iterations + z * self.sd_iterations - done)


# How far the Prompt Bank's predicted steps miss: the RMS of measured/predicted - 1 over the
# held-out runs (`python benchmarks/measured_starts.py` prints it; tests/test_sim.py checks the
# two agree). The live scheduler and the simulator both plan a prediction with this spread.
PREDICTION_RELATIVE_SD = 5.8


def from_bank_prediction(iterations: float,
                         relative_sd: float = PREDICTION_RELATIVE_SD) -> ConvergenceEstimate:
    """The prior at submit time: the bank's predicted iterations with a relative spread."""
    if relative_sd < 0:
        raise BadInputError(f"relative_sd={relative_sd} must be >= 0")
    return ConvergenceEstimate(float(iterations), float(iterations) * relative_sd)


def stated_prediction(iterations: float, sd_log: float | None) -> ConvergenceEstimate:
    """The prior of a prediction whose query stated its spread as the sd of log(steps): a
    relative sd of exp(sd_log) - 1 (prediction + 1 sd is its +1 sd quantile); a prediction
    without one gets the spread measured over all of them."""
    return from_bank_prediction(iterations, PREDICTION_RELATIVE_SD if sd_log is None
                                else math.expm1(sd_log))


def fit_power_curve(steps, losses) -> tuple[float, float, float, float]:
    """Fit loss = a + b*(t+1)^-c; returns (a, b, c, residual sd). Needs >= 4 points."""
    import numpy as np

    t = np.asarray(steps, dtype=float)
    y = np.asarray(losses, dtype=float)
    if t.size < 4 or t.size != y.size:
        raise BadInputError(f"need >= 4 (step, loss) points of equal count, got {t.size}/{y.size}")
    best = None
    for c in np.geomspace(0.05, 3.0, 40):
        basis = (t + 1.0) ** (-c)
        design = np.column_stack([np.ones_like(basis), basis])
        coef, *_ = np.linalg.lstsq(design, y, rcond=None)
        a, b = float(coef[0]), float(coef[1])
        if b <= 0:
            continue
        resid = y - design @ coef
        sse = float(resid @ resid)
        if best is None or sse < best[0]:
            best = (sse, a, b, float(c))
    if best is None:
        raise BadInputError("loss curve is not decreasing: cannot fit a convergence curve")
    sse, a, b, c = best
    return a, b, c, math.sqrt(sse / max(1, t.size - 3))


def refit(prior: ConvergenceEstimate, steps, losses, target_loss: float) -> ConvergenceEstimate:
    """Combine the prior with a fit of the job's own loss curve (inverse-variance weighting).

    The fit's spread comes from shifting the target by one residual sd either way; a target
    below the fitted asymptote means the fit says "never" and the prior is kept, widened.
    """
    a, b, c, resid_sd = fit_power_curve(steps, losses)

    def steps_to(target: float) -> float:
        if target <= a:
            return math.inf
        return max(0.0, (b / (target - a)) ** (1.0 / c) - 1.0)

    mean = steps_to(target_loss)
    if not math.isfinite(mean):
        return ConvergenceEstimate(prior.total_iterations, prior.sd_iterations * 2 + 1.0)
    low, high = steps_to(target_loss + resid_sd), steps_to(target_loss - resid_sd)
    fit_sd = max(1.0, (high - low) / 2 if math.isfinite(high) else mean)
    done = float(max(steps))
    mean = max(mean, done + 1.0)
    prior_var = max(prior.sd_iterations, 1.0) ** 2
    fit_var = fit_sd**2
    combined = (prior.total_iterations / prior_var + mean / fit_var) / (1 / prior_var + 1 / fit_var)
    return ConvergenceEstimate(max(combined, done + 1.0), math.sqrt(1 / (1 / prior_var + 1 / fit_var)))
