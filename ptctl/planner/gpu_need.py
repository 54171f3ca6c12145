"""GPU need: the smallest allowed GPU count that finishes a job's remaining iterations by its
deadline, counting what a resize costs on the cluster it runs on.

A resize on Slurm is not free: the job checkpoints, its new allocation waits in the queue,
starts, and loads the model again (ptctl keeps no warm pool: every start loads the model).
`ResizeCost` holds these per cluster profile. ElasticFlow's simulator charges a different,
per-round model (`elasticflow_overhead_s`); `ClusterModel.overhead_model` picks which one a
simulation (and the planner's arithmetic) uses, so every policy in one run pays the same physics.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Iterable

from ptctl.errors import BadInputError

OVERHEAD_MODELS = ("resize", "elasticflow")


@dataclass(frozen=True)
class ResizeCost:
    """Seconds lost when a job starts or changes its GPU count on one cluster profile."""

    checkpoint_s: float = 20.0
    queue_wait_s: float = 15.0
    start_s: float = 10.0
    model_load_s: float = 30.0

    def __post_init__(self) -> None:
        for name in ("checkpoint_s", "queue_wait_s", "start_s", "model_load_s"):
            value = getattr(self, name)
            if not (value >= 0 and math.isfinite(value)):
                raise BadInputError(f"ResizeCost.{name}={value} must be a finite number >= 0")

    def start(self) -> float:
        """A queued job's first start."""
        return self.queue_wait_s + self.start_s + self.model_load_s

    def resize(self) -> float:
        """A running job stops at a checkpoint and restarts with another GPU count."""
        return self.checkpoint_s + self.start()


def elasticflow_overhead_s(gpus: int, changed: bool, restart: bool = False,
                           cluster_gpus: int = 0) -> float:
    """ElasticFlow's per-round overhead for a running job (REFERENCE §2).

    2 s every round (7 s on clusters of >= 256 GPUs); when the job was (re)placed this round,
    + 2*(log2 g + 1) s, and + 27 s (+20 s more on >= 256 GPUs) on its periodic trainer restart.
    """
    big = cluster_gpus >= 256
    overhead = 7.0 if big else 2.0
    if not changed:
        return overhead
    if restart:
        overhead += 47.0 if big else 27.0
    return overhead + 2.0 * (math.log2(gpus) + 1.0)


@dataclass(frozen=True)
class ClusterModel:
    """What a policy needs to know about the cluster besides its GPU budget."""

    total_gpus: int
    gpus_per_node: int = 8
    slot_s: float = 60.0
    resize_cost: ResizeCost = field(default_factory=ResizeCost)
    overhead_model: str = "resize"

    def __post_init__(self) -> None:
        if self.total_gpus < 1:
            raise BadInputError(f"ClusterModel.total_gpus={self.total_gpus} must be >= 1")
        if self.gpus_per_node < 1:
            raise BadInputError(f"ClusterModel.gpus_per_node={self.gpus_per_node} must be >= 1")
        if not self.slot_s > 0:
            raise BadInputError(f"ClusterModel.slot_s={self.slot_s} must be > 0")
        if self.overhead_model not in OVERHEAD_MODELS:
            raise BadInputError(f"ClusterModel.overhead_model={self.overhead_model!r} must be one "
                                f"of {', '.join(OVERHEAD_MODELS)}")

    def transition_s(self, old_gpus: int, new_gpus: int) -> float:
        """Seconds of no progress when a job goes from `old_gpus` to `new_gpus` (0 = not running)."""
        if new_gpus <= 0:
            return 0.0
        if self.overhead_model == "elasticflow":
            return elasticflow_overhead_s(new_gpus, old_gpus != new_gpus,
                                          cluster_gpus=self.total_gpus)
        if old_gpus == new_gpus:
            return 0.0
        return self.resize_cost.start() if old_gpus <= 0 else self.resize_cost.resize()


def gpu_need(remaining_iterations: float, now_s: float, deadline_s: float,
             rate: Callable[[int], float], allowed_gpus: Iterable[int], current_gpus: int,
             cluster: ClusterModel) -> int | None:
    """Smallest allowed count that finishes by the deadline, resize cost included; None if none."""
    if remaining_iterations <= 0:
        return min(allowed_gpus, default=None) if current_gpus <= 0 else current_gpus
    for g in sorted(allowed_gpus):
        finish = now_s + cluster.transition_s(current_gpus, g) + remaining_iterations / rate(g)
        if finish <= deadline_s:
            return g
    return None
