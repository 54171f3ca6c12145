"""Scheduling policies: the single source of GPU decisions for `ptctl sim` and `ptctl rebalance`.

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

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from ptctl.errors import BadInputError
from ptctl.planner.gpu_need import ClusterModel, gpu_need

JOB_STATES = ("queued", "running")
ACTIONS = ("start", "resize", "keep", "infeasible", "decline")


class RateFunction:
    """Anything with `rate(gpus) -> iterations/s` (a ThroughputCurve, or a plain mapping)."""

    def rate(self, gpus: int) -> float:  # pragma: no cover - protocol
        raise NotImplementedError


@dataclass
class JobView:
    """What a policy sees of one job. The simulator and the live rebalancer both build these."""

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
    warm: bool = False
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
    """A named decision rule. `keeps_warm`: whether idle instances are kept loaded (warm pool)."""

    name = "policy"
    keeps_warm = False
    uses_bank = False

    def decide(self, now_s: float, gpu_budget: int, jobs: list[JobView],
               cluster: ClusterModel) -> list[Decision]:
        raise NotImplementedError


# --------------------------------------------------------------------------- fifo / edf

class FifoPolicy(Policy):
    """Arrival order, each job at its maximum; strict queue (head-of-line blocking), no resizing."""

    name = "fifo"

    def decide(self, now_s, gpu_budget, jobs, cluster):
        free = gpu_budget - sum(j.gpus for j in jobs)
        blocked = False
        out = {}
        for job in sorted(jobs, key=lambda j: (j.arrival_s, j.job_id)):
            if job.state == "running":
                out[job.job_id] = _decision(job, job.gpus, "running")
                continue
            want = _largest_fitting(job, job.max_gpus)
            if not blocked and want <= free:
                free -= want
                out[job.job_id] = _decision(job, want, "head of queue",
                                            now_s + job.remaining_iterations / job.rate(want))
            else:
                blocked = True
                out[job.job_id] = _decision(job, 0, "waiting in arrival order")
        return [out[j.job_id] for j in jobs]


class EdfPolicy(Policy):
    """Earliest deadline first, each job at its maximum or what is left; re-decided every round
    (a later job can be paused), as ElasticFlow's `edf` baseline."""

    name = "edf"

    def decide(self, now_s, gpu_budget, jobs, cluster):
        free = gpu_budget
        out = {}
        for job in sorted(jobs, key=lambda j: (j.deadline_s, j.arrival_s, j.job_id)):
            g = _largest_fitting(job, free, job.max_gpus)
            free -= g
            finish = now_s + job.remaining_iterations / job.rate(g) if g else None
            out[job.job_id] = _decision(job, g, "deadline order" if g else "no GPUs left", finish)
        return [out[j.job_id] for j in jobs]


# --------------------------------------------------------------------------- infless

def histogram_keepalive_s(idle_gaps_s: list[float], percentile: float = 99.0,
                          cap_s: float = 4 * 3600.0) -> float:
    """INFless/hybrid-histogram keep-alive: keep an idle warm instance for the `percentile`-th
    idle gap between uses of its model (capped), so most next uses find it warm."""
    if not idle_gaps_s:
        return 0.0
    return float(min(cap_s, np.percentile(np.asarray(idle_gaps_s, dtype=float), percentile)))


class InflessPolicy(Policy):
    """A fixed size chosen at arrival: the smallest allowed count whose profiled duration fits the
    deadline (the most resource-efficient one), or the fastest when none fits. Never resized;
    queued jobs start in arrival order when their size fits (no blocking)."""

    name = "infless"
    keeps_warm = True

    def decide(self, now_s, gpu_budget, jobs, cluster):
        free = gpu_budget - sum(j.gpus for j in jobs)
        out = {}
        for job in sorted(jobs, key=lambda j: (j.arrival_s, j.job_id)):
            if job.state == "running":
                out[job.job_id] = _decision(job, job.gpus, "fixed size")
                continue
            size = job.memory.get("infless_gpus")
            update = None
            if size is None:
                size = gpu_need(job.remaining_iterations, now_s, job.deadline_s, job.rate,
                                job.allowed_gpus, 0, cluster, job.warm)
                if size is None:
                    size = max(job.allowed_gpus, key=job.rate)
                update = {"infless_gpus": int(size)}
            if size <= free:
                free -= size
                finish = now_s + cluster.transition_s(0, size, job.warm) + job.remaining_iterations / job.rate(size)
                out[job.job_id] = _decision(job, size, "fixed size fits", finish,
                                            memory_update=update)
            else:
                out[job.job_id] = _decision(job, 0, "waiting for its fixed size",
                                            memory_update=update)
        return [out[j.job_id] for j in jobs]


