"""The one way to build what a policy sees of a job, for the simulator and the live rebalancer
alike, so that what `ptctl sim` shows is what the cluster does."""

from __future__ import annotations

from typing import Any, Sequence

from ptctl.errors import BadInputError
from ptctl.planner.interface import JobView


def allowed_gpu_counts(min_gpus: int, max_gpus: int, *, budget: int, gpus_per_node: int,
                       levels: Sequence[int] | None = None) -> tuple[int, ...]:
    """The GPU counts a job may hold: within [min_gpus, min(max_gpus, budget)], whole nodes once
    it spans more than one node, and only the `levels` given (a throughput table's measured
    columns: a simulation stays on counts its table knows). Empty if none fits."""
    high = min(max_gpus, budget)
    if levels is None:
        candidates = range(min_gpus, high + 1)
    else:
        candidates = sorted(g for g in set(levels) if min_gpus <= g <= high)
    return tuple(g for g in candidates if g <= gpus_per_node or g % gpus_per_node == 0)


def job_view(job_id: str, model: str, global_batch: int, arrival_s: float, deadline_s: float, *,
             gpus: int, allowed_gpus: tuple[int, ...], remaining_iterations: float,
             throughput: Any, remaining_sd: float = 0.0, memory: dict | None = None) -> JobView:
    """A job as the policy sees it this round: running iff it holds GPUs, bounded by its allowed
    counts (from `allowed_gpu_counts`); `memory` is what the policy returned for it last round."""
    if not allowed_gpus:
        raise BadInputError(f"job {job_id}: no GPU count it may use")
    return JobView(job_id, model, global_batch, arrival_s, deadline_s,
                   "running" if gpus > 0 else "queued", gpus, min(allowed_gpus), max(allowed_gpus),
                   allowed_gpus, remaining_iterations, throughput, remaining_sd,
                   dict(memory or {}))
