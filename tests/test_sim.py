"""Simulator: trace readers (both ElasticFlow spellings, ptctl's format, malformed rows),
determinism, the generator, the `ptctl sim` CLI, and its figures on ElasticFlow's 195job trace
(read from the repository's data/elasticflow: a missing file fails, it does not skip)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from importlib.resources import files
from pathlib import Path

import pytest

from ptctl.errors import BadInputError
from ptctl.planner.convergence import PREDICTION_RELATIVE_SD, from_bank_prediction
from ptctl.planner.gpu_need import ClusterModel, ResizeCost
from ptctl.planner.policies import POLICIES
from ptctl.sim.engine import simulate
from ptctl.sim.gen import (GenSpec, generate, load_convergence, load_measured_starts,
                           prompt_tuning_throughputs)
from ptctl.sim.results import SimConfig
from ptctl.sim.traces import read_trace, write_ptctl_trace

EF_DATA = Path(__file__).resolve().parents[1] / "data/elasticflow"
TPUT = EF_DATA / "throughputs_A100"
HEADER_A = "job_id,submission_time,num_iteration,model_name,deadline,batch_size,num_gpu,duration\n"
HEADER_B = "job_id,submit_time,iteration,model_name,ddl,batch_size\n"


def write(tmp_path: Path, text: str, name="t.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def ef_table():
    from ptctl.planner.throughput import ThroughputTable
    return ThroughputTable.from_elasticflow_dir(TPUT)


def test_both_elasticflow_spellings(tmp_path, ef_table):
    a = read_trace(write(tmp_path, HEADER_A + "x,10,500,bert,900,64,1,100\n", "a.csv"), ef_table)
    b = read_trace(write(tmp_path, HEADER_B + "x,10,500,bert,900,64\n", "b.csv"), ef_table)
    assert a == b and a[0].iterations == 500 and a[0].deadline_s == 900 and a[0].max_gpus == 64


@pytest.mark.parametrize("text, message", [
    ("job_id,submission_time,model_name,deadline,batch_size\nx,1,bert,9,64\n", "missing column 'num_iteration'"),
    (HEADER_B + "x,-5,500,bert,900,64\n", "row 2, column 'submit_time': -5 must be >= 0"),
    (HEADER_B + "x,1,500,bert,900,64\ny,10,500,bert,5,64\n", "row 3, column 'ddl': deadline 5 is not after arrival 10"),
    (HEADER_B + "x,1,500,llama,900,64\n", "row 2, column 'model_name': unknown model 'llama'"),
    (HEADER_B + "x,1,abc,bert,900,64\n", "row 2, column 'iteration': 'abc' is not a number"),
])
def test_malformed_traces_name_row_and_column(tmp_path, ef_table, text, message):
    with pytest.raises(BadInputError, match=message):
        read_trace(write(tmp_path, text), ef_table)


def test_ptctl_format_round_trip_and_errors(tmp_path):
    table = prompt_tuning_throughputs()
    jobs = generate(GenSpec(jobs=20, seed=3))
    path = tmp_path / "pt.csv"
    write_ptctl_trace(path, jobs)
    again = read_trace(path, table)
    assert [(j.job_id, j.iterations_bank, j.iterations_predicted, j.predicted_sd_log)
            for j in again] == [
        (j.job_id, j.iterations_bank, j.iterations_predicted, j.predicted_sd_log) for j in jobs]
    bad = path.read_text().replace(",gpt-large,", ",gpt-huge,", 1)
    with pytest.raises(BadInputError, match=r"column 'model': unknown model 'gpt-huge'"):
        read_trace(write(tmp_path, bad, "bad.csv"), table)
    # The prediction columns are optional: a trace without them has no bank predictions, and
    # one without the spread plans its predictions with the measured one.
    lines = path.read_text().splitlines()
    no_spread = "\n".join(line.rsplit(",", 1)[0] for line in lines) + "\n"
    jobs = read_trace(write(tmp_path, no_spread, "s.csv"))
    assert all(j.predicted_sd_log is None and j.iterations_predicted for j in jobs)
    bare = "\n".join(line.rsplit(",", 2)[0] for line in lines) + "\n"
    assert all(j.iterations_predicted is None for j in read_trace(write(tmp_path, bare, "b.csv")))


def test_generator_resamples_the_measured_starts():
    """Each job's start is one measured run of one held-out task: its step ratio to a random
    start and its prediction error come from the same run, so the tasks the bank slows appear."""
    runs = {run for task in load_measured_starts() for run in task}
    jobs = generate(GenSpec(jobs=300, seed=1))
    assert generate(GenSpec(jobs=300, seed=1)) == jobs
    seen = set()
    for j in jobs:
        matching = {(ratio, error, sd_log) for ratio, error, sd_log in runs
                    if j.iterations_bank == max(10, round(j.iterations * ratio))
                    and j.iterations_predicted == max(1, round(j.iterations_bank * error))
                    and j.predicted_sd_log == sd_log}
        assert matching, j
        seen |= matching
    assert seen == runs  # 300 draws reach every measured run
    assert all(j.predicted_sd_log is not None for j in jobs)  # the query's own spread
    assert any(j.iterations_bank > j.iterations for j in jobs)


def test_the_planner_gives_a_prediction_the_measured_spread():
    """The live scheduler and the simulator plan a bank prediction with the relative sd the
    held-out runs measured (benchmarks/measured_starts.py writes it next to the runs)."""
    measured = json.loads((files("ptctl.sim") / "measured_starts.json").read_text())
    assert PREDICTION_RELATIVE_SD == measured["prediction_rms_relative_error"]
    assert from_bank_prediction(200).sd_iterations == pytest.approx(200 * PREDICTION_RELATIVE_SD)


def test_the_simulator_plans_a_prediction_with_the_spread_its_query_stated():
    """As `ptctl rebalance` takes a job's `predicted_steps_sd_log`, the simulator takes each
    job's `predicted_sd_log`: a narrow one plans tighter (fewer GPU-hours) than a wide one."""
    from dataclasses import replace

    config = SimConfig(ClusterModel(32), prompt_tuning_throughputs(), estimate_rel_sd=0.2)
    jobs = generate(GenSpec(jobs=40, rate_per_hour=40, seed=0))
    hours = {sd: simulate([replace(j, predicted_sd_log=sd) for j in jobs], "prompttuner",
                          config).summary()["gpu_hours"] for sd in (0.1, 2.0)}
    assert hours[0.1] < hours[2.0]


