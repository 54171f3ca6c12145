"""Trace-driven, event-driven cluster simulator; every decision comes from ptctl.planner.policies.

Time advances from round to round. A round happens at the next event - an arrival, a job's
predicted completion, or a time a policy asked to be reviewed at - but, as in ElasticFlow's
simulator, an event less than one slot away is handled at the next slot boundary (`now + slot`),
merged with everything else due by then. At each round:

  1. running jobs progress at their table rate for the time since the last round, minus the
     time they were stalled by a start or resize (the cluster's overhead model);
  2. finished jobs leave (their GPUs are held until their exact finish time);
  3. arrivals join the queue;
  4. the policy decides for every queued or running job, and the decisions are applied.

Determinism: the only randomness (the noise of iteration estimates) is drawn from `seed`.
GPU-hours count every GPU a job holds, stalls included, plus idle warm instances of policies
that keep a warm pool.
"""

from __future__ import annotations

import heapq
import math
import statistics
from dataclasses import dataclass, field

import numpy as np

from ptctl.errors import BadInputError
from ptctl.planner.gpu_need import ClusterModel, elasticflow_overhead_s
from ptctl.planner.policies import JobView, Policy, get_policy, histogram_keepalive_s
from ptctl.planner.throughput import ThroughputTable
from ptctl.sim.traces import SimJob

EF_RESTART_EVERY = 60  # ElasticFlow restarts its trainers (a placement-cache flush) every 60 rounds


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
            "mean_jct_s": statistics.fmean(jcts) if jcts else None,
            "median_jct_s": statistics.median(jcts) if jcts else None,
            "resizes": sum(o.resizes for o in self.outcomes),
            "declined": sum(o.declined for o in self.outcomes),
            "late": sum(o.status == "late" for o in self.outcomes),
            "unfinished": sum(o.status == "unfinished" for o in self.outcomes),
            "reported_infeasible": sum(o.reported_infeasible for o in self.outcomes),
            "rounds": self.rounds,
        }

    def job_rows(self) -> list[dict]:
        return [{
            "job_id": o.job_id, "arrival_s": o.arrival_s, "deadline_s": o.deadline_s,
            "finish_s": o.finish_s,
            "jct_s": None if o.finish_s is None else o.finish_s - o.arrival_s,
            "status": o.status, "met_deadline": o.met_deadline,
            "reported_infeasible": o.reported_infeasible,
            "gpu_hours": o.gpu_seconds / 3600.0, "resizes": o.resizes,
        } for o in self.outcomes]


class _Live:
    """Simulator-side state of one active job, and the JobView the policy sees (reused)."""

    __slots__ = ("job", "outcome", "curve", "total", "done", "gpus", "stall_until", "view",
                 "noise")

    def __init__(self, job: SimJob, total: float, curve, allowed: tuple[int, ...],
                 max_gpus: int, noise: float) -> None:
        self.job, self.curve, self.total, self.noise = job, curve, total, noise
        self.outcome = JobOutcome(job.job_id, job.arrival_s, job.deadline_s, total)
        self.done = 0.0
        self.gpus = 0
        self.stall_until = 0.0
        self.view = JobView(job.job_id, job.model, job.global_batch, job.arrival_s, job.deadline_s,
                            "queued", 0, min(job.min_gpus, max_gpus), max_gpus, allowed,
                            total, curve)


