"""What a simulation takes (`SimConfig`: cluster physics and what the policies can know) and
what it gives (`SimResult`: a `JobOutcome` per job, GPU use over time, summary figures)."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from ptctl.errors import BadInputError
from ptctl.planner.gpu_need import ClusterModel
from ptctl.planner.throughput import ThroughputTable


@dataclass(frozen=True)
class SimConfig:
    """How to simulate: cluster physics and what the policies can know."""

    cluster: ClusterModel
    throughputs: ThroughputTable
    seed: int = 0
    estimate_rel_sd: float = 0.0   # noise of remaining-iteration estimates (0: exact)
    bank_lookup_s: float = 10.0    # Prompt Bank search at submit: a bank-using policy sees jobs this late
    nodes_per_switch: int = 0      # ElasticFlow placement: nodes under one switch (0: all)

    def __post_init__(self) -> None:
        if self.estimate_rel_sd < 0:
            raise BadInputError(f"estimate_rel_sd={self.estimate_rel_sd} must be >= 0")
        if self.bank_lookup_s < 0:
            raise BadInputError(f"bank_lookup_s={self.bank_lookup_s} must be >= 0")
        if self.nodes_per_switch < 0:
            raise BadInputError(f"nodes_per_switch={self.nodes_per_switch} must be >= 0")


@dataclass
class JobOutcome:
    job_id: str
    arrival_s: float
    deadline_s: float
    iterations: float
    finish_s: float | None = None
    declined: bool = False
    reported_infeasible: bool = False
    missed_even_alone: bool = False  # no schedule can meet its deadline (`misses_even_alone`)
    least_gpu_seconds: float = 0.0  # what any schedule spends on it at least (`least_gpu_seconds`)
    gpu_seconds: float = 0.0
    resizes: int = 0

    @property
    def met_deadline(self) -> bool:
        return self.finish_s is not None and self.finish_s <= self.deadline_s

    @property
    def status(self) -> str:
        if self.declined:
            return "declined"
        if self.finish_s is None:
            return "unfinished"
        return "met" if self.met_deadline else "late"


@dataclass
class SimResult:
    policy: str
    outcomes: list[JobOutcome]
    gpu_seconds: float
    timeline: list[tuple[float, int]] = field(default_factory=list)
    rounds: int = 0

    def summary(self) -> dict:
        jobs = len(self.outcomes)
        met = sum(o.met_deadline for o in self.outcomes)
        jcts = [o.finish_s - o.arrival_s for o in self.outcomes if o.finish_s is not None]
        return {
            "policy": self.policy,
            "jobs": jobs,
            "met_deadline": met,
            "slo_violation_rate": (jobs - met) / jobs if jobs else 0.0,
            "deadline_satisfactory_ratio": met / jobs if jobs else 0.0,
            "gpu_hours": self.gpu_seconds / 3600.0,
            "least_gpu_hours": sum(o.least_gpu_seconds for o in self.outcomes) / 3600.0,
            "mean_jct_s": statistics.fmean(jcts) if jcts else None,
            "median_jct_s": statistics.median(jcts) if jcts else None,
            "resizes": sum(o.resizes for o in self.outcomes),
            "declined": sum(o.declined for o in self.outcomes),
            "late": sum(o.status == "late" for o in self.outcomes),
            "unfinished": sum(o.status == "unfinished" for o in self.outcomes),
            "reported_infeasible": sum(o.reported_infeasible for o in self.outcomes),
            "missed_even_alone": sum(o.missed_even_alone for o in self.outcomes),
            "rounds": self.rounds,
        }

    def job_rows(self) -> list[dict]:
        return [{
            "job_id": o.job_id, "arrival_s": o.arrival_s, "deadline_s": o.deadline_s,
            "finish_s": o.finish_s,
            "jct_s": None if o.finish_s is None else o.finish_s - o.arrival_s,
            "status": o.status, "met_deadline": o.met_deadline,
            "reported_infeasible": o.reported_infeasible,
            "missed_even_alone": o.missed_even_alone,
            "gpu_hours": o.gpu_seconds / 3600.0, "least_gpu_hours": o.least_gpu_seconds / 3600.0,
            "resizes": o.resizes,
        } for o in self.outcomes]
