"""ElasticFlow's own event loop (`ef-accessctrl`) replayed for the `elasticflow` policy under
the `elasticflow` overhead model: its event merging, its placement and trainer cache, its
per-round overheads (see `simulate_elasticflow_events`)."""

from __future__ import annotations

import math

from ptctl.planner.gpu_need import elasticflow_overhead_s
from ptctl.planner.interface import JobView, Policy
from ptctl.planner.policies import decide
from ptctl.planner.views import allowed_gpu_counts, job_view
from ptctl.sim.results import JobOutcome, SimConfig, SimResult
from ptctl.sim.traces import SimJob


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


class _EfLive:
    """Replay-side state of one active job; `view` is what the policy saw of it last round."""

    __slots__ = ("job", "outcome", "curve", "allowed", "remaining", "gpus", "end", "real_end",
                 "overhead", "view", "in_cache", "order")

    def __init__(self, job: SimJob, curve, allowed: tuple[int, ...]) -> None:
        self.job, self.curve, self.allowed = job, curve, allowed
        self.outcome = JobOutcome(job.job_id, job.arrival_s, job.deadline_s, job.iterations)
        self.remaining = float(job.iterations)
        self.gpus = 0
        self.end = math.inf
        self.real_end = math.inf
        self.overhead = 0.0
        self.in_cache = False
        self.order = 0
        self.view: JobView | None = None


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
    - every round each running job pays its overhead (`elasticflow_overhead_s`), cached by exact GPU
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
            allowed = allowed_gpu_counts(job.min_gpus, job.max_gpus, budget=total,
                                         gpus_per_node=cluster.gpus_per_node,
                                         levels=curve.allowed_gpus)
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
                job = live.job
                live.view = job_view(
                    job.job_id, job.model, job.global_batch, job.arrival_s, job.deadline_s,
                    gpus=live.gpus, allowed_gpus=live.allowed, throughput=live.curve,
                    remaining_iterations=max(live.remaining, 1e-9),
                    memory=live.view.memory if live.view else None)
                views.append(live.view)
            decisions = decide(policy, now, total, views, cluster)
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
                    live.overhead = elasticflow_overhead_s(live.gpus, not live.in_cache, restart,
                                                           total)
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
        timeline.append((now, sum(lv.gpus for lv in active.values())))
        for live in active.values():
            if live.gpus:
                live.outcome.gpu_seconds += live.gpus * (nxt - now)
                gpu_seconds += live.gpus * (nxt - now)
        time_diff = int(nxt - now)
        now = nxt
    for live in active.values():  # never ended (cannot happen with end events; kept for safety)
        live.outcome.finish_s = None
    return SimResult(policy.name, outcomes, gpu_seconds, timeline, rounds)
