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

import heapq
import math
from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field
from itertools import compress, islice
from operator import ne
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


def ef_align(now: float, t: float, slot: float) -> float:
    """`t` rounded up to the slot grid that starts at `now` (ElasticFlow's slot alignment)."""
    n = (t - now) // slot
    if (t - now) % slot > 0:
        n += 1
    return now + n * slot


class _Steps:
    """Free GPUs over time as a step function: `fs[i]` GPUs are free on [ts[i], ts[i+1]), the
    last value for ever after. `ts[0]` is `now`. Kept merged (no two equal neighbours) between
    plans, as ElasticFlow's `future_free_gpus`; a plan walks its *periods* (runs of equal free
    counts), not individual slots."""

    __slots__ = ("ts", "fs")

    def __init__(self, ts: list[float], fs: list[int]) -> None:
        self.ts, self.fs = ts, fs

    @classmethod
    def empty(cls, now: float, total: int) -> "_Steps":
        return cls([now], [total])

    def copy(self) -> "_Steps":
        return _Steps(list(self.ts), list(self.fs))

    def at(self, t: float) -> int:
        return self.fs[max(0, bisect_right(self.ts, t) - 1)]

    def key(self, t: float) -> int:
        """Index of breakpoint `t`, inserting it (same value as before it) if missing."""
        i = bisect_left(self.ts, t)
        if i == len(self.ts) or self.ts[i] != t:
            self.ts.insert(i, t)
            self.fs.insert(i, self.fs[i - 1] if i else self.fs[0])
        return i

    def add(self, t0: float, t1: float, delta: int) -> None:
        """Add `delta` free GPUs on [t0, t1)."""
        if t1 <= t0:
            return
        i = self.key(t0)
        j = self.key(t1)
        for k in range(i, j):
            self.fs[k] += delta

    def merge(self) -> "_Steps":
        ts, fs = self.ts, self.fs
        if len(fs) > 1:
            changed = list(map(ne, islice(fs, 1, None), fs))  # fs[i] != fs[i-1], i >= 1
            if not all(changed):
                self.ts = [ts[0], *compress(islice(ts, 1, None), changed)]
                self.fs = [fs[0], *compress(islice(fs, 1, None), changed)]
        return self


def _merged(allocs: dict[float, int]) -> list[tuple[float, int]]:
    """Allocation change points, sorted, consecutive equal counts dropped."""
    items = sorted(allocs.items())
    return items[:1] + [b for a, b in zip(items, islice(items, 1, None)) if b[1] != a[1]]


def _gpu_time(allocs: list[tuple[float, int]], end: float) -> float:
    """GPU-seconds of a plan as ElasticFlow counts them: each allocation runs until the next change
    point, the last one until `end` (so a plan that ends inside a period is charged to the period's
    end when another change point follows)."""
    total = 0.0
    for (t0, g0), (t1, _) in zip(allocs, allocs[1:]):
        total += g0 * (t1 - t0)
    if allocs:
        total += allocs[-1][1] * (end - allocs[-1][0])
    return total


@dataclass
class _EfPlan:
    allocs: list[tuple[float, int]]
    end: float          # slot-aligned end (when the job's GPUs come back in the plan)
    real_end: float     # unrounded end (what the deadline is checked against)
    ok: bool
    steps: _Steps       # the free-GPU timeline with this plan taken out

    def gpus_at(self, t: float) -> int:
        g = 0
        for t0, g0 in self.allocs:
            if t0 > t:
                break
            g = g0
        return g


@dataclass
class _EfJob:
    """A job as ElasticFlow's planner sees it."""

    view: JobView
    levels: list[int]
    rate: dict[int, float]
    max_gpu: int
    order: int = 0
    plan: _EfPlan | None = None         # current allocation (min share, then leftover)
    share: _EfPlan | None = None        # minimum satisfactory share (deadline check)
    gpus: int = 0
    next_gpu: int = 0
    next_plan: _EfPlan | None = None
    marginal: float = -math.inf
    work: float | None = None           # iterations to plan for, if not the view's remaining ones
    below: list[int] = field(default_factory=list, repr=False)  # below[f]: largest level <= f
    best_rate: dict[int, float] = field(default_factory=dict, repr=False)  # max rate of levels <= q

    def __post_init__(self) -> None:
        self.below, self.best_rate = _level_tables(tuple(self.levels), self.rate)

    @property
    def remaining(self) -> float:
        return self.view.remaining_iterations if self.work is None else self.work

    def next_level(self, g: int) -> int:
        for q in self.levels:
            if q > g:
                return q
        return g

    def floor(self, free: int) -> int:
        """Largest level <= `free` (0 if none)."""
        best = 0
        for q in self.levels:
            if q > free:
                break
            best = q
        return best


