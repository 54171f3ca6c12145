"""How fast a training session goes, counted the way a planner needs it: all its time.

A deadline is met by wall-clock time, so the rate is steps per wall second since the training
loop began in this session, evaluations and checkpoint saves included. The mean seconds of one
evaluation and one save are kept too, so that a planner can re-price a job that evaluates or
saves more or less often (ptctl.planner.speeds).
"""

from __future__ import annotations

import time


class SessionSpeed:
    """Steps per second of this session, everything in the loop included."""

    def __init__(self) -> None:
        self.restart()

    def restart(self) -> None:
        """Start the clock: called once the model is loaded and the first evaluation is done
        (both are a per-launch cost, not a per-step one)."""
        self.started = time.monotonic()
        self.reported = self.started
        self.steps = 0
        self._evals: list[float] = []
        self._saves: list[float] = []

    def step(self) -> None:
        self.steps += 1

    def evaluated(self, seconds: float) -> None:
        self._evals.append(seconds)

    def saved(self, seconds: float) -> None:
        self._saves.append(seconds)

    def rate(self) -> float | None:
        elapsed = time.monotonic() - self.started
        return self.steps / elapsed if self.steps and elapsed > 0 else None

    @property
    def eval_s(self) -> float | None:
        return sum(self._evals) / len(self._evals) if self._evals else None

    @property
    def checkpoint_s(self) -> float | None:
        return sum(self._saves) / len(self._saves) if self._saves else None
