"""What the scheduler asks of the place that runs attempts, whatever it is.

One attempt = one submitit job with a fixed GPU count and one task per GPU. A backend submits
it, reports the state of many attempts with one query, signals and cancels one, and finds a
live one by its unique name (so a launch whose record was lost is not submitted twice).
"""

from __future__ import annotations

import math
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol

from ptctl.config import Profile
from ptctl.errors import PtctlError
from ptctl.tuning.report import ranks

# Job states after which Slurm never runs the job again (a requeued job goes back to PENDING).
# Local attempts report the same vocabulary (RUNNING, then COMPLETED).
FINISHED_STATES = frozenset({
    "BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED", "NODE_FAIL",
    "OUT_OF_MEMORY", "PREEMPTED", "REVOKED", "TIMEOUT",
})


@dataclass(frozen=True)
class AttemptStatus:
    """One attempt as its backend reports it.

    `start` and `end` are Slurm's local timestamps ("2026-01-31T12:00:00"): `start` once the
    job has started, `end` once it has finished, else None. `gpus` counts all nodes. `reason`
    is why a pending job waits (squeue's %r). `cancelled_by` and `user_id` are the uid that
    cancelled it and the uid that owns it, where accounting says (sacct: "CANCELLED by 1000").
    """

    job_id: str
    state: str
    reason: str = ""
    nodes: str = ""
    gpus: int = 0
    start: str | None = None
    end: str | None = None
    partition: str = ""
    cancelled_by: str | None = None
    user_id: str | None = None

    @property
    def finished(self) -> bool:
        return self.state in FINISHED_STATES

    @property
    def cancelled_by_owner(self) -> bool:
        """Cancelled by the user who owns it (`scancel` of their own job), not by an admin or
        by Slurm itself (preemption, node failure and time limits have states of their own).
        A cancel Slurm does not attribute (no accounting) is taken as the owner's: the owner
        cancels far more often than anyone else, and `ptctl resume` undoes it."""
        if self.state != "CANCELLED":
            return False
        return self.cancelled_by is None or self.user_id is None or \
            self.cancelled_by == self.user_id


@dataclass(frozen=True)
class Check:
    """One line of `ptctl doctor`."""

    name: str
    status: str  # ok | warn | fail | skip
    detail: str


class Backend(Protocol):
    profile: Profile
    # True when attempts may run on other machines, so the state folder must be shared.
    multi_node: bool

    def ping(self) -> None:
        """Raise SlurmUnreachableError unless the backend can take work now."""

    def submit(self, task: Callable[[], Any], *, folder: Path, gpus: int, name: str,
               comment: str = "") -> str:
        """Submit `task` as one attempt with `gpus` GPUs; its id. Logs go under `folder`
        ("%j" stands for the attempt id); `comment` says whose it is and why (sbatch
        --comment)."""

    def poll(self, attempt_ids: list[str]) -> dict[str, AttemptStatus]:
        """The states of the attempts the backend knows, with one query for all of them."""

    def usage(self, attempt_ids: list[str]) -> dict[str, tuple[float, float]]:
        """(elapsed seconds, GPU-seconds) of each attempt that accounting knows, with one
        query; attempts left out are counted from ptctl's own records."""

    def signal(self, attempt_id: str, sig: signal.Signals) -> None:
        """Deliver `sig` to every task of the attempt (USR2: checkpoint and stop)."""

    def cancel(self, attempt_id: str) -> None:
        """End the attempt for good."""

    def find_by_name(self, name: str) -> str | None:
        """The id of a pending or running attempt named `name`, if any."""

    def launched(self, attempt_id: str, gpus: int) -> str:
        """What was started, in a person's words: `launched on 2 GPUs as Slurm job 1234`."""

    def checks(self) -> list[Check]:
        """What `ptctl doctor` reports about the backend."""


def node_layout(gpus: int, gpus_per_node: int) -> tuple[int, int]:
    """(nodes, GPUs per node) for a job of `gpus` GPUs: whole nodes once it exceeds one."""
    if gpus <= gpus_per_node:
        return 1, gpus
    nodes = math.ceil(gpus / gpus_per_node)
    if gpus % nodes:
        raise PtctlError(f"{gpus} GPUs do not split evenly over {nodes} nodes of "
                         f"{gpus_per_node} GPUs")
    return nodes, gpus // nodes


class SubmititBackend:
    """Submission through submitit's executor of the same name; subclasses add the rest."""

    executor = ""
    multi_node = False
    attempt_noun = ""  # what an attempt id names: "Slurm job", "local process"

    def __init__(self, profile: Profile):
        self.profile = profile

    def launched(self, attempt_id: str, gpus: int) -> str:
        return f"launched on {ranks(gpus, 'cuda')} as {self.attempt_noun} {attempt_id}"

    def executor_parameters(self, gpus: int, name: str, comment: str = "") -> dict[str, Any]:
        """submitit parameters for one attempt: one task per GPU, the profile's settings."""
        nodes, per_node = node_layout(gpus, self.profile.gpus_per_node)
        return {
            "name": name,
            "timeout_min": self.profile.time_limit_min,
            "nodes": nodes,
            "tasks_per_node": per_node,
            "gpus_per_node": per_node,
            "cpus_per_task": self.profile.cpus_per_gpu,
            "slurm_signal_delay_s": self.profile.signal_lead_s,
        }

    def submit(self, task: Callable[[], Any], *, folder: Path, gpus: int, name: str,
               comment: str = "") -> str:
        import submitit

        # Requeues are ptctl's business (time limits on long jobs come again and again): do
        # not let submitit's default of 3 timeouts end a job.
        executor = submitit.AutoExecutor(folder=folder, cluster=self.executor,
                                         slurm_max_num_timeout=1000)
        executor.update_parameters(**self.executor_parameters(gpus, name, comment))
        return str(executor.submit(task).job_id)
