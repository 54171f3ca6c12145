"""`elasticflow`: ElasticFlow's admission control and leftover-GPU rule over the shared
timeline planner (ptctl.planner.timeline)."""

from __future__ import annotations

import math

from ptctl.planner.interface import Decision, JobView, Policy, _decision
from ptctl.planner.timeline import _EfJob, _gpu_time, _min_share, _Steps


def elasticflow_gpu_cap(model: str, global_batch: int) -> int:
    """ElasticFlow's per-model GPU caps on its A100 tables (REFERENCE §2)."""
    caps = {
        ("gpt2", 128): 16, ("gpt2", 256): 32, ("bert", 64): 8,
        ("inception3", 64): 16, ("inception3", 128): 32,
        ("resnet50", 64): 32, ("vgg16", 64): 32,
    }
    if model == "deepspeech2":
        return global_batch
    if model == "bert":
        return caps.get((model, global_batch), 16)
    return caps.get((model, global_batch), min(global_batch, 64))


class ElasticFlowPolicy(Policy):
    """ElasticFlow (ASPLOS'23) as its simulator (`ef-accessctrl`) runs it (REFERENCE §2):

    - every round all admitted jobs are re-planned in deadline order on an empty free-GPU timeline
      (a step function over slot-aligned periods), each with its Minimum Satisfactory Share:
      the smallest level whose allocation, walking back from the deadline period by period, covers
      its remaining iterations; periods before the one where that walk succeeded get the previous
      level; the slot-aligned end frees the GPUs in the timeline;
    - the arrivals of a round are admitted only if every plan (already-admitted jobs included)
      still meets its deadline; otherwise they are all declined (`decline`);
    - leftover GPUs go one level at a time to the job with the largest marginal GPU-time of moving
      to its next level now (jobs holding no GPU first), re-planned with the minimum share after
      the first timeline change; counts are the table's columns up to the per-model caps.

    Memory written per job: `ef_admitted`, `ef_real_end_s` (the unrounded end of the allocation it
    got, leftover GPUs included - ElasticFlow's `real_end_time`: its deadline check, and where its
    progress stops counting), `ef_end_s` (slot-aligned end of the allocation it got) and
    `ef_order` (its position in ElasticFlow's job list after this round - by GPU count, stably
    over the leftover order - used by the simulator to place jobs in the same order and by the
    next round to break deadline ties as ElasticFlow's stable sort does). `predicted_finish_s` is the unrounded end of the allocation it
    got; `review_at_s` its next planned change.
    """

    name = "elasticflow"

    def decide(self, now_s, gpu_budget, jobs, cluster):
        slot = cluster.slot_s
        total = gpu_budget
        ef = {j.job_id: self._ef_job(j, total) for j in jobs}
        admitted = [j for j in jobs if j.state == "running" or j.memory.get("ef_admitted")]
        arrivals = [j for j in jobs if j.state == "queued" and "ef_admitted" not in j.memory]
        declined = {j.job_id for j in jobs if j.state == "queued" and j.memory.get("ef_admitted") is False}

        plan_set = admitted
        if arrivals and total > 0:
            if self._plan_all([ef[j.job_id] for j in admitted + arrivals], now_s, slot, total):
                plan_set = admitted + arrivals
            else:
                declined |= {j.job_id for j in arrivals}
        elif arrivals:
            declined |= {j.job_id for j in arrivals}
        planned = sorted((ef[j.job_id] for j in plan_set), key=_ef_list_key)
        steps = self._plan_all(planned, now_s, slot, total, keep_steps=True) if planned else None
        for e in planned:
            e.gpus = e.plan.gpus_at(now_s) if e.plan else 0
        if planned:
            planned = self._give_leftover(planned, steps, now_s, slot, total)
        # ElasticFlow's job list ends the round sorted by GPU count (stably, over the leftover
        # order) for placement; its next deadline sort breaks ties in that order.
        for i, e in enumerate(sorted(planned, key=lambda e: -e.gpus)):
            e.order = i

        out = []
        for job in jobs:
            e = ef[job.job_id]
            if job.job_id in declined:
                out.append(Decision(job.job_id, "decline", 0, "deadline cannot be guaranteed",
                                    None, {**job.memory, "ef_admitted": False}))
                continue
            plan = e.plan
            review = next((t for t, _ in plan.allocs if t > now_s), None) if plan else None
            update = {"ef_admitted": True, "ef_order": e.order,
                      "ef_real_end_s": plan.real_end if plan else now_s,
                      "ef_end_s": plan.end if plan else now_s}
            finish = plan.real_end if plan and e.gpus else None
            out.append(_decision(job, e.gpus, "minimum satisfactory share" if e.share and e.share.ok
                                 else "admitted but late", finish, review_at_s=review,
                                 memory_update=update))
        return out

    @staticmethod
    def _ef_job(job: JobView, total: int) -> _EfJob:
        cap = min(job.max_gpus, elasticflow_gpu_cap(job.model, job.global_batch), max(total, 1))
        levels = [g for g in job.allowed_gpus if g <= cap]  # empty: it can never run here
        return _EfJob(job, levels, {g: job.rate(g) for g in levels}, levels[-1] if levels else 0)

    def _plan_all(self, ef_jobs: list[_EfJob], now: float, slot: float, total: int,
                  keep_steps: bool = False):
        """Plan jobs in deadline order from an empty timeline; True if every plan meets its
        deadline (or the final timeline, with `keep_steps`)."""
        steps = _Steps.empty(now, total)
        ok = True
        for e in sorted(ef_jobs, key=_ef_list_key):
            plan = _min_share(e, now, slot, total, steps)
            e.plan = e.share = plan
            steps = plan.steps
            ok &= plan.ok
        return steps if keep_steps else ok

    def _marginal(self, e: _EfJob, steps: _Steps, now: float, slot: float, total: int,
                  allocatable: int) -> None:
        """ElasticFlow's `get_marginal`: GPU-time added per extra GPU if the job moves to its next
        level now (run there until the free timeline next changes, then minimum share)."""
        if e.next_gpu - e.gpus > allocatable or e.next_gpu == e.gpus or e.remaining <= 0:
            e.marginal, e.next_plan = -math.inf, None
            return
        tmp = steps.copy()
        if e.plan is not None:
            allocs = e.plan.allocs
            for k, (t0, g0) in enumerate(allocs):
                t1 = allocs[k + 1][0] if k + 1 < len(allocs) else e.plan.end
                tmp.add(t0, min(t1, e.plan.end), g0)
        tmp.merge()
        plan = _min_share(e, now, slot, total, tmp, first=e.next_gpu)
        e.next_plan = plan
        if e.gpus == 0:
            e.marginal = math.inf
        else:
            old = _gpu_time(e.plan.allocs, e.plan.end) if e.plan else 0.0
            e.marginal = (_gpu_time(plan.allocs, plan.end) - old) / (e.next_gpu - e.gpus)

    def _give_leftover(self, order: list[_EfJob], steps: _Steps, now: float, slot: float,
                       total: int) -> list[_EfJob]:
        allocatable = total - sum(e.gpus for e in order)
        for e in order:
            e.next_gpu = e.next_level(e.gpus)
        if allocatable <= 0:
            return order
        for e in order:
            self._marginal(e, steps, now, slot, total, allocatable)
        order = sorted(order, key=lambda e: -e.marginal)
        moved = True
        while allocatable > 0 and moved:
            moved = False
            for e in order:
                if e.next_gpu - e.gpus > allocatable or e.next_gpu == e.gpus or e.next_plan is None:
                    continue
                steps = e.next_plan.steps.merge()
                allocatable -= e.next_gpu - e.gpus
                e.plan, e.gpus = e.next_plan, e.next_gpu
                e.next_gpu = e.next_level(e.gpus)
                moved = True
                break
            for e in order:
                if e.next_gpu > e.gpus:
                    self._marginal(e, steps, now, slot, total, allocatable)
            order = sorted(order, key=lambda e: -e.marginal)
        return order


def _ef_list_key(e: _EfJob) -> tuple:
    """ElasticFlow's deadline order: a stable sort of its job list by deadline, so jobs with equal
    deadlines keep their order from the last round (`ef_order`), arrivals after them."""
    return (e.view.deadline_s, e.view.memory.get("ef_order", math.inf), e.view.arrival_s,
            e.view.job_id)
