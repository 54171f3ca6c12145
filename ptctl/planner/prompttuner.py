"""`prompttuner` (ours): deadlines met at the lowest GPU-hours, with commitment instead of
admission control."""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass

from ptctl.planner.gpu_need import ClusterModel, gpu_need
from ptctl.planner.interface import JobView, Policy, _decision, _largest_fitting
from ptctl.planner.timeline import _EfJob, _min_share, _Steps

# The job memory key of its last resize time: a resize the user asks for sets it too, so the
# hysteresis (`hold_s`) protects a manual resize as it does the policy's own.
LAST_RESIZE = "last_resize_s"
# What a job's plan is: on time with the safety margin; on time only if its estimate holds
# (no margin); late at every count.
FEASIBLE, AT_RISK, INFEASIBLE = "feasible", "at risk", "infeasible"
REASONS = {FEASIBLE: "least-slack minimal share",
           AT_RISK: "on time only without the safety margin: best effort",
           INFEASIBLE: "cannot meet deadline: best effort where lateness is cheapest"}


@dataclass(frozen=True)
class PromptTunerSettings:
    """Knobs of the `prompttuner` policy; defaults are what the benchmarks use."""

    safety_z: float = 1.0            # plan for remaining + z * sd iterations
    hold_s: float = 600.0            # no downsizing within this long after a resize
    reclaim_min_gain: float = 2.0    # reclaim only if GPU-seconds saved > gain * resize GPU-seconds
    risk_slack_fraction: float = 0.1  # a queued job waits only with this much of its run as slack
    commit: bool = True              # guarantee test on arrival (no declines): see PromptTunerPolicy
    late_gpu_hours_per_hour: float = 0.0  # best effort: GPU-hours one hour less late is worth


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
    4. Spare GPUs stay free: no job gets more than its need (on the prompt-tuning traces,
       handing them to jobs with thin slack cost more GPU-hours than INFless's at low load).
    5. A job on time only without the safety margin (at risk) runs best-effort at the smallest
       count on time for its estimate. A job that cannot make its deadline at any count is
       reported "infeasible" at once and run best-effort on what is left, never dropped, at the
       count that costs least for the lateness it saves (`_best_effort_size`): a late job is one
       violation whatever its size.
    6. Commitment (no admission control, nothing is declined): when a job is first seen, the
       committed jobs plus it are planned in deadline order on the cluster's free-GPU timeline
       (the same minimum-share planner as `elasticflow`, with the per-round overhead added to the
       work); if every plan still meets its deadline the job is committed (`pt_committed` in its
       memory), otherwise it is served only after every committed job, so a burst of arrivals
       cannot make jobs that were guaranteed miss. An uncommitted job is re-tested each round
       and committed as soon as it fits.
    Prompt Bank starts make jobs shorter (the simulator models them); there is no warm pool.
    """

    name = "prompttuner"
    uses_bank = True

    def __init__(self, settings: PromptTunerSettings | None = None) -> None:
        self.settings = settings or PromptTunerSettings()

    def decide(self, now_s, gpu_budget, jobs, cluster):
        s = self.settings
        plans = []
        for job in jobs:
            remaining = job.remaining_iterations + s.safety_z * job.remaining_sd
            need = gpu_need(remaining, now_s, job.deadline_s, job.rate, job.allowed_gpus,
                            job.gpus, cluster)
            if need is not None and job.gpus > 0 and need < job.gpus:
                need = self._reclaim(job, need, remaining, now_s, cluster)
            if need is None:
                # On time only if its estimate holds: the smallest count that makes it so.
                bare = gpu_need(job.remaining_iterations, now_s, job.deadline_s, job.rate,
                                job.allowed_gpus, job.gpus, cluster)
                if bare is not None:
                    plans.append((job, bare, math.inf, remaining, AT_RISK))
                    continue
                size = self._best_effort_size(job, remaining, cluster)
                plans.append((job, size, math.inf, remaining, INFEASIBLE))
            else:
                finish = (now_s + cluster.transition_s(job.gpus, need)
                          + remaining / job.rate(need))
                plans.append((job, need, job.deadline_s - finish, remaining, FEASIBLE))

        committed = self._commitments(now_s, gpu_budget, jobs, cluster, plans) if s.commit else {}
        free = gpu_budget
        target: dict[str, int] = {}
        by_slack = sorted((p for p in plans if p[4] == FEASIBLE),
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
        best_effort = sorted((p for p in plans if p[4] != FEASIBLE),
                             key=lambda p: (p[0].deadline_s, p[0].job_id))
        for job, size, _, _, _ in best_effort:
            g = _largest_fitting(job, free, size)
            target[job.job_id] = g
            free -= g

        out = []
        for job, _, _, remaining, kind in plans:
            g = target[job.job_id]
            finish = None
            if g:
                finish = now_s + cluster.transition_s(job.gpus, g) + remaining / job.rate(g)
            update = {LAST_RESIZE: now_s} if g != job.gpus else {}
            if job.job_id in committed and committed[job.job_id] != job.memory.get("pt_committed"):
                update["pt_committed"] = committed[job.job_id]
            out.append(_decision(job, g, REASONS[kind], finish, infeasible=kind == INFEASIBLE,
                                 memory_update=update))
        return out

    def _best_effort_size(self, job: JobView, remaining: float, cluster: ClusterModel) -> int:
        """The count a job that will be late anyway runs at: the one that minimises its GPU-hours
        plus `late_gpu_hours_per_hour` times its hours late (resize cost included), the fastest
        of equals. Every hour late is one violation whatever the size, and on curves that scale
        sublinearly the fastest count is the least efficient one."""
        def run_s(g: int) -> float:
            return cluster.transition_s(job.gpus, g) + remaining / job.rate(g)

        price = self.settings.late_gpu_hours_per_hour
        cost = {g: (g + price) * run_s(g) for g in job.allowed_gpus}
        cheapest = min(cost.values())
        # A curve known at one count only is linear: every count costs the same, up to rounding.
        return min((g for g in cost if cost[g] <= cheapest * (1 + 1e-9)), key=run_s)

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
                work += cluster.transition_s(0, levels[0]) * job.rate(levels[0])
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
        if now_s - job.memory.get(LAST_RESIZE, -math.inf) < self.settings.hold_s:
            return job.gpus
        cost = cluster.transition_s(job.gpus, need) * need
        saved = job.gpus * remaining / job.rate(job.gpus) - need * remaining / job.rate(need)
        return need if saved > self.settings.reclaim_min_gain * cost else job.gpus
