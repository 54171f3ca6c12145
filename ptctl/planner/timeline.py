"""The shared timeline planner: ElasticFlow's Minimum Satisfactory Share of one job on a
free-GPU timeline (a step function over slot-aligned periods). `elasticflow` plans every job with
it; `prompttuner` uses it to test whether a job can be committed."""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field
from itertools import compress, islice
from operator import ne

from ptctl.planner.interface import JobView


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
