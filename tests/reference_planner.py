"""The planner as first written (plain loops and three full planning passes, before the
speed-ups), kept so tests can check that the fast planner decides exactly the same."""

from __future__ import annotations

import math
from bisect import bisect_left

from ptctl.planner.gpu_need import ClusterModel
from ptctl.planner.interface import JobView
from ptctl.planner.prompttuner import PromptTunerPolicy
from ptctl.planner.timeline import _EfJob, _EfPlan, _min_share, _Steps, ef_align


def _plain_merge(steps: _Steps) -> _Steps:
    ts, fs = [steps.ts[0]], [steps.fs[0]]
    for t, f in zip(steps.ts[1:], steps.fs[1:]):
        if f != fs[-1]:
            ts.append(t)
            fs.append(f)
    steps.ts, steps.fs = ts, fs
    return steps


def _plain_merged(allocs):
    out = []
    for t in sorted(allocs):
        if not out or allocs[t] != out[-1][1]:
            out.append((t, allocs[t]))
    return out


def reference_min_share(e: _EfJob, now: float, slot: float, total: int, orig: _Steps,
                        first: int | None = None) -> _EfPlan:
    """The minimum-share walk as first written (plain loops, before the speed-ups), kept to
    check that the fast `_min_share` plans exactly the same."""
    remaining = e.remaining
    ddl = e.view.deadline_s
    rate = e.rate
    new = orig.copy()
    if remaining <= 0:
        return _EfPlan([(now, 0)], now, now, now <= ddl, new)
    if not e.levels:  # no allowed count fits the cluster: never runs, never meets its deadline
        return _EfPlan([(now, 0)], now, max(now, ddl) + 1.0, False, new)
    a_ddl = ef_align(now, ddl, slot)
    if a_ddl >= now:
        new.key(a_ddl)
    ts, fs = new.ts, new.fs
    allocs: dict[float, int] = {now: 0}
    event = now

    def finish(t0: float, g: int, left: float) -> tuple[float, float]:
        real_left = math.ceil(left / rate[g])
        return t0 + ef_align(0, real_left, slot), t0 + real_left

    def close(end: float) -> None:
        """Give back the part of the last period after `end` (original free count)."""
        if end not in orig.ts:
            i = new.key(end)
            fs[i] = orig.at(end)

    if first is not None:
        q = first
        nxt = orig.ts[1] if len(orig.ts) > 1 else a_ddl
        real_end = math.ceil(now + remaining / rate[q])
        end = ef_align(now, real_end, slot)
        if (nxt >= end and ddl >= real_end) or nxt <= now:
            new.add(now, end, -q)
            close(end)
            return _EfPlan([(now, q)], end, real_end, real_end <= ddl, _plain_merge(new))
        dur = (ddl if nxt == a_ddl else nxt) - now
        remaining -= dur * rate[q]
        new.add(now, nxt, -q)
        allocs[now] = q
        event = nxt
        allocs[nxt] = 0
        if remaining <= 0:  # finishes in the first period, but after its deadline
            new.add(nxt, end, -q)
            close(end)
            return _EfPlan(_plain_merged({now: q, end: 0}) if end > now else [(now, q)], end,
                           real_end, False, _plain_merge(new))
    lo = bisect_left(ts, event)
    hi = bisect_left(ts, a_ddl) if a_ddl >= event else lo  # periods [ts[k], ts[k+1]) for lo <= k < hi
    durs = []
    for k in range(lo, hi):
        allocs.setdefault(ts[k], 0)
        durs.append((ddl if ts[k + 1] == a_ddl else ts[k + 1]) - ts[k])

    last_q = 0
    for q in e.levels:
        if q > total:
            break
        acc = 0.0
        point = None
        for k in range(hi - 1, lo - 1, -1):
            f = fs[k]
            a = q if f >= q else min(q, e.floor(f))
            if a == 0:
                continue
            acc += durs[k - lo] * rate[a]
            if acc >= remaining:
                point = ts[k]
                break
        if point is None:
            last_q = q
            continue
        # Forward: previous level before `point`, this level from it, until the work is done.
        for k in range(lo, hi):
            a = min(q if ts[k] >= point else last_q, e.floor(fs[k]))
            allocs[ts[k]] = a
            fs[k] -= a
            if a == 0:
                continue
            it = durs[k - lo] * rate[a]
            if ts[k] < point or it < remaining:
                remaining -= it
                continue
            end, real_end = finish(ts[k], a, remaining)
            close(end)
            return _EfPlan(_plain_merged(allocs), end, real_end, real_end <= ddl, _plain_merge(new))
        k = new.key(a_ddl)
        a = min(q, e.floor(fs[k]))
        if a == 0:
            break
        allocs[a_ddl] = a
        fs[k] -= a
        end, real_end = finish(a_ddl, a, remaining)
        close(end)
        return _EfPlan(_plain_merged(allocs), end, real_end, real_end <= ddl, _plain_merge(new))

    # No level meets the deadline: the largest level (as free GPUs allow) up to the deadline...
    top = last_q or e.levels[0]
    for k in range(lo, hi):
        a = min(top, e.floor(fs[k]))
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
        q = min(e.floor(new.fs[i]), e.max_gpu)
        allocs[last] = q
        if q:
            it = (nxt_t - last) * rate[q]
            if it >= remaining:
                real_end = math.ceil(last + remaining / rate[q])
                end = ef_align(now, real_end, slot)
                new.add(last, end, -q)
                close(end)
                return _EfPlan(_plain_merged(allocs), end, real_end, real_end <= ddl, _plain_merge(new))
            remaining -= it
            new.fs[i] -= q
        last = nxt_t
    q = e.max_gpu
    allocs[last] = q
    real_end = math.ceil(last + remaining / rate[q])
    end = ef_align(now, real_end, slot)
    new.add(last, end, -q)
    close(end)
    return _EfPlan(_plain_merged(allocs), end, real_end, real_end <= ddl, _plain_merge(new))


class ReferencePromptTuner(PromptTunerPolicy):
    """prompttuner with the commitment test as first written (three full planning passes)."""

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
            view = JobView(job.job_id, job.model, job.global_batch, job.arrival_s, job.deadline_s,
                           "queued", 0, job.min_gpus, job.max_gpus, job.allowed_gpus, work,
                           job.throughput)
            ef[job.job_id] = _EfJob(view, levels, {g: job.rate(g) for g in levels}, levels[-1])
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

        late = failing(base) or set()  # committed jobs already behind do not block new ones
        # One pass in deadline order: a candidate is kept if its own plan meets its deadline...
        steps = _Steps.empty(now_s, gpu_budget)
        accepted = []
        for e in sorted(base + [ef[j.job_id] for j in pending],
                        key=lambda e: (e.view.deadline_s, e.view.arrival_s, e.view.job_id)):
            plan = _min_share(e, now_s, slot, gpu_budget, steps)
            if e.view.job_id in done:
                steps = plan.steps
            elif plan.ok:
                steps = plan.steps
                accepted.append(e)
        # ... and the kept ones together must not make a committed job miss; if they do, test
        # them one at a time (rare).
        group = base + accepted
        if failing(group, stop={e.view.job_id for e in group} - late) is None:
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