def simulate(jobs: list[SimJob], policy: str | Policy, config: SimConfig) -> SimResult:
    """Run one policy over a trace; deterministic for a given config (seed included)."""
    policy = get_policy(policy)
    cluster = config.cluster
    if cluster.overhead_model == "elasticflow" and policy.name == "elasticflow":
        return simulate_elasticflow_events(jobs, policy, config)
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
    warm_until: dict[str, float] = {}
    last_arrival: dict[str, float] = {}
    arrival_gaps: dict[str, list[float]] = {}
    now = arrivals[0].arrival_s + lookup_s if arrivals else 0.0
    last_round = now
    rounds = 0
    # ElasticFlow's trainer cache: a placement seen since the last restart starts in 2 s. Its
    # simulator keys it by the exact GPU ranks (buddy blocks); we key it by the block size.
    placements_seen: set[int] = set()

    def add_arrival(job: SimJob, index: int) -> None:
        curve = config.throughputs.curve(job.model, job.global_batch)
        max_gpus = min(job.max_gpus, total_gpus)
        allowed = tuple(g for g in curve.allowed_gpus if job.min_gpus <= g <= max_gpus)
        if not allowed:
            outcome = JobOutcome(job.job_id, job.arrival_s, job.deadline_s, job.iterations)
            outcomes.append(outcome)  # can never run on this cluster: counts as unfinished
            return
        total = job.iterations_bank if policy.uses_bank else job.iterations
        live = _Live(job, total, curve, allowed, max(allowed), float(noise[index]) if noise is not None else 0.0)
        active[job.job_id] = live
        outcomes.append(live.outcome)
        if job.model in last_arrival:
            arrival_gaps.setdefault(job.model, []).append(job.arrival_s - last_arrival[job.model])
        last_arrival[job.model] = job.arrival_s

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
                warm_until[live.job.model] = finish + (histogram_keepalive_s(
                    arrival_gaps.get(live.job.model, [])) if policy.keeps_warm else 0.0)
                del active[live.job.job_id]
                continue
            live.done += work
            live.outcome.gpu_seconds += live.gpus * elapsed
            gpu_seconds += live.gpus * elapsed
        if policy.keeps_warm and elapsed > 0:
            running_models = {lv.job.model for lv in active.values() if lv.gpus}
            for model, until in warm_until.items():
                if model not in running_models and until > last_round:
                    gpu_seconds += min(until, now) - last_round

        # 3. arrivals.
        while next_arrival < len(arrivals) and arrivals[next_arrival].arrival_s + lookup_s <= now:
            add_arrival(arrivals[next_arrival], next_arrival)
            next_arrival += 1

        if not active and next_arrival >= len(arrivals):
            break

        # 4. decide and apply.
        if active:
            rounds += 1
            running_models = {lv.job.model for lv in active.values() if lv.gpus}
            views = []
            for live in active.values():
                v = live.view
                progress = live.done / live.total
                estimate_total = live.total * max(0.05, 1.0 + live.noise * (1.0 - progress))
                v.remaining_iterations = max(1.0, estimate_total - live.done)
                v.remaining_sd = config.estimate_rel_sd * live.total * (1.0 - progress)
                v.gpus = live.gpus
                v.state = "running" if live.gpus else "queued"
                v.warm = (policy.keeps_warm and (live.job.model in running_models
                          or warm_until.get(live.job.model, -math.inf) >= now))
                views.append(v)
            decisions = policy.decide(now, total_gpus, views, cluster)
            restart = ef_physics and rounds % EF_RESTART_EVERY == 0
            used = 0
            review = math.inf
            for live, d in zip(list(active.values()), decisions):
                if d.job_id != live.job.job_id:
                    raise AssertionError("policy returned decisions out of order")
                live.view.memory = d.memory
                if d.action == "infeasible":
                    live.outcome.reported_infeasible = True
                if d.action == "decline":
                    live.outcome.declined = True
                    del active[live.job.job_id]
                    continue
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
                        live.stall_until = now + cluster.transition_s(old, new, live.view.warm)
                live.gpus = new
                used += new
                if d.review_at_s is not None and d.review_at_s > now:
                    review = min(review, d.review_at_s)
            if restart:
                placements_seen.clear()
            if used > total_gpus:
                raise AssertionError(f"{policy.name} used {used} of {total_gpus} GPUs at t={now}")
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
        now = now + slot if upcoming - now <= slot else upcoming

    return SimResult(policy.name, outcomes, gpu_seconds, timeline, rounds)


# --------------------------------------------------------------------------- ElasticFlow events

_EF_NODE_GROUPS = (1, 2, 4, 8, 12, 16, 24, 32, 40, 48, 56, 64, 72, 88, 128, 256)


