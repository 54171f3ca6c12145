"""A job's phases and the one place where a phase changes.

Every phase change in ptctl goes through `move`, which checks it against TRANSITIONS: a change
the table does not list raises, so a race or a bug cannot resurrect an ended job unnoticed. The
one way back from an ended phase is `ptctl resume` (cancelled or failed -> queued); every other
writer checks `is_terminal` under the job's lock before it moves a job.
The values are the strings state.json and `--json` output have always used.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Protocol

from ptctl.errors import PtctlError


class Phase(StrEnum):
    QUEUED = "queued"      # registered, no attempt holds GPUs
    PENDING = "pending"    # an attempt is submitted (waiting in Slurm, or starting)
    RUNNING = "running"    # an attempt is training
    RESIZING = "resizing"  # asked to checkpoint and stop, to relaunch at another GPU count
    FINISHED = "finished"  # ended with its target reached
    UNMET = "unmet"        # ended at max_steps without reaching its target (a result exists)
    FAILED = "failed"
    CANCELLED = "cancelled"


TERMINAL = frozenset({Phase.FINISHED, Phase.UNMET, Phase.FAILED, Phase.CANCELLED})
# Ended phases whose job exported a result/ (the tuned prompt), met target or not.
WITH_RESULT = frozenset({Phase.FINISHED, Phase.UNMET})

# from -> the phases it may move to. Some pairs come from races that the code tolerates: an
# attempt marks itself running before the launch that submitted it records it (running ->
# pending); Slurm requeues an attempt while a resize is being requested (resizing -> pending).
TRANSITIONS: dict[Phase, frozenset[Phase]] = {
    Phase.QUEUED: frozenset({Phase.QUEUED, Phase.PENDING, Phase.RUNNING, Phase.FAILED,
                             Phase.CANCELLED}),
    Phase.PENDING: frozenset({Phase.PENDING, Phase.RUNNING, Phase.QUEUED, Phase.RESIZING,
                              Phase.FINISHED, Phase.UNMET, Phase.CANCELLED}),
    Phase.RUNNING: frozenset({Phase.PENDING, Phase.QUEUED, Phase.RESIZING, Phase.FINISHED,
                              Phase.UNMET, Phase.CANCELLED}),
    Phase.RESIZING: frozenset({Phase.PENDING, Phase.QUEUED, Phase.FINISHED, Phase.UNMET,
                               Phase.CANCELLED}),
    Phase.FINISHED: frozenset(),
    Phase.UNMET: frozenset(),
    # `ptctl resume` only: back to the queue, to continue from the kept checkpoint.
    Phase.FAILED: frozenset({Phase.QUEUED}),
    Phase.CANCELLED: frozenset({Phase.QUEUED}),
}


class IllegalTransitionError(PtctlError):
    """A phase change that TRANSITIONS does not allow."""


class _Phased(Protocol):
    job_id: str
    phase: str


def move(state: _Phased, to: Phase) -> None:
    """Change the job's phase to `to`, or raise IllegalTransitionError."""
    current = Phase(state.phase)
    if to not in TRANSITIONS[current]:
        raise IllegalTransitionError(f"job {state.job_id}: cannot go from {current} to {to}")
    state.phase = to
