"""Planner: throughput fit, convergence refit, GPU need, ElasticFlow's satisfactory share, and
property tests that no policy breaks the GPU budget or a job's bounds."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from ptctl.errors import BadInputError
from ptctl.planner.convergence import ConvergenceEstimate, from_bank_prediction, refit
from ptctl.planner.elasticflow import ElasticFlowPolicy, elasticflow_gpu_cap
from ptctl.planner.gpu_need import ClusterModel, ResizeCost, elasticflow_overhead_s, gpu_need
from ptctl.planner.interface import JobView
from ptctl.planner.policies import POLICIES, decide
from ptctl.planner.prompttuner import PromptTunerPolicy, PromptTunerSettings
from ptctl.planner.throughput import ThroughputCurve, fit_usl
from ptctl.planner.timeline import _EfJob, _min_share, _Steps, ef_align
from ptctl.planner.views import allowed_gpu_counts, job_view
from reference_planner import ReferencePromptTuner, reference_min_share

LINEAR = ThroughputCurve("m", 32, {1: 1.0, 2: 2.0, 4: 4.0, 8: 8.0})


def view(job_id="j", remaining=100.0, deadline=1000.0, gpus=0, curve=LINEAR, **kw) -> JobView:
    return JobView(job_id, curve.model, curve.global_batch, kw.pop("arrival", 0.0), deadline,
                   "running" if gpus else "queued", gpus, kw.pop("min_gpus", 1),
                   kw.pop("max_gpus", 8), curve.allowed_gpus, remaining, curve, **kw)


def test_usl_fit_recovers_curve_and_prices_unmeasured_counts():
    true = {g: 10 * g / (1 + 0.1 * (g - 1) + 0.01 * g * (g - 1)) for g in (1, 2, 4, 8)}
    x1, s, k = fit_usl(true)
    assert (x1, round(s, 3), round(k, 4)) == (10, 0.1, 0.01)
    curve = ThroughputCurve("m", 8, true)
    assert curve.rate(16) == pytest.approx(10 * 16 / (1 + 1.5 + 0.01 * 240))


def test_observed_progress_is_learned():
    curve = ThroughputCurve("m", 8, {1: 1.0})
    curve.observe(2, 30, 10)
    assert curve.rate(2) == 3.0 and curve.allowed_gpus == (1, 2)
    with pytest.raises(BadInputError, match="seconds=0"):
        curve.observe(2, 1, 0)


def test_convergence_refit_moves_towards_the_curve():
    steps = np.arange(0, 400, 20)
    losses = 0.5 + 3.0 * (steps + 1.0) ** -0.5
    target = 0.5 + 3.0 * (1001.0) ** -0.5  # reached at step 1000
    prior = from_bank_prediction(3000, 0.5)
    est = refit(prior, steps, losses, target)
    assert 900 < est.total_iterations < 1300
    assert est.sd_iterations < prior.sd_iterations
    assert est.remaining(done=400, z=0) == pytest.approx(est.total_iterations - 400)
    with pytest.raises(BadInputError, match="total_iterations"):
        ConvergenceEstimate(0, 1)


def test_gpu_need_counts_resize_cost():
    cluster = ClusterModel(8, resize_cost=ResizeCost(10, 10, 10, 70))
    # 400 iterations, deadline in 250 s: 2 GPUs take 200 s + 100 s start > 250; 4 GPUs fit.
    assert gpu_need(400, 0, 250, LINEAR.rate, LINEAR.allowed_gpus, 0, cluster) == 4
    # Already running on 2 GPUs: no resize, 200 s fits.
    assert gpu_need(400, 0, 250, LINEAR.rate, LINEAR.allowed_gpus, 2, cluster) == 2
    assert gpu_need(400, 0, 40, LINEAR.rate, LINEAR.allowed_gpus, 0, cluster) is None


def test_elasticflow_overhead_and_caps():
    assert elasticflow_overhead_s(8, changed=False) == 2
    assert elasticflow_overhead_s(8, changed=True) == 2 + 2 * 4
    assert elasticflow_overhead_s(8, changed=True, restart=True, cluster_gpus=256) == 7 + 47 + 8
    assert elasticflow_overhead_s(8, changed=False, restart=True, cluster_gpus=512) == 7
    assert elasticflow_gpu_cap("bert", 64) == 8 and elasticflow_gpu_cap("deepspeech2", 32) == 32
    assert elasticflow_gpu_cap("vgg16", 128) == 64


def _ef_job(job: JobView, total: int):
    return ElasticFlowPolicy._ef_job(job, total)


def test_min_share_is_the_smallest_level_over_whole_periods():
    empty = _Steps.empty(0.0, 8)
    # 600 iterations by t=300: 1 GPU gives 300 < 600, 2 GPUs give exactly 600.
    plan = _min_share(_ef_job(view(remaining=600, deadline=300), 8), 0.0, 60.0, 8, empty)
    assert plan.ok and plan.allocs == [(0.0, 2)] and plan.real_end == 300 and plan.end == 300
    # On an empty timeline [0, 300) is one period: 120 iterations on 1 GPU start now and end at
    # 120 s (ElasticFlow walks periods, not slots); the timeline gets the GPU back at 120 s.
    plan = _min_share(_ef_job(view(remaining=120, deadline=300), 8), 0.0, 60.0, 8, empty)
    assert plan.ok and plan.allocs == [(0.0, 1)] and plan.real_end == 120
    assert plan.steps.ts == [0.0, 120.0] and plan.steps.fs == [7, 8]
    assert empty.ts == [0.0] and empty.fs == [8]  # the input timeline is not modified


def test_min_share_reserves_the_latest_period_and_falls_back_past_the_deadline():
    busy = _Steps([0.0, 180.0], [0, 4])  # nothing free before 180 s
    ej = _ef_job(view(remaining=120, deadline=300, max_gpus=4), 4)
    plan = _min_share(ej, 0.0, 60.0, 4, busy)
    assert plan.ok and plan.allocs == [(0.0, 0), (180.0, 1)] and plan.real_end == 300
    late = _min_share(_ef_job(view(remaining=10_000, deadline=300, max_gpus=4), 4), 0.0, 60.0, 4, busy)
    assert not late.ok and late.real_end > 300 and max(g for _, g in late.allocs) == 4


def test_ef_align_rounds_up_to_the_slot_grid_of_now():
    assert ef_align(10.0, 10.0, 60.0) == 10.0
    assert ef_align(10.0, 11.0, 60.0) == 70.0
    assert ef_align(10.0, 130.0, 60.0) == 130.0


def test_elasticflow_admission_fails_when_an_admitted_job_cannot_finish():
    """ElasticFlow declines an arrival whenever any plan fails, even an already-admitted job's
    (e.g. one that lost progress to overheads): that job blocks every admission until it ends."""
    cluster = ClusterModel(8, slot_s=60)
    doomed = view("a", remaining=10_000, deadline=300, memory={"ef_admitted": True})
    small = view("b", remaining=60, deadline=600)
    actions = [d.action for d in decide("elasticflow", 0.0, 8, [doomed, small], cluster)]
    assert actions == ["start", "decline"]
    ok = view("a", remaining=600, deadline=300, memory={"ef_admitted": True})
    actions = [d.action for d in decide("elasticflow", 0.0, 8, [ok, small], cluster)]
    assert actions == ["start", "start"]


def test_elasticflow_declines_what_it_cannot_guarantee_and_fills_leftover():
    cluster = ClusterModel(8, slot_s=60)
    jobs = [view("a", remaining=600, deadline=300), view("b", remaining=10_000, deadline=300)]
    # Arrivals of one round are admitted or declined together, as in ElasticFlow's simulator.
    assert [d.action for d in decide("elasticflow", 0.0, 8, jobs, cluster)] == ["decline"] * 2
    jobs[0].memory = {"ef_admitted": True}
    decisions = decide("elasticflow", 0.0, 8, jobs, cluster)
    assert [d.action for d in decisions] == ["start", "decline"]
    assert decisions[0].gpus == 8  # minimum share 2, leftover GPUs go to it too
    # The end of the allocation it got (8 GPUs), not of its minimum share (300): ElasticFlow's
    # `real_end_time`, the deadline check.
    assert decisions[0].memory["ef_real_end_s"] == 75
    assert decisions[1].memory == {"ef_admitted": False}


def test_prompttuner_commits_only_what_keeps_committed_jobs_on_time():
    """No declines: a burst job that would make a committed job miss is served after the committed
    ones (and re-tested later); one that fits alongside them is committed at once."""
    cluster = ClusterModel(8, slot_s=60, resize_cost=ResizeCost(0, 0, 0, 0))
    held = view("a", remaining=800, deadline=100, gpus=8, memory={"pt_committed": True})
    burst = view("b", remaining=400, deadline=100)
    later = view("c", remaining=400, deadline=1000)
    decisions = decide("prompttuner", 0.0, 8, [held, burst, later], cluster)
    assert [d.memory.get("pt_committed") for d in decisions] == [True, False, True]
    assert [d.gpus for d in decisions] == [8, 0, 0]  # the committed job keeps what it needs
    assert all(d.action != "decline" for d in decisions)
    # Once the committed job is done the burst job is re-tested and committed.
    decisions = decide("prompttuner", 100.0, 8, [view("b", remaining=400, deadline=1000,
                                                      memory={"pt_committed": False})], cluster)
    assert decisions[0].memory["pt_committed"] is True and decisions[0].gpus > 0


def test_prompttuner_does_not_preempt_a_job_for_one_that_can_wait():
    """Equal jobs with distant deadlines do not take turns (each turn costs a checkpoint and a
    restart): the queued ones start as the running ones end. A queued job that would miss its
    deadline by waiting does preempt."""
    cluster = ClusterModel(2, slot_s=60, resize_cost=ResizeCost(5, 5, 5, 5))
    single = ThroughputCurve("m", 32, {1: 1.0})

    def job(job_id, remaining, deadline, gpus=0):
        return view(job_id, remaining=remaining, deadline=deadline, gpus=gpus, curve=single,
                    max_gpus=1, memory={"pt_committed": True})

    # Two running jobs have made progress, so they have more slack than the queued ones.
    jobs = [job("r1", 20, 86400, gpus=1), job("r2", 30, 86400, gpus=1)] + [
        job(f"q{i}", 60, 86400) for i in range(4)]
    decisions = decide("prompttuner", 0.0, 2, jobs, cluster)
    assert [(d.job_id, d.action, d.gpus) for d in decisions[:2]] == [
        ("r1", "keep", 1), ("r2", "keep", 1)]
    assert all(d.gpus == 0 for d in decisions[2:])
    # q0 cannot wait 20 s for r1 to end: it takes a GPU now, from the job with most slack.
    jobs[2] = job("q0", 60, 90)
    decisions = {d.job_id: d.gpus for d in decide("prompttuner", 0.0, 2, jobs, cluster)}
    assert decisions["q0"] == 1 and sum(decisions.values()) == 2


def test_a_job_that_cannot_make_its_deadline_runs_where_lateness_is_cheapest():
    """Infeasible at every count: reported at once and run at the count minimising GPU-hours +
    price x hours late (price = late_gpu_hours_per_hour, 0 by default: the most efficient
    count), not at its fastest count."""
    cluster = ClusterModel(8, slot_s=60)  # a start costs 55 s, a resize 75 s
    sublinear = ThroughputCurve("m", 32, {1: 1.0, 2: 1.8, 4: 3.0, 8: 4.0})
    job = view(remaining=10_000, deadline=100, curve=sublinear)
    # (g + 1) x (55 + 10000 / rate): 20110, 16830, 16940, 22995 GPU-seconds -> 2 GPUs.
    for price, gpus in ((0.0, 1), (1.0, 2), (1000.0, 8)):
        policy = PromptTunerPolicy(PromptTunerSettings(late_gpu_hours_per_hour=price))
        [decision] = decide(policy, 0.0, 8, [job], cluster)
        assert (decision.action, decision.gpus) == ("infeasible", gpus)
    [decision] = decide("prompttuner", 0.0, 8, [job], cluster)
    assert (decision.action, decision.gpus) == ("infeasible", 1)
    # Equally efficient counts (a linear curve, free resizes): the fastest of them.
    free = ClusterModel(8, slot_s=60, resize_cost=ResizeCost(0, 0, 0, 0))
    [decision] = decide("prompttuner", 0.0, 8, [view(remaining=10_000, deadline=100)], free)
    assert (decision.action, decision.gpus) == ("infeasible", 8)
    # Running at 2 at price 1, it stays: moving to 1 saves less than its checkpoint and restart.
    running = view(remaining=10_000, deadline=100, gpus=2, curve=sublinear)
    policy = PromptTunerPolicy(PromptTunerSettings(late_gpu_hours_per_hour=1.0))
    [decision] = decide(policy, 0.0, 8, [running], cluster)
    assert (decision.action, decision.gpus) == ("infeasible", 2)


def test_a_job_on_time_only_without_its_margin_runs_at_the_count_that_makes_it():
    """Late with remaining + z*sd at every count, on time with its estimate alone: not
    infeasible; it runs best-effort at the smallest count on time for the estimate."""
    cluster = ClusterModel(8, slot_s=60, resize_cost=ResizeCost(0, 0, 0, 0))
    # At most 4 GPUs: 300 iterations take 75 s there, 300 + 100 take 100 s.
    job = view(remaining=300, remaining_sd=100, deadline=90, max_gpus=4)
    [decision] = decide("prompttuner", 0.0, 8, [job], cluster)
    assert (decision.action, decision.gpus) == ("start", 4)


def test_allowed_gpu_counts_are_whole_nodes_past_one_node_and_table_points_when_given():
    # The live rule: every count up to a node, then whole nodes, within the bounds and budget.
    assert allowed_gpu_counts(2, 64, budget=24, gpus_per_node=8) == (2, 3, 4, 5, 6, 7, 8, 16, 24)
    # The simulator's: a throughput table's columns, under the same bounds and node rule.
    assert allowed_gpu_counts(2, 64, budget=24, gpus_per_node=8,
                              levels=(1, 2, 4, 8, 12, 16, 32)) == (2, 4, 8, 16)
    assert allowed_gpu_counts(16, 64, budget=8, gpus_per_node=8) == ()


def test_job_view_is_running_exactly_when_it_holds_gpus():
    allowed = allowed_gpu_counts(1, 8, budget=8, gpus_per_node=8, levels=LINEAR.allowed_gpus)
    queued = job_view("q", "m", 32, 0.0, 100.0, gpus=0, allowed_gpus=allowed,
                      remaining_iterations=10.0, throughput=LINEAR)
    memory = {"ef_admitted": True}
    running = job_view("r", "m", 32, 0.0, 100.0, gpus=4, allowed_gpus=allowed,
                       remaining_iterations=10.0, throughput=LINEAR, memory=memory)
    assert (queued.state, queued.gpus, running.state, running.gpus) == ("queued", 0, "running", 4)
    assert (running.min_gpus, running.max_gpus, running.allowed_gpus) == (1, 8, (1, 2, 4, 8))
    assert running.memory == memory and running.memory is not memory
    with pytest.raises(BadInputError, match="no GPU count"):
        job_view("x", "m", 32, 0.0, 100.0, gpus=0, allowed_gpus=(), remaining_iterations=1.0,
                 throughput=LINEAR)


def test_jobview_validation_names_field():
    with pytest.raises(BadInputError, match="state='done'"):
        JobView("x", "m", 32, 0, 10, "done", 0, 1, 8, (1,), 1.0, LINEAR)
    with pytest.raises(BadInputError, match="min_gpus"):
        view(min_gpus=4, max_gpus=2)


CURVES = [LINEAR, ThroughputCurve("s", 16, {1: 5.0, 2: 8.0, 4: 11.0, 16: 14.0}),
          ThroughputCurve("t", 64, {2: 3.0, 4: 5.5, 8: 9.0})]


@st.composite
def scenarios(draw):
    budget = draw(st.integers(1, 40))
    now = draw(st.floats(0, 1000))
    jobs = []
    used = 0
    for i in range(draw(st.integers(0, 12))):
        curve = draw(st.sampled_from(CURVES))
        allowed = curve.allowed_gpus
        lo = draw(st.sampled_from(allowed))
        hi = draw(st.sampled_from([g for g in allowed if g >= lo]))
        bounded = [g for g in allowed if lo <= g <= hi]
        gpus = draw(st.sampled_from([0] + [g for g in bounded if used + g <= budget]))
        used += gpus
        memory = draw(st.sampled_from([{}, {"ef_admitted": True}, {"infless_gpus": bounded[0]},
                                       {"last_resize_s": now - 10}]))
        jobs.append(JobView(f"j{i}", curve.model, curve.global_batch, now - draw(st.floats(0, 500)),
                            now + draw(st.floats(-100, 5000)), "running" if gpus else "queued",
                            gpus, lo, hi, allowed, draw(st.floats(0, 20000)), curve,
                            remaining_sd=draw(st.floats(0, 500)),
                            memory=memory))
    return now, budget, jobs


@settings(max_examples=60, deadline=None)
@given(scenarios(), st.sampled_from(sorted(POLICIES)),
       st.sampled_from(["resize", "elasticflow"]))
def test_no_policy_exceeds_budget_or_job_bounds(scenario, policy, overhead):
    now, budget, jobs = scenario
    cluster = ClusterModel(max(budget, 1), overhead_model=overhead)
    decisions = decide(policy, now, budget, jobs, cluster)
    assert [d.job_id for d in decisions] == [j.job_id for j in jobs]
    assert sum(d.gpus for d in decisions) <= budget
    for job, d in zip(jobs, decisions):
        assert d.gpus == 0 or (d.gpus in job.allowed_gpus and job.min_gpus <= d.gpus <= job.max_gpus)
        assert d.action in ("start", "resize", "keep", "infeasible", "decline")
        assert math.isfinite(d.predicted_finish_s) if d.predicted_finish_s is not None else True
    assert decide(policy, now, budget, jobs, cluster) == decisions  # pure: same input, same output


# --------------------------------------------------------------------------- fast == plain planner

UNEVEN = [ThroughputCurve("u", 32, {1: 10.0, 2: 16.5, 4: 24.3, 8: 30.5, 16: 32.3, 32: 28.7}),
          ThroughputCurve("v", 32, {1: 0.8, 2: 1.5, 4: 2.8, 8: 4.9, 16: 7.4, 32: 9.4}),
          ThroughputCurve("w", 16, {2: 3.0, 4: 2.5, 16: 9.0})]  # not monotone: 4 < 2


def _random_timeline(rnd, now, slot, total):
    points = sorted(rnd.sample(range(1, 400), rnd.randint(0, 40)))
    ts = [now] + [now + p * slot + (rnd.choice([0, 0, 0, 17.5]) if rnd.random() < 0.1 else 0)
                  for p in points]
    ts = sorted(set(ts))
    return _Steps(ts, [rnd.randint(0, total) for _ in ts]).merge()


def test_fast_min_share_plans_exactly_as_the_plain_walk():
    rnd = random.Random(5)
    for case in range(1500):
        total = rnd.choice([4, 8, 16, 64])
        now, slot = rnd.choice([0.0, 1234.5]), rnd.choice([60.0, 240.0])
        orig = _random_timeline(rnd, now, slot, total)
        before = (list(orig.ts), list(orig.fs))
        curve = rnd.choice(UNEVEN + [LINEAR])
        levels = [g for g in curve.allowed_gpus if g <= total][:rnd.randint(1, 6)]
        job = view(f"j{case}", remaining=rnd.choice([0.0, rnd.uniform(1, 3e5)]),
                   deadline=now + rnd.uniform(-500, 30000), curve=curve, max_gpus=32)
        e = _EfJob(job, levels, {g: curve.rate(g) for g in levels}, levels[-1],
                   work=rnd.choice([None, rnd.uniform(1, 1e5)]))
        first = rnd.choice([None, None, rnd.choice(levels)])
        fast = _min_share(e, now, slot, total, orig, first)
        plain = reference_min_share(e, now, slot, total, orig, first)
        assert (fast.allocs, fast.end, fast.real_end, fast.ok) == \
            (plain.allocs, plain.end, plain.real_end, plain.ok), case
        assert (fast.steps.ts, fast.steps.fs) == (plain.steps.ts, plain.steps.fs), case
        assert (orig.ts, orig.fs) == before


def test_fast_commitment_test_decides_as_the_three_pass_one():
    """The one-pass commitment test (misses of committed jobs taken from the deadline-ordered
    pass) gives the same decisions as replanning committed jobs alone and with the candidates."""
    rnd = random.Random(11)
    fallback = 0
    for case in range(120):
        budget = rnd.choice([4, 8, 16, 32])
        cluster = ClusterModel(budget, slot_s=60.0, overhead_model=rnd.choice(["resize", "elasticflow"]))
        jobs, used = [], 0
        for i in range(rnd.randint(1, 40)):
            curve = rnd.choice(UNEVEN)
            gpus = rnd.choice([g for g in (0,) + curve.allowed_gpus if used + g <= budget])
            used += gpus
            memory = {"pt_committed": rnd.choice([True, False])} if rnd.random() < 0.6 else {}
            jobs.append(JobView(f"j{i}", curve.model, curve.global_batch, 0.0,
                                rnd.uniform(100, 8000), "running" if gpus else "queued", gpus, 1,
                                32, curve.allowed_gpus, rnd.uniform(0, 60000), curve,
                                remaining_sd=rnd.uniform(0, 200), memory=memory))
        fast = decide(PromptTunerPolicy(), 0.0, budget, jobs, cluster)
        plain = decide(ReferencePromptTuner(), 0.0, budget, jobs, cluster)
        assert fast == plain, case
        fallback += any(d.memory.get("pt_committed") is False and j.memory.get("pt_committed") is None
                        for j, d in zip(jobs, fast))
    assert fallback > 10  # the scenarios do exercise refused commitments


def test_elasticflow_breaks_deadline_ties_in_its_job_list_order():
    """ElasticFlow sorts its job list by deadline stably: jobs with equal deadlines keep the order
    of its list after the last round (`ef_order`), not their arrival order."""
    one = ThroughputCurve("m", 1, {1: 1.0})
    cluster = ClusterModel(1, slot_s=60)
    a = view("a", remaining=100, deadline=200, curve=one, max_gpus=1, arrival=0.0,
             memory={"ef_admitted": True, "ef_order": 1})
    b = view("b", remaining=100, deadline=200, curve=one, max_gpus=1, arrival=1.0,
             memory={"ef_admitted": True, "ef_order": 0})
    assert [d.gpus for d in decide("elasticflow", 0.0, 1, [a, b], cluster)] == [0, 1]
    a.memory, b.memory = {"ef_admitted": True}, {"ef_admitted": True}
    assert [d.gpus for d in decide("elasticflow", 0.0, 1, [a, b], cluster)] == [1, 0]