class _EfPlacement:
    """ElasticFlow's `elastic` placement (`cluster.elastic_placement` / `release_job_res`) and the
    trainer cache it feeds: a job restarts cheaply (2 s) when its exact GPU ranks were used by some
    job since the last periodic trainer restart (`log.scheduling_result`).

    Which physical node a job gets decides its ranks, so the free-node list is kept as
    ElasticFlow keeps it, across rounds: a new node set takes nodes from its front; a released node
    set (its last job gone) appends its nodes and the list is re-sorted by node id, stably - and
    node ids restart at 0 in every switch, so on more than one switch the order of same-id nodes
    depends on the release history. Ranks are numbered switch by switch (its scheduling log's
    columns)."""

    def __init__(self, switches: int, nodes_per_switch: int, per_node: int) -> None:
        self.nodes_per_switch, self.per_node = nodes_per_switch, per_node
        self.nodes = switches * nodes_per_switch  # flat index = switch * nodes_per_switch + id
        self.free: list[int] = list(range(self.nodes))
        self.home: dict[str, dict] = {}  # job -> its node set
        self.cache: set[tuple[int, int]] = set()

    def release(self, job: str) -> None:
        """`release_job_res`: the job leaves its node set; an emptied set gives its nodes back."""
        ns = self.home.pop(job, None)
        if ns is None:
            return
        ns["util"] -= next(x for j, x in ns["jobs"] if j == job)
        ns["jobs"] = [(j, x) for j, x in ns["jobs"] if j != job]
        if ns["util"] == 0:
            self.free += ns["nodes"]
            self.free.sort(key=lambda n: n % self.nodes_per_switch)

    def place(self, order: list[tuple[str, int]]) -> dict[str, bool]:
        """Place (job, gpus) in ElasticFlow's order; returns job -> in_cache."""
        groups: dict[int, list[dict]] = {g: [] for g in _EF_NODE_GROUPS}
        big = [(j, g) for j, g in order if g >= self.per_node]
        small = [(j, g) for size in reversed(_EF_NODE_GROUPS) if size < self.per_node
                 for j, g in order if g == size]
        for job, g in big + small:
            self._place_one(job, g, groups)
        return self._ranks(groups)

    def _regroup(self, ns: dict, groups: dict, home: list) -> None:
        free = len(ns["nodes"]) * self.per_node - ns["util"]
        if free > 0:
            for size in sorted(_EF_NODE_GROUPS, reverse=True):
                if size <= free and free % size == 0:
                    ns["num_gpus"] = size
                    groups[size].append(ns)
                    home.sort(key=lambda n: n["util"])
                    groups[size].sort(key=lambda n: n["util"])
                    return
        home.append(ns)
        home.sort(key=lambda n: n["util"])

    def _share(self, pool: list, job: str, g: int, groups: dict, home: list) -> bool:
        """Place `job` on the first node set of `pool` if it has room; else rotate it back."""
        if not pool:
            return False
        ns = pool.pop(0)
        if ns["util"] + g <= ns["capacity"]:
            ns["util"] += g
            ns["jobs"].append((job, g))
            self.home[job] = ns
            self._regroup(ns, groups, home)
            return True
        pool.append(ns)
        return False

    def _place_one(self, job: str, g: int, groups: dict) -> bool:
        if g not in groups:
            return False
        home = groups[g]
        if self._share(home, job, g, groups, home):
            return True
        for size in reversed(_EF_NODE_GROUPS):
            if size <= g:
                break
            if self._share(groups[size], job, g, groups, home):
                return True
        need = -(-g // self.per_node)
        if need > len(self.free):
            return False
        ns = {"nodes": self.free[:need], "capacity": need * self.per_node, "util": g,
              "num_gpus": g, "jobs": [(job, g)]}
        del self.free[:need]
        self.home[job] = ns
        self._regroup(ns, groups, home)
        return True

    def _ranks(self, groups: dict) -> dict[str, bool]:
        where: dict[int, tuple[int, dict]] = {}
        for size in _EF_NODE_GROUPS:
            for ns in groups[size]:
                for node in ns["nodes"]:
                    where.setdefault(node, (size, ns))
        in_cache: dict[str, bool] = {}
        for node in range(self.nodes):
            if node not in where:
                continue
            size, ns = where[node]
            rank = node * self.per_node
            members = ns["jobs"][:1] if size >= self.per_node else ns["jobs"]
            for job, g in members:
                if job not in in_cache:
                    key = (rank, g)
                    in_cache[job] = key in self.cache
                    self.cache.add(key)
                rank += g
        return in_cache


def _ef_overhead(gpus: int, restart: bool, cached: bool, cluster_gpus: int) -> float:
    """ElasticFlow's per-round overhead: 2 s (7 s on >= 256 GPUs) when the trainer is cached,
    else + 27 s (+20 s more on >= 256 GPUs) on a periodic restart, + 2*(log2 g + 1) s."""
    big = cluster_gpus >= 256
    overhead = 7.0 if big else 2.0
    if cached:
        return overhead
    if restart:
        overhead += 47.0 if big else 27.0
    return overhead + (math.log(gpus, 2) + 1) * 2


class _EfLive:
    __slots__ = ("job", "outcome", "curve", "remaining", "gpus", "end", "real_end", "overhead",
                 "view", "in_cache", "order")

    def __init__(self, job: SimJob, curve, allowed: tuple[int, ...]) -> None:
        self.job, self.curve = job, curve
        self.outcome = JobOutcome(job.job_id, job.arrival_s, job.deadline_s, job.iterations)
        self.remaining = float(job.iterations)
        self.gpus = 0
        self.end = math.inf
        self.real_end = math.inf
        self.overhead = 0.0
        self.in_cache = False
        self.order = 0
        self.view = JobView(job.job_id, job.model, job.global_batch, job.arrival_s, job.deadline_s,
                            "queued", 0, min(job.min_gpus, max(allowed)), max(allowed), allowed,
                            self.remaining, curve)


def simulate_elasticflow_events(jobs: list[SimJob], policy: Policy, config: SimConfig) -> SimResult:
    """ElasticFlow's own event loop (`ef-accessctrl`), for the `elasticflow` policy under the
    `elasticflow` overhead model:

    - rounds happen at events: arrivals, job end events and the earliest planned rescale; the
      events within one slot of the current round are merged into one at `now + slot` (when more
      than one event is pending); progress between rounds uses the whole seconds between them;
    - a job's end event is its plan's slot-aligned end plus this round's overhead; a job that
      runs out of work earlier ends at the next round; at its end event it leaves, and it meets
      its deadline if the allocation it got in its last round ended by it (the unrounded end,
      `ef_real_end_s`: ElasticFlow's `real_end_time`, after which progress no longer counts);
    - every round each running job pays its overhead (see `_ef_overhead`), cached by exact GPU
      ranks of ElasticFlow's placement (`_EfPlacement`: its free-node list carried across rounds,
      jobs released at their end events, then in deadline order, then placed in its job-list
      order); the cache is flushed every `slot` rounds (its simulator reuses the slot length, in
      seconds, as the restart period in rounds);
    - GPU-hours count the GPUs each job holds from round to round until it leaves.
    """
    cluster = config.cluster
    total = cluster.total_gpus
    slot = cluster.slot_s
    nodes = max(1, total // cluster.gpus_per_node)
    per_switch = config.nodes_per_switch or nodes
    placement = _EfPlacement(max(1, nodes // per_switch), per_switch, cluster.gpus_per_node)
    placed_order: list[str] = []  # ElasticFlow's job list after the last placement
    restart_every = max(1, int(slot))
    outcomes: list[JobOutcome] = []
    active: dict[str, _EfLive] = {}
    # time -> (arrivals, ending job ids in the order ElasticFlow's event lists them)
    events: dict[float, tuple[list[SimJob], dict[str, None]]] = {}
    end_at: dict[str, float] = {}
    for job in sorted(jobs, key=lambda j: (j.arrival_s, j.job_id)):
        events.setdefault(job.arrival_s, ([], {}))[0].append(job)
    if not events:
        return SimResult(policy.name, outcomes, 0.0, [], 0)

    def move_end(live: _EfLive, t: float) -> None:
        jid = live.job.job_id
        old = end_at.get(jid)
        if old == t:
            return
        if old is not None and old in events:
            ev = events[old]
            ev[1].pop(jid, None)
            if not ev[0] and not ev[1]:
                del events[old]
        end_at[jid] = t
        events.setdefault(t, ([], {}))[1].setdefault(jid)

    gpu_seconds = 0.0
    timeline: list[tuple[float, int]] = []
    rounds = 0
    schedule_count = 0
    now = min(events)
    time_diff = 0
    guard = 0
    while events or active:
        guard += 1
        if guard > 10_000_000:
            raise AssertionError("elasticflow event loop does not terminate")
        # run_all_jobs: progress over the (whole) seconds since the last round.
        ending_now: list[_EfLive] = []
        for live in active.values():
            if live.gpus == 0:
                continue
            rate = live.curve.rate(live.gpus)
            run = float(time_diff)
            if now > live.real_end:
                run -= now - live.real_end
            run = 0.0 if run < live.overhead else run - live.overhead
            work = max(0.0, run) * rate
            if live.remaining <= work and live.end > now:
                actual_end = now - time_diff + math.ceil(live.remaining / rate)
                work = (live.end - now + time_diff) * rate
                move_end(live, now)
                live.end = actual_end
            live.remaining -= work
            live.overhead = 0.0
        event = events.pop(now, None)
        if event is None:
            if not events:
                break
            now, time_diff = min(events), int(min(events) - now)
            continue
        starts, ends = event
        for jid in ends:
            live = active.get(jid)
            end_at.pop(jid, None)
            if live is None or live.gpus == 0:
                continue
            del active[jid]
            placement.release(jid)
            live.outcome.finish_s = live.real_end
            ending_now.append(live)
        for job in starts:
            curve = config.throughputs.curve(job.model, job.global_batch)
            allowed = tuple(g for g in curve.allowed_gpus
                            if job.min_gpus <= g <= min(job.max_gpus, total))
            if not allowed:
                outcomes.append(JobOutcome(job.job_id, job.arrival_s, job.deadline_s, job.iterations))
                continue
            live = _EfLive(job, curve, allowed)
            active[job.job_id] = live
            outcomes.append(live.outcome)

        first_scale = math.inf
        if active:
            rounds += 1
            # `estimate_all_jobs` releases every placed job, in its job list sorted by deadline
            # (stably, over the last placement's order).
            for jid in sorted((j for j in placed_order if j in active),
                              key=lambda j: active[j].job.deadline_s):
                placement.release(jid)
            views = []
            for live in active.values():
                v = live.view
                v.remaining_iterations = max(live.remaining, 1e-9)
                v.gpus = live.gpus
                v.state = "running" if live.gpus else "queued"
                views.append(v)
            decisions = policy.decide(now, total, views, cluster)
            for live, d in zip(list(active.values()), decisions):
                live.view.memory = d.memory
                if d.action == "decline":
                    live.outcome.declined = True
                    del active[live.job.job_id]
                    continue
                if live.gpus and d.gpus != live.gpus:
                    live.outcome.resizes += 1
                live.gpus = d.gpus
                live.real_end = d.memory.get("ef_real_end_s", math.inf)
                live.end = d.memory.get("ef_end_s", math.inf)
                live.order = d.memory.get("ef_order", 0)
                move_end(live, live.end)
                if d.review_at_s is not None and d.review_at_s > now:
                    first_scale = min(first_scale, d.review_at_s)
            order = sorted(active.values(), key=lambda lv: -lv.gpus)  # stable over ef_order
            order.sort(key=lambda lv: lv.order)
            order.sort(key=lambda lv: -lv.gpus)
            cached = placement.place([(lv.job.job_id, lv.gpus) for lv in order if lv.gpus])
            placed_order = [lv.job.job_id for lv in order]
            for lv in order:
                lv.in_cache = cached.get(lv.job.job_id, False)
        if first_scale < math.inf and (not events or first_scale < min(events)):
            events.setdefault(first_scale, ([], set()))
        if not events:
            if not active:
                break
            nxt = now + 10
        else:
            restart = schedule_count > 0 and schedule_count % restart_every == 0
            schedule_count += 1
            if restart:
                placement.cache.clear()
            for live in active.values():
                if live.gpus:
                    live.overhead = _ef_overhead(live.gpus, restart, live.in_cache, total)
                    live.end += live.overhead
                    move_end(live, live.end)
            times = sorted(events)
            # Merge the events within one slot into one at now + slot.
            if len(times) > 1 and int(times[0] - now) <= slot:
                merged = ([], {})
                k = 0
                while k < len(times) and (k == 0 or times[k] - now <= slot):
                    s, e = events.pop(times[k])
                    merged[0].extend(s)
                    merged[1].update(e)
                    k += 1
                target = now + slot
                if target in events:
                    events[target][0].extend(merged[0])
                    events[target][1].update(merged[1])
                else:
                    events[target] = merged
                for jid in merged[1]:
                    end_at[jid] = target
            nxt = min(events)
        used = sum(lv.gpus for lv in active.values())
        if used > total:
            raise AssertionError(f"{policy.name} used {used} of {total} GPUs at t={now}")
        timeline.append((now, used))
        for live in active.values():
            if live.gpus:
                live.outcome.gpu_seconds += live.gpus * (nxt - now)
                gpu_seconds += live.gpus * (nxt - now)
        time_diff = int(nxt - now)
        now = nxt
    for live in active.values():  # never ended (cannot happen with end events; kept for safety)
        live.outcome.finish_s = None
    return SimResult(policy.name, outcomes, gpu_seconds, timeline, rounds)
