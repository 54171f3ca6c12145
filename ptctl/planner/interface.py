"""The policy interface: what a policy sees of a job (`JobView`), what it answers (`Decision`),
and the rule every policy implements (`Policy`); `ptctl.planner.policies.decide` is the entry."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ptctl.errors import BadInputError
from ptctl.planner.gpu_need import ClusterModel

JOB_STATES = ("queued", "running")


@dataclass
class JobView:
    """What a policy sees of one job; the simulator and the live rebalancer build it with
    ptctl.planner.views.job_view."""

    job_id: str
    model: str
    global_batch: int
    arrival_s: float
    deadline_s: float
    state: str
    gpus: int
    min_gpus: int
    max_gpus: int
    allowed_gpus: tuple[int, ...]
    remaining_iterations: float
    throughput: Any
    remaining_sd: float = 0.0
    memory: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.state not in JOB_STATES:
            raise BadInputError(f"job {self.job_id}: state={self.state!r} must be one of {JOB_STATES}")
        if not 1 <= self.min_gpus <= self.max_gpus:
            raise BadInputError(f"job {self.job_id}: need 1 <= min_gpus ({self.min_gpus}) <= "
                                f"max_gpus ({self.max_gpus})")
        allowed = tuple(sorted(g for g in self.allowed_gpus if self.min_gpus <= g <= self.max_gpus))
        if not allowed:
            raise BadInputError(f"job {self.job_id}: no allowed_gpus {self.allowed_gpus} within "
                                f"[{self.min_gpus}, {self.max_gpus}]")
        self.allowed_gpus = allowed
        if self.gpus < 0 or (self.state == "running") != (self.gpus > 0):
            raise BadInputError(f"job {self.job_id}: gpus={self.gpus} does not fit state={self.state}")
        if self.remaining_iterations < 0 or self.remaining_sd < 0:
            raise BadInputError(f"job {self.job_id}: remaining_iterations={self.remaining_iterations}"
                                f" and remaining_sd={self.remaining_sd} must be >= 0")

    def rate(self, gpus: int) -> float:
        return self.throughput.rate(gpus) if gpus > 0 else 0.0


@dataclass(frozen=True)
class Decision:
    job_id: str
    action: str
    gpus: int
    reason: str = ""
    predicted_finish_s: float | None = None
    memory: dict = field(default_factory=dict)
    review_at_s: float | None = None


def _decision(job: JobView, gpus: int, reason: str, finish: float | None = None,
              infeasible: bool = False, review_at_s: float | None = None,
              memory_update: dict | None = None) -> Decision:
    """Turn a target GPU count into the action that gets the job there."""
    if infeasible:
        action = "infeasible"
    elif gpus == job.gpus:
        action = "keep"
    elif job.gpus == 0:
        action = "start"
    else:
        action = "resize"
    memory = dict(job.memory)
    if memory_update:
        memory.update(memory_update)
    return Decision(job.job_id, action, gpus, reason, finish, memory, review_at_s)


def _largest_fitting(job: JobView, limit: int, at_most: int | None = None) -> int:
    """The largest allowed count <= limit (and <= at_most); 0 if none fits."""
    cap = limit if at_most is None else min(limit, at_most)
    best = 0
    for g in job.allowed_gpus:
        if g <= cap:
            best = g
    return best


class Policy:
    """A named decision rule. `uses_bank`: its jobs start from Prompt Bank prompts."""

    name = "policy"
    uses_bank = False

    def decide(self, now_s: float, gpu_budget: int, jobs: list[JobView],
               cluster: ClusterModel) -> list[Decision]:
        raise NotImplementedError
