"""Trace-driven, event-driven cluster simulator: `simulate()` is its one entry. Every decision
comes from ptctl.planner.policies.decide on views built by ptctl.planner.views, as on the live
cluster; the `elasticflow` policy under ElasticFlow's overhead model replays ElasticFlow's own
event loop instead (ptctl.sim.elasticflow_replay).

Time advances from round to round. A round happens at the next event - an arrival, a job's
predicted completion, or a time a policy asked to be reviewed at - but, as in ElasticFlow's
simulator, an event less than one slot away is handled at the next slot boundary (`now + slot`),
merged with everything else due by then. Under the `resize` overhead model (ptctl on Slurm) an
arrival is also planned at once, between rounds, as `ptctl submit` does: the policy decides over
all jobs and only the new job's decision is applied, on the GPUs free then (`_admit`). At each
round:

  1. running jobs progress at their table rate for the time since the last round, minus the
     time they were stalled by a start or resize (the cluster's overhead model);
  2. finished jobs leave (their GPUs are held until their exact finish time);
  3. arrivals join the queue;
  4. the policy decides for every queued or running job, and the decisions are applied.

What a policy knows of a job's iterations: a bank-using policy plans a job that carries the
Prompt Bank's prediction (`iterations_predicted`) as the live scheduler does, with
`stated_prediction`'s prior (the prediction and the spread its query stated); any other job is planned
on its true iterations times 1 + a Gaussian error of `estimate_rel_sd`. Either first estimate
moves linearly to the truth as the job progresses (the live scheduler refits it on the job's
loss curve), and its spread shrinks in proportion to the work left.

Determinism: the only randomness (the noise of iteration estimates) is drawn from `seed`.
GPU-hours count every GPU a job holds, stalls included. Each outcome also says whether the job
would miss its deadline even alone on the cluster (`misses_even_alone`) and the fewest
GPU-seconds any schedule spends on it (`least_gpu_seconds`): floors under any policy's
violations and GPU-hours. There is no warm pool (the live
scheduler keeps none): every start and resize loads the model.
"""

from __future__ import annotations

import heapq
import math

import numpy as np

from ptctl.planner.convergence import stated_prediction
from ptctl.planner.gpu_need import elasticflow_overhead_s
from ptctl.planner.interface import JobView, Policy
from ptctl.planner.policies import decide, get_policy
from ptctl.planner.views import allowed_gpu_counts, job_view
from ptctl.sim.elasticflow_replay import simulate_elasticflow_events
from ptctl.sim.results import JobOutcome, SimConfig, SimResult
from ptctl.sim.traces import SimJob

EF_RESTART_EVERY = 60  # ElasticFlow restarts its trainers (a placement-cache flush) every 60 rounds


class _Live:
    """Simulator-side state of one active job; `view` is what the policy saw of it last round."""

    __slots__ = ("job", "outcome", "curve", "total", "done", "gpus", "stall_until", "allowed",
                 "view", "first_estimate", "relative_sd")

    def __init__(self, job: SimJob, total: float, curve, allowed: tuple[int, ...],
                 first_estimate: float, relative_sd: float) -> None:
        self.job, self.curve, self.total = job, curve, total
        self.first_estimate, self.relative_sd = first_estimate, relative_sd
        self.outcome = JobOutcome(job.job_id, job.arrival_s, job.deadline_s, total)
        self.done = 0.0
        self.gpus = 0
        self.stall_until = 0.0
        self.allowed = allowed
        self.view: JobView | None = None

    def estimate(self) -> tuple[float, float]:
        """(remaining iterations, their sd) as the policy knows them now."""
        left = 1.0 - self.done / self.total
        total = self.total + (self.first_estimate - self.total) * left
        return max(1.0, total - self.done), self.relative_sd * total * left


