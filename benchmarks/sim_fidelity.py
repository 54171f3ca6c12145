"""Fidelity of ptctl's `elasticflow` policy to ElasticFlow's own simulator, and `prompttuner` /
`edf` against it on ElasticFlow's traces.

Usage: python benchmarks/sim_fidelity.py [RUN ...] [--baselines]

RUN is a folder of data/elasticflow/reference/ (<trace>_<spec>; default: all of them). For each,
ptctl's `elasticflow` runs on the same trace and cluster and is compared with ElasticFlow's
recorded run: deadline satisfactory ratio (DSR), the share of jobs admitted or declined alike
(and meeting their deadline alike), GPU-hours. A run recorded up to a cut (`cut_at_s`: stopped
before its end) is compared on what it says: ptctl replays the jobs that arrived by the cut (the
later ones cannot change a decision made before them), and the jobs admitted alike, the jobs
that left by the cut alike and meeting their deadline alike, and the GPU-hours to the cut are
compared; it has no DSR. `--baselines` also runs `prompttuner` and `edf` on the whole traces
and prints them against ptctl's `elasticflow`. Prints markdown tables.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

from ptctl.sim.engine import simulate
from ptctl.sim.results import SimResult
from ptctl.sim.runner import prepare

DATA = Path(__file__).resolve().parents[1] / "data" / "elasticflow"
REFERENCE = DATA / "reference"


def load_reference(run: str) -> tuple[dict, dict[str, dict]]:
    """ElasticFlow's recorded summary and its admitted jobs' rows by id (`left_s` and `met`
    are empty where the record does not say: late jobs not recorded, or still running at a
    cut)."""
    folder = REFERENCE / run
    summary = json.loads((folder / "summary.json").read_text())
    with open(folder / "admitted.csv", newline="") as f:
        return summary, {row["job_id"]: row for row in csv.DictReader(f)}


def gpu_hours_until(result: SimResult, until_s: float) -> float:
    """GPU-hours from the start to the round at `until_s`, as ElasticFlow's rows count them."""
    line = result.timeline
    return sum(used * (nxt - t) for (t, used), (nxt, _) in zip(line, line[1:])
               if nxt <= until_s) / 3600


def state_at(outcome, cut_s: float) -> str:
    """A replayed job's state at a cut: declined, running, met or late."""
    if outcome.declined:
        return "declined"
    if outcome.finish_s is None or outcome.finish_s > cut_s:
        return "running"
    return "met" if outcome.met_deadline else "late"


def reference_state_at(row: dict | None, cut_s: float) -> str:
    """The same for a job of ElasticFlow's record (its admitted.csv row, None if declined), at
    the record's cut or any earlier moment."""
    if row is None:
        return "declined"
    if not row["left_s"] or int(row["left_s"]) > cut_s:
        return "running"
    return "met" if row["met"] == "1" else "late"


def timed(jobs, policy, config) -> tuple[SimResult, float]:
    start = time.perf_counter()
    result = simulate(jobs, policy, config)
    return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("runs", nargs="*")
    parser.add_argument("--baselines", action="store_true")
    args = parser.parse_args()
    runs = args.runs or sorted(p.name for p in REFERENCE.iterdir() if p.is_dir())

    print("| trace | cluster | jobs | DSR ElasticFlow | DSR ptctl | diff | same admission | "
          "same outcome | GPU-h ElasticFlow | GPU-h ptctl | GPU-h diff | wall s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    baselines = []
    for run in runs:
        ref, ref_admitted = load_reference(run)
        jobs, config = prepare(DATA / ref["trace"],
                               cluster_spec=DATA / "cluster_specs" / ref["cluster_spec"],
                               throughputs=DATA / "throughputs_A100")
        cut = ref.get("cut_at_s")
        replayed = jobs if cut is None else [j for j in jobs if j.arrival_s <= cut]
        result, wall = timed(replayed, "elasticflow", config)
        s = result.summary()
        outcomes = result.outcomes
        n = len(outcomes)
        same_admission = sum((not o.declined) == (o.job_id in ref_admitted) for o in outcomes)
        same_outcome = "-"
        if cut is not None:
            same = sum(state_at(o, cut) == reference_state_at(ref_admitted.get(o.job_id), cut)
                       for o in outcomes)
            same_outcome = f"{same / n:.2%}"
        elif all(row["met"] != "" for row in ref_admitted.values()):
            same = sum(o.met_deadline == (ref_admitted.get(o.job_id, {}).get("met") == "1")
                       for o in outcomes)
            same_outcome = f"{same / n:.2%}"
        ref_gpu_h = ref["gpu_hours"]
        gpu_h = s["gpu_hours"] if cut is None else gpu_hours_until(result, cut)
        ref_cost, cost_diff = "-", "-"
        if ref_gpu_h is not None:
            ref_cost, cost_diff = f"{ref_gpu_h:,.1f}", f"{gpu_h / ref_gpu_h - 1:+.2%}"
        if cut is None:
            ref_dsr, dsr = ref["deadline_satisfactory_ratio"], s["deadline_satisfactory_ratio"]
            dsr_cells = f"{ref_dsr:.4f} | {dsr:.4f} | {dsr - ref_dsr:+.4f}"
            label = ref["trace"].removesuffix(".csv")
        else:
            dsr_cells = "- | - | -"
            label = f"{ref['trace'].removesuffix('.csv')} to {cut:,} s ({n:,} of {ref['jobs']:,} arrived)"
        print(f"| {label} | {ref['cluster_spec'].removesuffix('.csv')} | "
              f"{n:,} | {dsr_cells} | "
              f"{same_admission / n:.2%} | {same_outcome} | {ref_cost} | {gpu_h:,.1f} | "
              f"{cost_diff} | {wall:.0f} |", flush=True)
        if args.baselines and cut is None:
            baselines.append((run, jobs, config, s, wall))

    if not baselines:
        return
    print("\n| trace | cluster | policy | DSR | met | GPU-hours | GPU-h / elasticflow | "
          "met / elasticflow | declined | resizes | wall s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for run, jobs, config, ef, ef_wall in baselines:
        trace, spec = run.rsplit("_", 1)
        for policy in ("elasticflow", "prompttuner", "edf"):
            if policy == "elasticflow":
                s, wall = ef, ef_wall
            else:
                result, wall = timed(jobs, policy, config)
                s = result.summary()
            print(f"| {trace} | {spec} | {policy} | {s['deadline_satisfactory_ratio']:.3f} | "
                  f"{s['met_deadline']:,} | {s['gpu_hours']:,.0f} | "
                  f"{s['gpu_hours'] / ef['gpu_hours']:.2f} | "
                  f"{s['met_deadline'] / max(1, ef['met_deadline']):.2f} | {s['declined']} | "
                  f"{s['resizes']} | {wall:.0f} |", flush=True)


if __name__ == "__main__":
    main()