# --------------------------------------------------------------------------- elasticflow

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


@dataclass
class _EfJob:
    """A job as ElasticFlow's planner sees it: its levels and a per-slot plan from `now`."""

    view: JobView
    levels: np.ndarray
    floor_level: np.ndarray
    rate_of: np.ndarray
    start: int = 0
    alloc: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    real_end: float = math.inf
    ok: bool = False
    gpus: int = 0
    marginal: float = -math.inf
    next_plan: tuple | None = None

    def gputime(self, plan_alloc: np.ndarray) -> float:
        return float(plan_alloc.sum())


class _Timeline:
    """Free GPUs per slot from `now` (slot k covers [now + k*slot, now + (k+1)*slot));
    beyond the array every GPU is free."""

    def __init__(self, now: float, slot: float, total: int, horizon: int) -> None:
        self.now, self.slot, self.total = now, slot, total
        self.free = np.full(max(horizon, 1), total, dtype=np.int64)

    def ensure(self, length: int) -> None:
        if length > self.free.size:
            extra = max(length - self.free.size, self.free.size)
            self.free = np.concatenate([self.free, np.full(extra, self.total, dtype=np.int64)])

    def apply(self, start: int, alloc: np.ndarray, sign: int) -> None:
        self.ensure(start + alloc.size)
        self.free[start:start + alloc.size] -= sign * alloc