def simulate(jobs: list[SimJob], policy: str | Policy, config: SimConfig) -> SimResult:
    """Run one policy over a trace; deterministic for a given config (seed included)."""
    policy = get_policy(policy)
    cluster = config.cluster
    if cluster.overhead_model == "elasticflow" and policy.name == "elasticflow":
        return _with_floors(simulate_elasticflow_events(jobs, policy, config),
                            jobs, policy, config)
    total_gpus = cluster.total_gpus
    slot = cluster.slot_s
    ef_physics = cluster.overhead_model == "elasticflow"
    rng = np.random.default_rng(config.seed)
    noise = rng.normal(0.0, config.estimate_rel_sd, size=len(jobs)) if config.estimate_rel_sd else None

    # A Prompt Bank search runs at submit, before the scheduler sees the job (as `ptctl submit`
    # does): a bank-using policy first sees each job `bank_lookup_s` after its arrival.
    lookup_s = config.bank_lookup_s if policy.uses_bank else 0.0
    arrivals = sorted(jobs, key=lambda j: (j.arrival_s, j.job_id))
    outcomes: list[JobOutcome] = []
    active: dict[str, _Live] = {}
    next_arrival = 0
    gpu_seconds = 0.0
    timeline: list[tuple[float, int]] = []
    reviews: list[float] = []
    now = arrivals[0].arrival_s + lookup_s if arrivals else 0.0
    last_round = now
    rounds = 0
    # ElasticFlow's trainer cache: a placement seen since the last restart starts in 2 s. Its
    # simulator keys it by the exact GPU ranks (buddy blocks); we key it by the block size.
    placements_seen: set[int] = set()

    def add_arrival(job: SimJob, index: int) -> None:
        curve = config.throughputs.curve(job.model, job.global_batch)
        allowed = allowed_gpu_counts(job.min_gpus, job.max_gpus, budget=total_gpus,
                                     gpus_per_node=cluster.gpus_per_node, levels=curve.allowed_gpus)
        if not allowed:
            outcome = JobOutcome(job.job_id, job.arrival_s, job.deadline_s, job.iterations)
            outcomes.append(outcome)  # can never run on this cluster: counts as unfinished
            return
        total = job.iterations_bank if policy.uses_bank else job.iterations
        if policy.uses_bank and job.iterations_predicted is not None:
            prior = stated_prediction(job.iterations_predicted, job.predicted_sd_log)
            first, spread = prior.total_iterations, prior.sd_iterations / prior.total_iterations
        else:
            error = float(noise[index]) if noise is not None else 0.0
            first, spread = total * max(0.05, 1.0 + error), config.estimate_rel_sd
        live = _Live(job, total, curve, allowed, first, spread)
        active[job.job_id] = live
        outcomes.append(live.outcome)

    # Under Slurm's physics ptctl plans and starts a job at submit (ptctl.scheduler.admission),
    # between rebalance rounds; ElasticFlow's simulator decides at its rounds only.
    admit_on_arrival = not ef_physics
    full = True  # this round is a rebalance; False: an admission at submit
    last_full = now
    while True:
        # 1-2. progress since the last round; completions.
        elapsed = now - last_round
        for live in list(active.values()):
            if live.gpus == 0:
                continue
            rate = live.curve.rate(live.gpus)
            begin = max(last_round, live.stall_until)
            work = max(0.0, now - begin) * rate
            if live.done + work >= live.total:
                finish = begin + (live.total - live.done) / rate
                live.outcome.finish_s = finish
                live.outcome.gpu_seconds += live.gpus * (finish - last_round)
                gpu_seconds += live.gpus * (finish - last_round)
                del active[live.job.job_id]
                continue
            live.done += work
            live.outcome.gpu_seconds += live.gpus * elapsed
            gpu_seconds += live.gpus * elapsed

        # 3. arrivals.
        arrived = set()
        while next_arrival < len(arrivals) and arrivals[next_arrival].arrival_s + lookup_s <= now:
            add_arrival(arrivals[next_arrival], next_arrival)
            arrived.add(arrivals[next_arrival].job_id)
            next_arrival += 1

        if not active and next_arrival >= len(arrivals):
            break

        # 4. decide and apply.
        review = math.inf
        if active:
            views = []
            for live in active.values():
                job = live.job
                remaining, sd = live.estimate()
                live.view = job_view(
                    job.job_id, job.model, job.global_batch, job.arrival_s, job.deadline_s,
                    gpus=live.gpus, allowed_gpus=live.allowed, throughput=live.curve,
                    remaining_iterations=remaining, remaining_sd=sd,
                    memory=live.view.memory if live.view else None)
                views.append(live.view)
            decisions = decide(policy, now, total_gpus, views, cluster)
            if not full:
                timeline.append((now, _admit(active, decisions, arrived, now, total_gpus, cluster)))
        if active and full:
            rounds += 1
            restart = ef_physics and rounds % EF_RESTART_EVERY == 0
            used = 0
            for live, d in zip(list(active.values()), decisions):
                if not _take_decision(active, live, d):
                    continue
                live.view.memory = d.memory
                old, new = live.gpus, d.gpus
                if old and new != old:
                    live.outcome.resizes += 1
                if new:
                    if ef_physics:
                        cached = new in placements_seen
                        placements_seen.add(new)
                        overhead = elasticflow_overhead_s(new, not cached, restart, total_gpus)
                        live.stall_until = now + overhead
                    elif new != old:
                        live.stall_until = now + cluster.transition_s(old, new)
                live.gpus = new
                used += new
                if d.review_at_s is not None and d.review_at_s > now:
                    review = min(review, d.review_at_s)
            if restart:
                placements_seen.clear()
            timeline.append((now, used))

        # next round
        candidates = []
        if next_arrival < len(arrivals):
            candidates.append(arrivals[next_arrival].arrival_s + lookup_s)
        for live in active.values():
            if live.gpus:
                begin = max(now, live.stall_until)
                candidates.append(begin + (live.total - live.done) / live.curve.rate(live.gpus))
        while reviews and reviews[0] <= now:
            heapq.heappop(reviews)
        if reviews:
            candidates.append(reviews[0])
        if active and review < min(candidates, default=math.inf):
            # As ElasticFlow's scale event: only the earliest review, only when nothing comes first.
            heapq.heappush(reviews, review)
            candidates.append(review)
        if not candidates:
            break  # queued jobs that nothing will ever start
        upcoming = min(candidates)
        last_round = now
        if full:
            last_full = now
        next_full = last_full + slot if upcoming - last_full <= slot else upcoming
        arrival_at = (arrivals[next_arrival].arrival_s + lookup_s
                      if next_arrival < len(arrivals) else math.inf)
        full = not (admit_on_arrival and arrival_at < next_full)
        now = next_full if full else arrival_at

    return _with_floors(SimResult(policy.name, outcomes, gpu_seconds, timeline, rounds),
                        jobs, policy, config)