def test_measured_starts_prefer_the_prediction_runs_and_count_censored_runs(tmp_path):
    """benchmarks/measured_starts.py: heldout_convergence's bank rows when there is no
    heldout_prediction/runs.jsonl, the runs when there is (rows with no recorded run left
    out); a censored run counts max_steps + eval_every, a step-0 start one evaluation."""
    from helpers import benchmark_module

    builder = benchmark_module("measured_starts")
    (tmp_path / "heldout_convergence").mkdir()
    settings = {"eval_every": 10}

    def run(task, init, seed, steps, predicted=None):
        return {"task": task, "init": init, "seed": seed, "steps_to_target": steps,
                "max_steps": 600, "settings": settings,
                "query": {"predicted_steps": predicted} if predicted else None}

    rows = [run("t", "random", 0, 200), run("t", "random", 1, None),
            run("t", "bank", 0, 50, predicted=100), run("t", "bank", 1, 0, predicted=30)]
    (tmp_path / "heldout_convergence" / "a.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in rows))
    table = builder.build(tmp_path)
    assert "heldout_convergence" in table["source"]
    assert [(r["start_over_random"], r["predicted_over_measured"]) for r in table["tasks"]["t"]] \
        == [(0.25, 2.0), (0.0164, 3.0)]  # seed 1: step 0 counts one interval: 10 / 610; 30 / 10
    (tmp_path / "heldout_prediction").mkdir()
    picks = [{"task": "t", "seed": 0, "init_picked": "random", "predicted_steps": 300,
              "measured_steps": 200, "max_steps": 600},
             {"task": "t", "seed": 1, "init_picked": "text", "predicted_steps": 100,
              "measured_steps": None, "max_steps": 600, "recorded": False}]
    (tmp_path / "heldout_prediction" / "runs.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in picks))
    table = builder.build(tmp_path)
    assert "runs.jsonl" in table["source"]
    assert table["tasks"]["t"] == [{"seed": 0, "init": "random", "start_over_random": 1.0,
                                    "predicted_over_measured": 1.5}]
    assert json.loads(builder.to_json(table)) == table


def test_generator_is_deterministic_and_uses_convergence(tmp_path):
    assert generate(GenSpec(jobs=30, seed=7)) == generate(GenSpec(jobs=30, seed=7))
    conv_file = write(tmp_path, json.dumps({"bank_over_random_median": 0.25,
                                            "bank_over_random_sigma": 0}), "c.json")
    jobs = generate(GenSpec(jobs=30, seed=7), load_convergence(conv_file))
    assert all(j.iterations_bank == pytest.approx(j.iterations * 0.25, abs=1) for j in jobs)
    # A modelled ratio is not a measurement: its jobs carry no bank prediction.
    assert all(j.iterations_predicted is None for j in jobs)
    # Around a median of 1 the bank's start is sometimes worse than a random one.
    neutral = write(tmp_path, '{"bank_over_random_median": 1.0, "bank_over_random_sigma": 0.3}',
                    "n.json")
    jobs = generate(GenSpec(jobs=60, seed=7), load_convergence(neutral))
    assert any(j.iterations_bank > j.iterations for j in jobs)
    assert any(j.iterations_bank < j.iterations for j in jobs)
    with pytest.raises(BadInputError, match="unknown key 'ratio'"):
        load_convergence(write(tmp_path, '{"ratio": 1}', "d.json"))
    with pytest.raises(BadInputError, match="bank_over_random_sigma needs bank_over_random_median"):
        load_convergence(write(tmp_path, '{"bank_over_random_sigma": 1}', "e.json"))


@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_runs_are_deterministic_and_account_every_job(policy):
    jobs = generate(GenSpec(jobs=40, rate_per_hour=60, seed=1))
    config = SimConfig(ClusterModel(16), prompt_tuning_throughputs(), seed=5, estimate_rel_sd=0.2)
    first, second = simulate(jobs, policy, config), simulate(jobs, policy, config)
    assert first.summary() == second.summary()
    assert first.job_rows() == second.job_rows()
    s = first.summary()
    assert s["jobs"] == 40 and 0 <= s["met_deadline"] <= 40
    assert s["met_deadline"] + s["late"] + s["declined"] + s["unfinished"] == 40
    assert max(u for _, u in first.timeline) <= 16


def test_the_scheduler_alone_beats_baselines_on_a_small_trace():
    """Without a Prompt Bank effect (every start as slow as a random one), `prompttuner` meets
    more deadlines than INFless and ElasticFlow on this trace, and spends fewer GPU-hours."""
    jobs = generate(GenSpec(jobs=60, rate_per_hour=40, seed=2),
                    {**load_convergence(None), "bank_over_random_median": 1.0})
    config = SimConfig(ClusterModel(32), prompt_tuning_throughputs(), estimate_rel_sd=0.2)
    ours = simulate(jobs, "prompttuner", config).summary()
    for baseline in ("infless", "elasticflow"):
        theirs = simulate(jobs, baseline, config).summary()
        assert ours["met_deadline"] >= theirs["met_deadline"]
        assert ours["gpu_hours"] < theirs["gpu_hours"]


def test_bank_users_see_a_job_only_after_its_bank_search():
    """The search runs at submit (as `ptctl submit` does): the planner first sees the job when it
    is done, so it plans with the time that is really left."""
    [job] = generate(GenSpec(jobs=1, rate_per_hour=10, seed=3))
    config = SimConfig(ClusterModel(32), prompt_tuning_throughputs(), bank_lookup_s=30.0)
    ours, theirs = simulate([job], "prompttuner", config), simulate([job], "infless", config)
    assert ours.timeline[0][0] == job.arrival_s + 30.0
    assert theirs.timeline[0][0] == job.arrival_s
    assert ours.outcomes[0].arrival_s == job.arrival_s  # the search counts in its JCT


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ptctl", "sim", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def test_cli_gen_run_compare(tmp_path):
    assert run_cli("gen", "--out", "pt.csv", "--jobs", "25", "--seed", "4", cwd=tmp_path).returncode == 0
    proc = run_cli("run", "--trace", "pt.csv", "--policy", "prompttuner", "--gpus", "16",
                   "--jobs-csv", "jobs.csv", "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    for key in ("jobs", "met_deadline", "slo_violation_rate", "deadline_satisfactory_ratio",
                "gpu_hours", "mean_jct_s", "median_jct_s", "resizes"):
        assert key in summary
    assert (tmp_path / "jobs.csv").read_text().startswith("job_id,")
    proc = run_cli("compare", "--trace", "pt.csv", "--policies", "prompttuner,infless",
                   "--gpus", "16", "--plots", "plots", "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert rows[0]["violations_vs_prompttuner"] in (1.0, None)
    assert (tmp_path / "plots/gpu_use.png").stat().st_size > 0


def test_cli_reports_a_hopeless_job_infeasible_and_runs_it_at_its_cheapest_count(tmp_path):
    """30,000 gpt-base iterations in 600 s fit no count (the fastest, 16 GPUs, needs 930 s):
    the job is reported infeasible and runs at its most efficient count, 1 GPU, not at 16
    (whatever the estimate's noise: 1 GPU is the most efficient for any amount of work)."""
    write(tmp_path, "job_id,arrival_s,deadline_s,model,iterations,iterations_bank,global_batch,"
                    "min_gpus,max_gpus\nlate,0,600,gpt-base,30000,30000,32,1,32\n", "hopeless.csv")
    proc = run_cli("run", "--trace", "hopeless.csv", "--policy", "prompttuner", "--gpus", "32",
                   "--jobs-csv", "jobs.csv", "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["reported_infeasible"] == 1
    [row] = list(csv.DictReader((tmp_path / "jobs.csv").open()))
    assert (row["status"], row["reported_infeasible"]) == ("late", "True")
    rate = prompt_tuning_throughputs().curve("gpt-base", 32).rate
    assert max((1, 2, 4, 8, 16, 32), key=rate) == 16
    start_s = ResizeCost().start()
    assert float(row["gpu_hours"]) == pytest.approx((start_s + 30_000 / rate(1)) / 3600)
    # No schedule meets it, and none spends less than this one did.
    assert row["missed_even_alone"] == "True"
    assert float(row["least_gpu_hours"]) == pytest.approx(float(row["gpu_hours"]))


def test_the_floors_count_the_bank_search_and_the_start():
    """A job whose deadline leaves 5 s less than the bank search needs is missed even alone
    by `prompttuner` (which sees it 10 s late) but not by `infless`; a job shorter than its
    start cost is missed by both; the least GPU-seconds are one start plus the work at 1 GPU."""
    from ptctl.planner.policies import get_policy
    from ptctl.sim.engine import least_gpu_seconds, misses_even_alone
    from ptctl.sim.traces import SimJob
    config = SimConfig(ClusterModel(32), prompt_tuning_throughputs())
    rate = prompt_tuning_throughputs().curve("gpt-base", 32).rate
    fastest = max((1, 2, 4, 8, 16, 32), key=rate)
    start_s = ResizeCost().start()
    tight = SimJob("tight", 100.0, 100.0 + start_s + 3000 / rate(fastest) + 5.0, "gpt-base", 32,
                   3000, 3000, 1, 32)
    hopeless = SimJob("hopeless", 0.0, start_s - 1.0, "gpt-base", 32, 10, 10, 1, 32)
    pt, infless = get_policy("prompttuner"), get_policy("infless")
    assert misses_even_alone(tight, pt, config) and not misses_even_alone(tight, infless, config)
    assert misses_even_alone(hopeless, pt, config) and misses_even_alone(hopeless, infless, config)
    assert least_gpu_seconds(tight, pt, config) == pytest.approx(start_s + 3000 / rate(1))


def test_a_job_starts_when_it_arrives_as_ptctl_submit_starts_it():
    """Under Slurm's physics a job that arrives 5 s after a round starts then, on free GPUs, as
    `ptctl submit` launches it, not at the next slot boundary; ElasticFlow's physics keep
    ElasticFlow's slots."""
    from ptctl.sim.traces import SimJob
    table = prompt_tuning_throughputs()
    jobs = [SimJob("a", 0.0, 50_000.0, "gpt-base", 32, 3000, 3000, 1, 32),
            SimJob("b", 5.0, 50_000.0, "gpt-base", 32, 3000, 3000, 1, 32)]
    rate = table.curve("gpt-base", 32).rate
    slurm = {o.job_id: o for o in simulate(jobs, "infless",
                                           SimConfig(ClusterModel(32), table)).outcomes}
    # A distant deadline: INFless's smallest count that fits, 1 GPU, started at arrival.
    assert slurm["b"].finish_s == pytest.approx(5.0 + ResizeCost().start() + 3000 / rate(1))
    ef = SimConfig(ClusterModel(32, overhead_model="elasticflow"), table)
    waited = {o.job_id: o for o in simulate(jobs, "infless", ef).outcomes}
    assert waited["b"].finish_s > 60.0 + 3000 / rate(1)


def test_no_policy_beats_the_floors_on_a_generated_trace():
    """The floors are floors: no job missed even alone meets its deadline, and no finished job
    spends fewer GPU-seconds than its least, under every policy."""
    config = SimConfig(ClusterModel(32), prompt_tuning_throughputs(), estimate_rel_sd=0.2)
    jobs = generate(GenSpec(jobs=120, rate_per_hour=40, seed=3))
    for policy in POLICIES:
        result = simulate(jobs, policy, config)
        assert result.summary()["missed_even_alone"] > 0, policy  # the trace has such jobs
        for o in result.outcomes:
            assert not (o.missed_even_alone and o.met_deadline), (policy, o)
            assert o.finish_s is None or o.gpu_seconds >= o.least_gpu_seconds - 1e-6, (policy, o)


def test_cli_bad_trace_exits_2_with_one_line(tmp_path):
    write(tmp_path, "job_id,arrival_s\nx,1\n", "bad.csv")
    proc = run_cli("run", "--trace", "bad.csv", "--policy", "edf", "--gpus", "4", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0
    assert "missing column 'deadline_s'" in proc.stderr
    proc = run_cli("run", "--trace", "bad.csv", "--policy", "nope", "--gpus", "4", cwd=tmp_path)
    assert proc.returncode == 2 and "unknown policy 'nope'" in proc.stderr


def test_edf_on_195job_matches_elasticflow_reference():
    from ptctl.sim.runner import prepare
    jobs, config = prepare(EF_DATA / "195job.csv", cluster_spec=EF_DATA / "cluster_specs/n16g8.csv",
                           throughputs=TPUT)
    ratio = simulate(jobs, "edf", config).summary()["deadline_satisfactory_ratio"]
    assert abs(ratio - 0.097) <= 0.02


def test_elasticflow_on_195job_matches_elasticflow_reference():
    from ptctl.sim.runner import prepare
    jobs, config = prepare(EF_DATA / "195job.csv", cluster_spec=EF_DATA / "cluster_specs/n16g8.csv",
                           throughputs=TPUT)
    s = simulate(jobs, "elasticflow", config).summary()
    assert abs(s["deadline_satisfactory_ratio"] - 0.877) <= 0.02
    assert abs(s["gpu_hours"] - 10_300) <= 0.05 * 10_300


# `ptctl sim run --json` on 195job (n16g8, A100 tables), every policy: a change that moves any
# of these figures changes what the simulator shows (elasticflow's are ElasticFlow's own, see
# test_sim_fidelity.py).
FIGURES_195JOB = {
    "prompttuner": {"met_deadline": 178, "declined": 0, "late": 17, "gpu_hours": 5334.426634144334,
                    "mean_jct_s": 29701.384816129277, "resizes": 256, "rounds": 398},
    "elasticflow": {"met_deadline": 171, "declined": 24, "late": 0,
                    "gpu_hours": 10273.133333333333, "mean_jct_s": 20466.748538011696,
                    "resizes": 2284, "rounds": 302},
    "infless": {"met_deadline": 156, "declined": 0, "late": 39, "gpu_hours": 6993.395110342863,
                "mean_jct_s": 26197.436456062987, "resizes": 0, "rounds": 394},
    "edf": {"met_deadline": 17, "declined": 0, "late": 178, "gpu_hours": 34955.523203620396,
            "mean_jct_s": 257116.89266108364, "resizes": 28, "rounds": 419},
    "fifo": {"met_deadline": 7, "declined": 0, "late": 188, "gpu_hours": 36197.293630944456,
             "mean_jct_s": 609209.495462504, "resizes": 0, "rounds": 422},
}


@pytest.mark.parametrize("policy", sorted(FIGURES_195JOB))
def test_195job_figures_are_pinned(policy, tmp_path):
    proc = run_cli("run", "--trace", str(EF_DATA / "195job.csv"), "--policy", policy,
                   "--cluster-spec", str(EF_DATA / "cluster_specs/n16g8.csv"),
                   "--throughputs", str(TPUT), "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert {key: summary[key] for key in FIGURES_195JOB[policy]} == FIGURES_195JOB[policy]


def test_ef_placement_caches_exact_ranks_until_a_restart():
    from ptctl.sim.elasticflow_replay import _EfPlacement
    place = _EfPlacement(switches=1, nodes_per_switch=2, per_node=8)

    def again(order):
        for job, _ in order:
            place.release(job)
        return place.place(order)

    round1 = [("a", 8), ("b", 4), ("c", 2), ("d", 2)]
    first = place.place(round1)
    assert first == {"a": False, "b": False, "c": False, "d": False}
    assert place.cache == {(0, 8), (8, 4), (12, 2), (14, 2)}
    assert all(again(round1).values())
    # Same sizes, other jobs: the ranks were used, so the trainers are cached.
    for job in "abcd":
        place.release(job)
    assert place.place([("x", 8), ("y", 4)]) == {"x": True, "y": True}
    # A new rank set is not (4 GPUs at rank 0).
    for job in "xy":
        place.release(job)
    assert place.place([("z", 4)]) == {"z": False}


def test_ef_placement_free_nodes_follow_elasticflows_release_order():
    """ElasticFlow's node ids restart at 0 in every switch and its free-node list is re-sorted by
    id (stably) on every release, so a released node goes behind the free node of the same id in
    the other switch: the same 8-GPU job lands on another node, at other ranks, uncached."""
    from ptctl.sim.elasticflow_replay import _EfPlacement
    place = _EfPlacement(switches=2, nodes_per_switch=2, per_node=8)
    assert place.place([("a", 8)]) == {"a": False}  # switch 0, node 0: ranks 0-7
    place.release("a")
    assert place.free == [2, 0, 1, 3]  # ids 0, 0, 1, 1: switch 1's node 0 first now
    assert place.place([("a", 8)]) == {"a": False}  # switch 1, node 0: ranks 16-23
    assert place.cache == {(0, 8), (16, 8)}
    place.release("a")
    assert place.free == [0, 2, 1, 3]
    assert place.place([("a", 8)]) == {"a": True}  # back on ranks 0-7, still cached


def test_elasticflow_events_judge_deadlines_by_the_plan_and_merge_events_within_a_slot():
    from ptctl.planner.throughput import ThroughputCurve, ThroughputTable
    from ptctl.sim.traces import SimJob
    table = ThroughputTable({("m", 8): ThroughputCurve("m", 8, {1: 1.0, 2: 2.0, 4: 4.0, 8: 8.0})})
    cluster = ClusterModel(8, slot_s=60, overhead_model="elasticflow")
    config = SimConfig(cluster, table)
    # a's round is at 0 s; b's arrival, 10 s later (within one slot), is merged into the next
    # event at 60 s, where b (10,000 iterations by t=20 s) is declined.
    jobs = [SimJob("a", 0.0, 3000.0, "m", 8, 1200, 1200, 1, 8),
            SimJob("b", 10.0, 20.0, "m", 8, 10_000, 10_000, 1, 8)]
    result = simulate(jobs, "elasticflow", config)
    rows = {r["job_id"]: r for r in result.job_rows()}
    assert rows["b"]["status"] == "declined"
    assert rows["a"]["met_deadline"] and rows["a"]["finish_s"] <= 3000
    assert result.timeline[0][0] == 0.0 and result.timeline[1][0] == 60.0
    assert result.summary()["gpu_hours"] > 0
