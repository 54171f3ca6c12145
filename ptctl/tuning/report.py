"""What rank 0 tells a person while it trains: the training loop's own lines.

In a job they go to stdout, the log file (`ptctl logs`) where submitit writes its own lines, so
the two read in order. Lines stay few: a step line at most every LINE_EVERY_S seconds and
before each evaluation, a line before and after each evaluation (it can take minutes), one at
the start and one with the outcome. On a terminal (`ptctl run`) a rich progress bar replaces
the step lines. The progress record
(ptctl.jobs.progress) stays the source for machines; these lines are for people.
"""

from __future__ import annotations

import sys
import time

from ptctl.jobs.spec import JobSpec

LINE_EVERY_S = 10.0
DISPLAYS = ("auto", "lines", "log", "bar", "off")


def clock(seconds: float) -> str:
    """`0:42`, `12:05`, `1:02:03`: elapsed time and ETAs as a clock reads."""
    s = max(0, int(round(seconds)))
    if s >= 3600:
        return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"
    return f"{s // 60}:{s % 60:02d}"


def ranks(world_size: int, device: str) -> str:
    """`1 GPU`, `4 GPUs`, `2 ranks (CPU)`: what the ranks run on, in a person's words."""
    if device.startswith("cuda"):
        return f"{world_size} GPU{'s' if world_size > 1 else ''}"
    return f"{world_size} rank{'s' if world_size > 1 else ''} (CPU)"


class Report:
    """Training lines for people; every method is a no-op unless this process shows them.

    `display`: "lines" (plain lines on stderr: pipes), "log" (plain lines on stdout: a job's
    log), "bar" (rich progress on a terminal), "auto" (bar when stderr is a terminal, else
    lines) or "off" (`--quiet`, `--json`, ranks other than 0)."""

    def __init__(self, spec: JobSpec, display: str, world_size: int, device: str):
        if display not in DISPLAYS:
            raise ValueError(f"display: got {display!r}, expected one of {', '.join(DISPLAYS)}")
        if display == "auto":
            display = "bar" if sys.stderr.isatty() else "lines"
        self.display = display
        self.spec, self.where = spec, ranks(world_size, device)
        self.max_steps = spec.training.max_steps
        self.started = time.monotonic()
        self.last_line = float("-inf")
        self.eval_s: float | None = None  # the last evaluation's duration, as shown
        self.eval_started = 0.0
        self._bar = self._task = None
        if display == "bar":
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            self._bar = Progress(TextColumn("{task.description}"), BarColumn(),
                                 TextColumn("{task.completed}/{task.total}"),
                                 TextColumn("{task.fields[info]}"), TimeElapsedColumn(),
                                 TextColumn("{task.fields[eta]}"),
                                 console=Console(file=sys.stderr), transient=False)

    def _say(self, line: str) -> None:
        if self._bar is not None:
            self._bar.console.print(line, markup=False, highlight=False)
        elif self.display in ("lines", "log"):
            print(line, file=sys.stdout if self.display == "log" else sys.stderr, flush=True)

    def begin(self, step: int, resumed: bool, load_s: float) -> None:
        where = f"resuming at step {step}/{self.max_steps}" if resumed else \
            f"{self.max_steps} steps of {self.spec.training.global_batch_size} samples"
        self._say(f"training {self.spec.name}: {where} on {self.where}; model and data "
                  f"loaded in {load_s:.1f} s")
        if self._bar is not None:
            self._bar.start()
            self._task = self._bar.add_task("training", total=self.max_steps, completed=step,
                                            info="", eta="")

    def step(self, step: int, loss: float, steps_per_s: float | None) -> None:
        """After each step; shown at a bounded rate, and always before an evaluation."""
        per_step = 1 / steps_per_s if steps_per_s else None
        info = f"loss {loss:.3f}"
        if per_step:
            info += f"  {per_step:.1f} s/step" if per_step >= 1 else f"  {per_step:.2g} s/step"
        eta = self._eta(step, per_step)
        if self._bar is not None:
            self._bar.update(self._task, completed=step, info=info,
                             eta=f"eta {eta}" if eta else "")
            return
        now = time.monotonic()
        evaluates_next = step % self.spec.training.eval_every == 0
        if now - self.last_line >= LINE_EVERY_S or evaluates_next:
            self.last_line = now
            self._say(f"step {step}/{self.max_steps}  {info}  elapsed "
                      f"{clock(now - self.started)}" + (f"  eta {eta}" if eta else ""))

    def _eta(self, step: int, per_step: float | None) -> str | None:
        """Time to max_steps at the session's all-inclusive speed (evaluations and saves are
        inside it: ptctl.tuning.speed); an early stop on the target comes sooner."""
        if per_step is None:
            return None
        return clock((self.max_steps - step) * per_step)

    def evaluating(self, samples: int) -> None:
        self.eval_started = time.monotonic()
        if self._bar is not None:
            self._bar.update(self._task, description=f"evaluating ({samples} samples)")
        else:
            self._say(f"evaluating ({samples} samples)")

    def evaluated(self, step: int, metrics: dict[str, float]) -> None:
        self.eval_s = time.monotonic() - self.eval_started
        self._say(f"eval at step {step}/{self.max_steps}  accuracy {metrics['accuracy']:.3f}  "
                  f"loss {metrics['loss']:.3f}  ({self.eval_s:.1f} s)")
        if self._bar is not None:
            self._bar.update(self._task, description="training")

    def end(self, status: str, reason: str, step: int, metrics: dict[str, float] | None) -> None:
        """The outcome: steps, final metric, whether the target was reached, total time."""
        self.close()
        took = clock(time.monotonic() - self.started)
        if status == "stopped":
            self._say(f"stopped at step {step}/{self.max_steps} ({reason}) after {took}: "
                      f"checkpoint saved to resume from")
            return
        target = self.spec.target
        got = ", ".join(f"{k} {v:.3f}" for k, v in (metrics or {}).items()) or "no evaluation"
        reached = reason == "target_reached"
        self._say(f"{'finished' if reached else 'stopped'} at step {step}/{self.max_steps} "
                  f"({reason}) in {took}: {got}; target {target} "
                  f"{'reached' if reached else 'not reached'}")

    def close(self) -> None:
        """Stop the bar (also when training fails), leaving the terminal as it was."""
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
            self.display = "lines"  # what follows the bar is printed below it