class ElasticFlowPolicy(Policy):
    """ElasticFlow (ASPLOS'23) as its simulator runs it (REFERENCE §2):

    - every round, admitted jobs are re-planned from an empty timeline in deadline order, each
      with its Minimum Satisfactory Share (`_min_share`);
    - arrivals are admitted only if all plans still succeed with them (a batch of arrivals in
      one round is admitted or declined together, as in its simulator);
    - leftover GPUs go one level at a time to the job with the largest marginal GPU-time
      (`_marginal`), jobs without GPUs first;
    - counts are the throughput table's columns up to its per-model caps.
    """

    name = "elasticflow"

    def decide(self, now_s, gpu_budget, jobs, cluster):
        slot = cluster.slot_s
        horizon = int(math.ceil((max((j.deadline_s for j in jobs), default=now_s) - now_s) / slot)) + 2
        ef_jobs = {j.job_id: self._ef_job(j, gpu_budget) for j in jobs}
        admitted = [j for j in jobs if j.state == "running" or j.memory.get("ef_admitted")]
        arrivals = [j for j in jobs if j.state == "queued" and "ef_admitted" not in j.memory]
        pending_out = [j for j in jobs if j.state == "queued" and j.memory.get("ef_admitted") is False]

        declined: set[str] = {j.job_id for j in pending_out}
        plan_set = admitted
        if arrivals:
            timeline = _Timeline(now_s, slot, gpu_budget, horizon)
            if self._plan_all([ef_jobs[j.job_id] for j in admitted + arrivals], timeline):
                plan_set = admitted + arrivals
            else:
                declined |= {j.job_id for j in arrivals}
        timeline = _Timeline(now_s, slot, gpu_budget, horizon)
        planned = [ef_jobs[j.job_id] for j in plan_set]
        self._plan_all(planned, timeline)
        for ej in planned:
            ej.gpus = int(ej.alloc[0]) if ej.start == 0 and ej.alloc.size else 0
        self._give_leftover(planned, timeline, gpu_budget)

        out = []
        for job in jobs:
            ej = ef_jobs[job.job_id]
            if job.job_id in declined:
                out.append(Decision(job.job_id, "decline", 0, "deadline cannot be guaranteed",
                                    None, {**job.memory, "ef_admitted": False}))
                continue
            review = None
            if ej.alloc.size:
                changes = np.flatnonzero(ej.alloc != ej.gpus)
                if changes.size:
                    review = now_s + (ej.start + int(changes[0])) * slot
            out.append(_decision(job, ej.gpus, "minimum satisfactory share" if ej.ok
                                 else "admitted but late", ej.real_end, review_at_s=review,
                                 memory_update={"ef_admitted": True}))
        return out

    @staticmethod
    def _ef_job(job: JobView, total: int) -> _EfJob:
        cap = min(job.max_gpus, elasticflow_gpu_cap(job.model, job.global_batch), total)
        levels = np.array([g for g in job.allowed_gpus if g <= cap] or [job.allowed_gpus[0]],
                          dtype=np.int64)
        floor_level = np.zeros(total + 1, dtype=np.int64)
        for g in levels:
            if g <= total:
                floor_level[g:] = g
        rate_of = np.zeros(int(levels[-1]) + 1)
        for g in levels:
            rate_of[g] = job.rate(int(g))
        return _EfJob(job, levels, floor_level, rate_of)

    def _plan_all(self, ef_jobs: list[_EfJob], timeline: _Timeline) -> bool:
        ok = True
        for ej in sorted(ef_jobs, key=lambda e: (e.view.deadline_s, e.view.arrival_s, e.view.job_id)):
            start, alloc, real_end, fits = self._min_share(ej, timeline.free, timeline, 0,
                                                           ej.view.remaining_iterations)
            ej.start, ej.alloc, ej.real_end, ej.ok = start, alloc, real_end, fits
            timeline.apply(start, alloc, +1)
            ok &= fits
        return ok

    @staticmethod
    def _min_share(ej: _EfJob, free: np.ndarray, tl: _Timeline, start: int,
                   remaining: float) -> tuple[int, np.ndarray, float, bool]:
        """Smallest level whose plan, walking back from the deadline over the free GPUs, covers
        `remaining`; slots before that latest start get the previous level. Falls back to the
        largest level (late) when no level fits."""
        now, slot = tl.now, tl.slot
        deadline = ej.view.deadline_s
        n_ddl = int(math.ceil((deadline - now) / slot)) if deadline > now else 0
        if remaining <= 0:
            return start, np.zeros(0, dtype=np.int64), now + start * slot, True
        if n_ddl > start:
            tl.ensure(n_ddl)
            free = tl.free
            f = np.clip(free[start:n_ddl], 0, None)
            dur = np.full(n_ddl - start, slot)
            dur[-1] = deadline - (now + (n_ddl - 1) * slot)
            prev = np.zeros(n_ddl - start, dtype=np.int64)
            for q in ej.levels:
                alloc_q = np.minimum(q, ej.floor_level[f])
                iters = ej.rate_of[alloc_q] * dur
                from_end = np.cumsum(iters[::-1])[::-1]
                if from_end[0] < remaining:
                    prev = alloc_q
                    continue
                point = int(np.flatnonzero(from_end >= remaining)[-1])
                fwd = prev.copy()
                fwd[point:] = alloc_q[point:]
                cum = np.cumsum(ej.rate_of[fwd] * dur)
                i = int(np.argmax(cum >= remaining))
                left = remaining - (cum[i - 1] if i > 0 else 0.0)
                real_left = math.ceil(left / ej.rate_of[fwd[i]])
                extra = max(0, int(math.ceil(real_left / slot)) - 1)
                alloc = np.concatenate([fwd[:i + 1], np.full(extra, fwd[i], dtype=np.int64)])
                real_end = now + (start + i) * slot + real_left
                return start, alloc, real_end, real_end <= deadline
        # No level fits: run at the largest level from now, past the deadline.
        q = int(ej.levels[-1])
        tl.ensure(max(n_ddl, start) + 1)
        f = np.clip(tl.free[start:], 0, None)
        alloc = np.minimum(q, ej.floor_level[f])
        cum = np.cumsum(ej.rate_of[alloc] * slot)
        if cum.size and cum[-1] >= remaining:
            i = int(np.argmax(cum >= remaining))
            left = remaining - (cum[i - 1] if i > 0 else 0.0)
            real_left = math.ceil(left / ej.rate_of[alloc[i]])
            alloc = alloc[:i + 1]
        else:
            left = remaining - (cum[-1] if cum.size else 0.0)
            real_left = math.ceil(left / ej.rate_of[q])
            tail = int(math.ceil(real_left / slot))
            i = alloc.size + tail - 1
            real_left -= (tail - 1) * slot
            alloc = np.concatenate([alloc, np.full(tail, q, dtype=np.int64)])
        return start, alloc, now + (start + i) * slot + real_left, False

    def _marginal(self, ej: _EfJob, tl: _Timeline, allocatable: int) -> None:
        """GPU-time added per extra GPU if the job moves to its next level now (ElasticFlow's
        `get_marginal`): run at the next level until the free-GPU timeline next changes, then
        re-plan with the minimum share."""
        nxt = ej.levels[ej.levels > ej.gpus]
        if nxt.size == 0 or nxt[0] - ej.gpus > allocatable:
            ej.marginal, ej.next_plan = -math.inf, None
            return
        g = int(nxt[0])
        now, slot = tl.now, tl.slot
        remaining = ej.view.remaining_iterations
        tl.apply(ej.start, ej.alloc, -1)
        free = tl.free
        changes = np.flatnonzero(free[1:] != free[0])
        if changes.size:
            first_change = int(changes[0]) + 1
        elif free[0] != tl.total:
            first_change = free.size
        else:
            first_change = max(1, int(math.ceil((ej.view.deadline_s - now) / slot)))
        rate = ej.rate_of[g]
        real_end = math.ceil(now + remaining / rate)
        slots = int(math.ceil((real_end - now) / slot))
        if slots <= first_change or remaining <= first_change * slot * rate:
            alloc = np.full(max(slots, 1), g, dtype=np.int64)
            plan = (0, alloc, float(real_end), real_end <= ej.view.deadline_s)
        else:
            head = np.full(first_change, g, dtype=np.int64)
            tl.apply(0, head, +1)
            _, tail, end, fits = self._min_share(ej, tl.free, tl, first_change,
                                                 remaining - first_change * slot * rate)
            tl.apply(0, head, -1)
            plan = (0, np.concatenate([head, tail]), end, fits)
        tl.apply(ej.start, ej.alloc, +1)
        ej.next_plan = (g, plan)
        if ej.gpus == 0:
            ej.marginal = math.inf
        else:
            ej.marginal = (plan[1].sum() - ej.alloc.sum()) * slot / (g - ej.gpus)

    def _give_leftover(self, planned: list[_EfJob], tl: _Timeline, total: int) -> None:
        allocatable = total - sum(ej.gpus for ej in planned)
        order = sorted(planned, key=lambda e: (e.view.deadline_s, e.view.arrival_s, e.view.job_id))
        for ej in order:
            self._marginal(ej, tl, allocatable)
        while allocatable > 0:
            best = None
            for ej in order:
                if ej.next_plan is None or ej.next_plan[0] - ej.gpus > allocatable:
                    continue
                if best is None or ej.marginal > best.marginal:
                    best = ej
            if best is None:
                return
            g, (start, alloc, real_end, fits) = best.next_plan
            tl.apply(best.start, best.alloc, -1)
            allocatable -= g - best.gpus
            best.gpus, best.start, best.alloc, best.real_end, best.ok = g, start, alloc, real_end, fits
            tl.apply(start, alloc, +1)
            for ej in order:
                if ej.next_plan is not None or ej is best:
                    self._marginal(ej, tl, allocatable)


