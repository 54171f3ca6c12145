"""Scheduling policies: the single source of GPU decisions for `ptctl sim` and `ptctl rebalance`.

`decide()` below is the one entry both call. The policies live one to a module (fifo, edf,
infless, elasticflow, prompttuner) on the interface of ptctl.planner.interface; elasticflow and
prompttuner share the timeline planner of ptctl.planner.timeline.

API (a pure function of explicit inputs; nothing is read from disk or Slurm here):

    decide(policy, now_s, gpu_budget, jobs, cluster) -> list[Decision]

    policy      one of POLICIES ("prompttuner", "elasticflow", "infless", "edf", "fifo") or a
                Policy instance;
    now_s       the current time (seconds, same clock as the jobs' arrival/deadline);
    gpu_budget  GPUs this scheduler may hand out in total (running jobs included);
    jobs        list[JobView]: every queued or running job (finished ones left out);
    cluster     ClusterModel: total GPUs, slot length, resize-cost profile (ptctl.planner.gpu_need).

It returns exactly one Decision per job, in the order of `jobs`:

    action      "start"      queued job: start it with `gpus`
                "resize"     running job: checkpoint and restart with `gpus`
                             (`gpus == 0`: checkpoint and stop; the job goes back to the queue)
                "keep"       leave it as it is (a queued job stays queued, `gpus == 0`)
                "infeasible" it cannot meet its deadline: run it best-effort with `gpus`
                             (start/resize/keep to that count as above) and report it
                "decline"    refused at admission (ElasticFlow only): never run, counts as a miss
    gpus        the count it should hold after this decision (0 or one of its allowed counts)
    memory      the job's policy memory after this decision (JSON-able dict): store it and
                pass it back in the next JobView.memory
    predicted_finish_s, reason, review_at_s (ask again at this time even if nothing happens)

Invariants (property-tested): the sum of `gpus` never exceeds `gpu_budget`, and every non-zero
`gpus` is one of the job's `allowed_gpus`, within [min_gpus, max_gpus].
"""

from __future__ import annotations

from typing import Callable

from ptctl.errors import BadInputError
from ptctl.planner.edf import EdfPolicy
from ptctl.planner.elasticflow import ElasticFlowPolicy
from ptctl.planner.fifo import FifoPolicy
from ptctl.planner.gpu_need import ClusterModel
from ptctl.planner.infless import InflessPolicy
from ptctl.planner.interface import Decision, JobView, Policy
from ptctl.planner.prompttuner import PromptTunerPolicy

POLICIES: dict[str, Callable[[], Policy]] = {
    "prompttuner": PromptTunerPolicy,
    "elasticflow": ElasticFlowPolicy,
    "infless": InflessPolicy,
    "edf": EdfPolicy,
    "fifo": FifoPolicy,
}


def get_policy(policy: str | Policy) -> Policy:
    if isinstance(policy, Policy):
        return policy
    try:
        return POLICIES[policy]()
    except KeyError:
        raise BadInputError(f"unknown policy {policy!r}; choose from {', '.join(POLICIES)}") from None


def decide(policy: str | Policy, now_s: float, gpu_budget: int, jobs: list[JobView],
           cluster: ClusterModel) -> list[Decision]:
    """One scheduling round: a Decision per job (see the module docstring)."""
    if gpu_budget < 0:
        raise BadInputError(f"gpu_budget={gpu_budget} must be >= 0")
    decisions = get_policy(policy).decide(now_s, gpu_budget, jobs, cluster)
    used = sum(d.gpus for d in decisions)
    if used > gpu_budget:
        raise AssertionError(f"policy allocated {used} GPUs over a budget of {gpu_budget}")
    return decisions