def _take_decision(active: dict[str, _Live], live: _Live, d) -> bool:
    """Record what decision `d` tells `live`'s outcome: reported infeasible, or declined (the
    job leaves `active`); False when it was declined."""
    if d.job_id != live.job.job_id:
        raise AssertionError("policy returned decisions out of order")
    if d.action == "infeasible":
        live.outcome.reported_infeasible = True
    if d.action == "decline":
        live.outcome.declined = True
        del active[live.job.job_id]
        return False
    return True


def _admit(active: dict[str, _Live], decisions: list, arrived: set[str], now: float,
           total_gpus: int, cluster) -> int:
    """Apply only the just-arrived jobs' decisions, as `ptctl submit` does: each starts on the
    largest allowed count up to its planned one that the GPUs free now allow (else the next
    round starts it), is told at once when it cannot make its deadline, and keeps no policy
    memory; the running jobs are left to the next round. Returns the GPUs in use."""
    used = sum(live.gpus for live in active.values())
    for live, d in zip(list(active.values()), decisions):
        if live.job.job_id not in arrived or not _take_decision(active, live, d):
            continue
        gpus = max((g for g in live.allowed if g <= min(d.gpus, total_gpus - used)), default=0)
        if gpus:
            live.gpus = gpus
            live.stall_until = now + cluster.transition_s(0, gpus)
            used += gpus
    return used


def misses_even_alone(job: SimJob, policy: Policy, config: SimConfig) -> bool:
    """Whether `job` misses its deadline under `policy` even alone on the cluster: seen after
    the policy's bank lookup, its exact iterations known, started at once at its fastest allowed
    count and paying only the start cost. No schedule meets such a job, so their number is a
    floor under any policy's violations on the trace, and caps the ratio it can show."""
    curve, allowed, iterations = _alone(job, policy, config)
    start = job.arrival_s + (config.bank_lookup_s if policy.uses_bank else 0.0)
    return not any(start + _least_start_s(config.cluster, g) + iterations / curve.rate(g)
                   <= job.deadline_s for g in allowed)


def least_gpu_seconds(job: SimJob, policy: Policy, config: SimConfig) -> float:
    """The fewest GPU-seconds any schedule can spend on `job` under `policy` (every job runs to
    its end, nothing is dropped): one start on the smallest allowed count, and its exact
    iterations at the allowed count with the most iterations per GPU-second. Their sum is a
    floor under any policy's GPU-hours on the trace."""
    curve, allowed, iterations = _alone(job, policy, config)
    if not allowed:
        return 0.0  # never runs
    smallest = min(allowed)
    return (smallest * _least_start_s(config.cluster, smallest)
            + iterations * min(g / curve.rate(g) for g in allowed))


def _alone(job: SimJob, policy: Policy, config: SimConfig):
    """What the floors need of a job: its throughput curve, its allowed GPU counts on this
    cluster (as the simulation gives them), and its exact iterations under `policy`."""
    cluster = config.cluster
    curve = config.throughputs.curve(job.model, job.global_batch)
    allowed = allowed_gpu_counts(job.min_gpus, job.max_gpus, budget=cluster.total_gpus,
                                 gpus_per_node=cluster.gpus_per_node, levels=curve.allowed_gpus)
    return curve, allowed, job.iterations_bank if policy.uses_bank else job.iterations


def _least_start_s(cluster, gpus: int) -> float:
    """The shortest stall a start on `gpus` can have: under ElasticFlow's overhead model a
    placement its trainer cache has seen costs only the per-round overhead."""
    if cluster.overhead_model == "elasticflow":
        return elasticflow_overhead_s(gpus, False, cluster_gpus=cluster.total_gpus)
    return cluster.transition_s(0, gpus)


def _with_floors(result: SimResult, jobs: list[SimJob], policy: Policy,
                 config: SimConfig) -> SimResult:
    """Each outcome's floors: whether it misses even alone, and its least GPU-seconds."""
    by_id = {job.job_id: job for job in jobs}
    for outcome in result.outcomes:
        job = by_id[outcome.job_id]
        outcome.missed_even_alone = misses_even_alone(job, policy, config)
        outcome.least_gpu_seconds = least_gpu_seconds(job, policy, config)
    return result