_LEVEL_TABLES: dict[tuple, tuple[list[int], dict[int, float]]] = {}


def _level_tables(levels: tuple[int, ...], rate: dict[int, float]) -> tuple[list[int], dict[int, float]]:
    """`below[f]` = largest level <= f for 0 <= f <= the top level, and the best rate of any level
    <= q per level q (an upper bound used to skip levels that cannot cover the work). Shared by
    jobs with the same levels and rates."""
    key = (levels, tuple(rate[q] for q in levels))
    tables = _LEVEL_TABLES.get(key)
    if tables is None:
        below, best, j = [], 0, 0
        for f in range((levels[-1] if levels else 0) + 1):
            while j < len(levels) and levels[j] <= f:
                best = levels[j]
                j += 1
            below.append(best)
        best_rate, top = {}, 0.0
        for q in levels:
            top = max(top, rate[q])
            best_rate[q] = top
        if len(_LEVEL_TABLES) > 4096:
            _LEVEL_TABLES.clear()
        tables = _LEVEL_TABLES[key] = (below, best_rate)
    return tables


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


def _min_share(e: _EfJob, now: float, slot: float, total: int, orig: _Steps,
               first: int | None = None) -> _EfPlan:
    """ElasticFlow's `ef_sim_allocation` on the free timeline `orig` (not modified).

    `first`: run at this level from `now` until the timeline's first change, then the minimum
    share (the leftover-GPU trial). Returns the plan and the timeline with it taken out.

    Speed (the same plans as a plain walk): the largest level <= a free count is a table lookup
    (`e.below`), and a level whose best rate over the whole span to the deadline cannot cover the
    work is skipped without walking its periods (it would fail the walk anyway)."""
    remaining = e.remaining
    ddl = e.view.deadline_s
    rate = e.rate
    new = orig.copy()
    if remaining <= 0:
        return _EfPlan([(now, 0)], now, now, now <= ddl, new)
    if not e.levels:  # no allowed count fits the cluster: never runs, never meets its deadline
        return _EfPlan([(now, 0)], now, max(now, ddl) + 1.0, False, new)
    below = e.below

    def fit(x: int, f: int) -> int:
        """min(x, largest level <= f) for x a level or 0."""
        return x if f >= x else (below[f] if f > 0 else 0)

    a_ddl = ef_align(now, ddl, slot)
    if a_ddl >= now:
        new.key(a_ddl)
    ts, fs = new.ts, new.fs
    allocs: dict[float, int] = {now: 0}
    event = now

    def finish(t0: float, g: int, left: float) -> tuple[float, float]:
        real_left = math.ceil(left / rate[g])
        return t0 + ef_align(0, real_left, slot), t0 + real_left

    orig_ts = orig.ts

    def close(end: float) -> None:
        """Give back the part of the last period after `end` (original free count)."""
        i = bisect_left(orig_ts, end)
        if i == len(orig_ts) or orig_ts[i] != end:
            i = new.key(end)
            fs[i] = orig.at(end)

    if first is not None:
        q = first
        nxt = orig_ts[1] if len(orig_ts) > 1 else a_ddl
        real_end = math.ceil(now + remaining / rate[q])
        end = ef_align(now, real_end, slot)
        if (nxt >= end and ddl >= real_end) or nxt <= now:
            new.add(now, end, -q)
            close(end)
            return _EfPlan([(now, q)], end, real_end, real_end <= ddl, new.merge())
        dur = (ddl if nxt == a_ddl else nxt) - now
        remaining -= dur * rate[q]
        new.add(now, nxt, -q)
        allocs[now] = q
        event = nxt
        allocs[nxt] = 0
        if remaining <= 0:  # finishes in the first period, but after its deadline
            new.add(nxt, end, -q)
            close(end)
            return _EfPlan(_merged({now: q, end: 0}) if end > now else [(now, q)], end,
                           real_end, False, new.merge())
    lo = bisect_left(ts, event)
    hi = bisect_left(ts, a_ddl) if a_ddl >= event else lo  # periods [ts[k], ts[k+1]) for lo <= k < hi
    # durations: to the next breakpoint, the last one (ending at the aligned deadline) to `ddl`
    pts = ts[lo:hi]
    durs = [t1 - t0 for t0, t1 in zip(pts, islice(ts, lo + 1, hi))]
    span = 0.0
    if pts:
        durs.append(ddl - pts[-1])
        # The most any level's walk can add up: the span of the periods with a positive
        # duration at the best rate of a level <= q (with a margin far above float rounding, so
        # only levels that certainly fail the walk are skipped).
        span = (max(ddl, pts[-1]) - pts[0]) * (1.0 + 1e-9)
    best_rate = e.best_rate
    n = len(pts)

    last_q = 0
    for q in e.levels:
        if q > total:
            break
        kp = -1  # the period where the backward walk covers the work (`point`)
        if span * best_rate[q] >= remaining:
            acc = 0.0
            rq = rate[q]
            for i in range(n - 1, -1, -1):
                f = fs[lo + i]
                if f >= q:
                    acc += durs[i] * rq
                elif f > 0 and below[f]:
                    acc += durs[i] * rate[below[f]]
                else:
                    continue
                if acc >= remaining:
                    kp = i
                    break
        if kp < 0:
            last_q = q
            continue
        # Forward: previous level before `point`, this level from it, until the work is done.
        for i in range(n):
            k = lo + i
            x = q if i >= kp else last_q
            f = fs[k]
            a = x if f >= x else (below[f] if f > 0 else 0)
            allocs[pts[i]] = a
            fs[k] = f - a
            if a == 0:
                continue
            it = durs[i] * rate[a]
            if i < kp or it < remaining:
                remaining -= it
                continue
            if i + 1 < n:  # no GPUs in the periods after this one
                allocs.setdefault(pts[i + 1], 0)
            end, real_end = finish(pts[i], a, remaining)
            close(end)
            return _EfPlan(_merged(allocs), end, real_end, real_end <= ddl, new.merge())
        k = new.key(a_ddl)
        a = fit(q, fs[k])
        if a == 0:
            break
        allocs[a_ddl] = a
        fs[k] -= a
        end, real_end = finish(a_ddl, a, remaining)
        close(end)
        return _EfPlan(_merged(allocs), end, real_end, real_end <= ddl, new.merge())

    # No level meets the deadline: the largest level (as free GPUs allow) up to the deadline...
    top = last_q or e.levels[0]
    for k in range(lo, hi):
        a = fit(top, fs[k])
        allocs[ts[k]] = a
        fs[k] -= a
        remaining -= durs[k - lo] * rate[a] if a else 0.0
    # ... then whatever is free after it, then everything.
    last = max(a_ddl, event)
    new.key(last)
    while True:
        i = bisect_left(new.ts, last)
        if i + 1 >= len(new.ts):
            break
        nxt_t = new.ts[i + 1]
        q = fit(e.max_gpu, new.fs[i])
        allocs[last] = q
        if q:
            it = (nxt_t - last) * rate[q]
            if it >= remaining:
                real_end = math.ceil(last + remaining / rate[q])
                end = ef_align(now, real_end, slot)
                new.add(last, end, -q)
                close(end)
                return _EfPlan(_merged(allocs), end, real_end, real_end <= ddl, new.merge())
            remaining -= it
            new.fs[i] -= q
        last = nxt_t
    q = e.max_gpu
    allocs[last] = q
    real_end = math.ceil(last + remaining / rate[q])
    end = ef_align(now, real_end, slot)
    new.add(last, end, -q)
    close(end)
    return _EfPlan(_merged(allocs), end, real_end, real_end <= ddl, new.merge())


