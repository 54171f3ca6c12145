"""Which GPU counts a job may run at, and which limit rules out the others.

A spec's `gpus.min/max` is only one of four limits: the batch (one rank per micro-batch at most),
the profile's `gpu_budget`, and whole nodes once a job spans more than one. Users met them only
as a bare "expected one of 1, 2"; these messages name the limit instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from ptctl.config import Profile
from ptctl.errors import BadInputError
from ptctl.jobs.spec import GpuBounds
from ptctl.planner.views import allowed_gpu_counts


@dataclass(frozen=True)
class GpuLimits:
    spec_min: int
    spec_max: int
    batch_cap: int  # global_batch_size // micro_batch_size: at most one rank per micro-batch
    global_batch: int
    micro_batch: int
    profile: Profile

    @classmethod
    def of(cls, spec: dict[str, Any], profile: Profile) -> "GpuLimits":
        train = spec["training"]
        return cls(spec["gpus"]["min"], spec["gpus"]["max"],
                   max(1, train["global_batch_size"] // train["micro_batch_size"]),
                   train["global_batch_size"], train["micro_batch_size"], profile)

    @property
    def allowed(self) -> tuple[int, ...]:
        return allowed_gpu_counts(self.spec_min, min(self.spec_max, self.batch_cap),
                                  budget=self.profile.gpu_budget,
                                  gpus_per_node=self.profile.gpus_per_node)

    def why_not(self, gpus: int) -> str | None:
        """The limit that rules `gpus` out; None when it is allowed."""
        prof = self.profile
        if gpus in self.allowed:
            return None
        if gpus < self.spec_min:
            return f"below the spec's gpus.min ({self.spec_min})"
        if gpus > self.spec_max:
            return f"above the spec's gpus.max ({self.spec_max})"
        if gpus > self.batch_cap:
            return (f"at most one rank per micro-batch: training.global_batch_size "
                    f"{self.global_batch} / micro_batch_size {self.micro_batch} = "
                    f"{self.batch_cap}")
        if gpus > prof.gpu_budget:
            return f"over profile {prof.name}'s gpu_budget ({prof.gpu_budget})"
        return (f"more than one node but not whole nodes (profile {prof.name}: "
                f"{prof.gpus_per_node} GPUs per node)")

    def summary(self) -> str:
        return f"allowed GPU counts: {counts_text(self.allowed) or 'none'}"


def counts_text(counts: tuple[int, ...]) -> str:
    """`1-4, 8, 16`: runs of consecutive counts folded."""
    parts: list[str] = []
    for g in counts:
        if parts and parts[-1][1] == g - 1:
            parts[-1] = (parts[-1][0], g)
        else:
            parts.append((g, g))
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in parts)


def check_spec(origin: str, spec: dict[str, Any], profile: Profile,
               warn: Callable[[str], None] | None) -> None:
    """Submit's check of gpus.min/max: an error (exit 2) when no count fits, a warning naming
    the limit when gpus.max (or gpus.min) cannot be used as written."""
    limits = GpuLimits.of(spec, profile)
    allowed = limits.allowed
    if not allowed:
        reason = limits.why_not(limits.spec_min)
        raise BadInputError(f"{origin}: gpus.min: {limits.spec_min} GPUs cannot be given: "
                            f"{reason}")
    # The default gpus.max is a ceiling, not a request: clipping it says nothing new.
    if warn and max(allowed) < limits.spec_max != GpuBounds.max:
        warn(f"{origin}: gpus.max {limits.spec_max} is clipped to {max(allowed)}: "
             f"{limits.why_not(max(allowed) + 1)}; {limits.summary()}")
    if warn and min(allowed) > limits.spec_min:
        warn(f"{origin}: gpus.min {limits.spec_min} is raised to {min(allowed)}: "
             f"{limits.why_not(limits.spec_min)}; {limits.summary()}")
