"""Steps measured by an earlier job of the same task: the best prediction a new job can have.

Training is deterministic for a given spec and initial prompt (a resumed run ends bit-identical
to an uninterrupted one), so a job that repeats an ended one here (the same model, data,
template, prompt settings, training settings and target, from the same initial prompt) is
predicted to take the steps that one took: the step it reached its target at, or all its
max_steps when it ended short of the target. Name, deadline, GPU bounds and Slurm settings do
not change the steps and are not compared.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ptctl.errors import PtctlError
from ptctl.jobs.lifecycle import Phase
from ptctl.jobs.registry import Registry

NOT_COMPARED = ("name", "deadline", "gpus", "slurm")


@dataclass(frozen=True)
class Repeat:
    steps: int
    job_id: str  # the earlier job it repeats (the latest to end)


def _task_key(spec: dict[str, Any]) -> str:
    return json.dumps({k: v for k, v in spec.items() if k not in NOT_COMPARED}, sort_keys=True)


def earlier_run(registry: Registry, spec: dict[str, Any],
                init_prompt_id: str | None) -> Repeat | None:
    """The latest ended job (target reached, or max_steps without it) of the same task from
    the same initial prompt, and the steps it took; None when there is none."""
    key = _task_key(spec)
    found: tuple[str, Repeat] | None = None
    for state in registry.all():
        step = state.progress.get("step")
        if state.phase not in (Phase.FINISHED, Phase.UNMET) or not isinstance(step, int) \
                or state.init_prompt_id != init_prompt_id:
            continue
        if found is not None and (state.ended_at or "") <= found[0]:
            continue
        try:
            same = _task_key(registry.load_spec(state.job_id)) == key
        except PtctlError:  # an unreadable record predicts nothing
            continue
        if same:
            found = (state.ended_at or "", Repeat(step, state.job_id))
    return found[1] if found else None