# --------------------------------------------------------------------------- prompttuner

@dataclass(frozen=True)
class PromptTunerSettings:
    """Knobs of the `prompttuner` policy; defaults are what the benchmarks use."""

    safety_z: float = 1.0            # plan for remaining + z * sd iterations
    hold_s: float = 600.0            # no downsizing within this long after a resize
    reclaim_min_gain: float = 2.0    # reclaim only if GPU-seconds saved > gain * resize GPU-seconds
    risk_slack_fraction: float = 0.1  # at risk: slack < this fraction of the time to finish
    spare_efficiency: float = 0.0    # also give spare GPUs to jobs scaling at least this well


class PromptTunerPolicy(Policy):
    """Ours: meet deadlines at the lowest GPU-hours.

    1. Each job's need is the smallest allowed count that finishes `remaining + z*sd`
       iterations by its deadline, counting the resize cost (`gpu_need`).
    2. Jobs are served least-slack first with that minimal allocation; a job whose need does not
       fit waits (queued) or keeps what it has if that still fits.
    3. Running jobs ahead of schedule give GPUs back only when the saving outweighs the resize
       cost and they have not been resized for `hold_s` (hysteresis: no thrashing).
    4. Spare GPUs go only to jobs at risk (slack below a fraction of their time to finish).
    5. A job that cannot make its deadline is run best-effort on what is left, at its fastest
       count, to minimise lateness, and reported as "infeasible" - never dropped.
    Prompt Bank starts and the warm pool make starts cheaper (the simulator models both).
    """

    name = "prompttuner"
    keeps_warm = True
    uses_bank = True

    def __init__(self, settings: PromptTunerSettings | None = None) -> None:
        self.settings = settings or PromptTunerSettings()

    def decide(self, now_s, gpu_budget, jobs, cluster):
        s = self.settings
        plans = []
        for job in jobs:
            remaining = job.remaining_iterations + s.safety_z * job.remaining_sd
            need = gpu_need(remaining, now_s, job.deadline_s, job.rate, job.allowed_gpus,
                            job.gpus, cluster, job.warm)
            if need is not None and job.gpus > 0 and need < job.gpus:
                need = self._reclaim(job, need, remaining, now_s, cluster)
            if need is None:
                fastest = min(job.allowed_gpus,
                              key=lambda g: cluster.transition_s(job.gpus, g, job.warm) + remaining / job.rate(g))
                plans.append((job, fastest, math.inf, remaining, False))
            else:
                finish = (now_s + cluster.transition_s(job.gpus, need, job.warm)
                          + remaining / job.rate(need))
                plans.append((job, need, job.deadline_s - finish, remaining, True))

        free = gpu_budget
        target: dict[str, int] = {}
        feasible = sorted((p for p in plans if p[4]), key=lambda p: (p[2], p[0].deadline_s, p[0].job_id))
        for job, need, _, _, _ in feasible:
            if need <= free:
                target[job.job_id] = need
            else:
                target[job.job_id] = _largest_fitting(job, free) if job.gpus else 0
            free -= target[job.job_id]
        # Spare GPUs: jobs at risk first, one level at a time, least slack first.
        for job, need, slack, remaining, _ in feasible:
            g = target[job.job_id]
            if g == 0:
                continue
            time_to_finish = remaining / job.rate(g)
            if slack >= s.risk_slack_fraction * time_to_finish:
                continue
            up = [x for x in job.allowed_gpus if x > g and x - g <= free]
            if up:
                free -= up[0] - g
                target[job.job_id] = up[0]
        best_effort = sorted((p for p in plans if not p[4]), key=lambda p: (p[0].deadline_s, p[0].job_id))
        for job, fastest, _, _, _ in best_effort:
            g = _largest_fitting(job, free, fastest)
            target[job.job_id] = g
            free -= g

        out = []
        for job, _, slack, remaining, feasible_job in plans:
            g = target[job.job_id]
            finish = None
            if g:
                finish = now_s + cluster.transition_s(job.gpus, g, job.warm) + remaining / job.rate(g)
            update = {"last_resize_s": now_s} if g != job.gpus else None
            reason = ("least-slack minimal share" if feasible_job else "cannot meet deadline: best effort")
            out.append(_decision(job, g, reason, finish, infeasible=not feasible_job,
                                 memory_update=update))
        return out

    def _reclaim(self, job: JobView, need: int, remaining: float, now_s: float,
                 cluster: ClusterModel) -> int:
        """Downsize only when it pays for its resize and the job has held its size long enough."""
        if now_s - job.memory.get("last_resize_s", -math.inf) < self.settings.hold_s:
            return job.gpus
        cost = cluster.transition_s(job.gpus, need, job.warm) * need
        saved = job.gpus * remaining / job.rate(job.gpus) - need * remaining / job.rate(need)
        return need if saved > self.settings.reclaim_min_gain * cost else job.gpus


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