# --------------------------------------------------------------------------- prompttuner

@dataclass(frozen=True)
class PromptTunerSettings:
    """Knobs of the `prompttuner` policy; defaults are what the benchmarks use."""

    safety_z: float = 1.0            # plan for remaining + z * sd iterations
    hold_s: float = 600.0            # no downsizing within this long after a resize
    reclaim_min_gain: float = 2.0    # reclaim only if GPU-seconds saved > gain * resize GPU-seconds
    risk_slack_fraction: float = 0.1  # at risk: slack < this fraction of the time to finish
    spare_efficiency: float = 0.0    # also give spare GPUs to jobs scaling at least this well
    commit: bool = True              # guarantee test on arrival (no declines): see PromptTunerPolicy


class PromptTunerPolicy(Policy):
    """Ours: meet deadlines at the lowest GPU-hours.

    1. Each job's need is the smallest allowed count that finishes `remaining + z*sd`
       iterations by its deadline, counting the resize cost (`gpu_need`).
    2. Jobs are served least-slack first with that minimal allocation; a job whose need does not
       fit waits (queued) or keeps what it has if that still fits. A queued job that can wait
       for running jobs to end and still meet its deadline is served after them: it does not
       preempt them (`_can_wait`).
    3. Running jobs ahead of schedule give GPUs back only when the saving outweighs the resize
       cost and they have not been resized for `hold_s` (hysteresis: no thrashing).
    4. Spare GPUs go only to jobs at risk (slack below a fraction of their time to finish).
    5. A job that cannot make its deadline is run best-effort on what is left, at its fastest
       count, to minimise lateness, and reported as "infeasible" - never dropped.
    6. Commitment (no admission control, nothing is declined): when a job is first seen, the
       committed jobs plus it are planned in deadline order on the cluster's free-GPU timeline
       (the same minimum-share planner as `elasticflow`, with the per-round overhead added to the
       work); if every plan still meets its deadline the job is committed (`pt_committed` in its
       memory), otherwise it is served only after every committed job, so a burst of arrivals
       cannot make jobs that were guaranteed miss. An uncommitted job is re-tested each round
       and committed as soon as it fits.
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

        committed = self._commitments(now_s, gpu_budget, jobs, cluster, plans) if s.commit else {}
        free = gpu_budget
        target: dict[str, int] = {}
        by_slack = sorted((p for p in plans if p[4]),
                          key=lambda p: (not committed.get(p[0].job_id, True), p[2],
                                         p[0].deadline_s, p[0].job_id))
        waits = self._can_wait(by_slack, gpu_budget)
        feasible = sorted(by_slack, key=lambda p: (not committed.get(p[0].job_id, True),
                                                   p[0].job_id in waits))
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
            update = {"last_resize_s": now_s} if g != job.gpus else {}
            if job.job_id in committed and committed[job.job_id] != job.memory.get("pt_committed"):
                update["pt_committed"] = committed[job.job_id]
            reason = ("least-slack minimal share" if feasible_job else "cannot meet deadline: best effort")
            out.append(_decision(job, g, reason, finish, infeasible=not feasible_job,
                                 memory_update=update))
        return out

    def _can_wait(self, by_slack: list, gpu_budget: int) -> set[str]:
        """Queued jobs that can wait for running ones to end instead of preempting them.

        Stopping a running job costs its checkpoint and a restart and gains nothing if the job
        it makes room for would still meet its deadline starting when GPUs free up anyway. So
        the queued jobs are list-scheduled, least slack first, on the GPUs free now and those
        freed as jobs end (running ones after their planned remaining work at their present
        size, queued ones after theirs at their need); a job can wait if, starting there, it
        keeps at least `hold_s` of slack (and is not at risk). Those end times are estimates, so
        a job with less margin than that is served least-slack first as before: on the
        simulator's prompt-tuning traces, waiting on tighter margins missed more deadlines
        (617 -> 651 of 1,500 at 80 jobs/h without a bank effect). Without this, equal jobs with
        distant deadlines took turns on the live cluster: one that has made progress always
        has more slack than one still queued, so each round stopped the job just started."""
        running = [(remaining / job.rate(job.gpus), job.gpus)
                   for job, _, _, remaining, _ in by_slack if job.gpus > 0]
        releases = running + [(0.0, max(0, gpu_budget - sum(g for _, g in running)))]
        heapq.heapify(releases)
        waits = set()
        for job, need, slack, remaining, _ in by_slack:
            if job.gpus > 0:
                continue
            got, start = 0, 0.0
            while got < need and releases:
                start, gpus = heapq.heappop(releases)
                got += gpus
            if got < need:
                break  # more than the whole budget: this one and the rest cannot wait
            if got > need:
                heapq.heappush(releases, (start, got - need))
            run_s = remaining / job.rate(need)
            heapq.heappush(releases, (start + run_s, need))
            if slack - start >= max(self.settings.hold_s,
                                    self.settings.risk_slack_fraction * run_s):
                waits.add(job.job_id)
        return waits

    def _commitments(self, now_s: float, gpu_budget: int, jobs: list[JobView],
                     cluster: ClusterModel, plans: list) -> dict[str, bool]:
        """job id -> committed. Jobs committed earlier stay committed; each new (or not yet
        committed) job is committed if the committed jobs plus it can all still be planned to
        meet their deadlines, tested one at a time in deadline order."""
        if gpu_budget <= 0:
            return {j.job_id: bool(j.memory.get("pt_committed")) for j in jobs}
        per_round = cluster.transition_s(1, 1) / cluster.slot_s  # lost each round, as a fraction
        ef: dict[str, _EfJob] = {}
        for job, _, _, remaining, _ in plans:
            levels = list(job.allowed_gpus)
            work = remaining * (1.0 + per_round)
            if job.gpus == 0:  # a first start costs its transition once
                work += cluster.transition_s(0, levels[0], job.warm) * job.rate(levels[0])
            ef[job.job_id] = _EfJob(job, levels, {g: job.rate(g) for g in levels}, levels[-1],
                                    work=work)
        done = {j.job_id: True for j in jobs if j.memory.get("pt_committed")}
        base = [ef[i] for i in done]
        pending = sorted((j for j in jobs if j.job_id not in done),
                         key=lambda j: (j.deadline_s, j.arrival_s, j.job_id))
        if not pending:
            return done
        slot = cluster.slot_s

        def failing(group: list[_EfJob], stop: set[str] | None = None) -> set[str] | None:
            """Ids whose plans miss (None as soon as one in `stop` misses)."""
            steps = _Steps.empty(now_s, gpu_budget)
            missed = set()
            for e in sorted(group, key=lambda e: (e.view.deadline_s, e.view.arrival_s, e.view.job_id)):
                plan = _min_share(e, now_s, slot, gpu_budget, steps)
                steps = plan.steps
                if not plan.ok:
                    if stop is not None and e.view.job_id in stop:
                        return None
                    missed.add(e.view.job_id)
            return missed

        # One pass in deadline order: a candidate is kept if its own plan meets its deadline...
        steps = _Steps.empty(now_s, gpu_budget)
        accepted = []
        base_missed = set()
        for e in sorted(base + [ef[j.job_id] for j in pending],
                        key=lambda e: (e.view.deadline_s, e.view.arrival_s, e.view.job_id)):
            plan = _min_share(e, now_s, slot, gpu_budget, steps)
            if e.view.job_id in done:
                steps = plan.steps
                if not plan.ok:
                    base_missed.add(e.view.job_id)
            elif plan.ok:
                steps = plan.steps
                accepted.append(e)
        # ... and the kept ones together must not make a committed job miss, except committed
        # jobs already behind on their own (`late`: they do not block new ones); if they do, test
        # them one at a time (rare). The pass above already planned exactly `base + accepted` in
        # deadline order (a candidate left out changed nothing), so its misses are that group's
        # misses: `late` is needed only when a committed job missed there.
        late = (failing(base) or set()) if base_missed else set()
        if base_missed - late:
            for e in accepted:
                trial = base + [e]
                if failing(trial, stop={x.view.job_id for x in trial} - late) is not None:
                    base = trial
            accepted = base[len(done):]
        for job in pending:
            done[job.job_id] = False
        for e in accepted:
            done[e.view.job_id] = True
        return done

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
