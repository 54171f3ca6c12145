"""Fidelity of ptctl's `elasticflow` policy to ElasticFlow's own simulator, and `prompttuner` /
`edf` against it on ElasticFlow's traces.

Usage: python benchmarks/sim_fidelity.py [RUN ...] [--baselines]

RUN is a folder of data/elasticflow/reference/ (<trace>_<spec>; default: all of them). For each,
ptctl's `elasticflow` runs on the same trace and cluster and is compared with ElasticFlow's
recorded run: deadline satisfactory ratio (DSR), the share of jobs admitted or declined alike
(and meeting their deadline alike), GPU-hours. `--baselines` also runs `prompttuner` and `edf`
on those traces and prints them against ptctl's `elasticflow`. Prints markdown tables.
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


def load_reference(run: str) -> tuple[dict, dict[str, bool | None]]:
    """ElasticFlow's recorded summary and job id -> met deadline (admitted jobs only; None where
    the run's record does not say)."""
    folder = REFERENCE / run
    summary = json.loads((folder / "summary.json").read_text())
    with open(folder / "admitted.csv", newline="") as f:
        return summary, {row["job_id"]: None if row["met"] == "" else row["met"] == "1"
                         for row in csv.DictReader(f)}


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
        result, wall = timed(jobs, "elasticflow", config)
        s = result.summary()
        same_admission = sum((not o.declined) == (o.job_id in ref_admitted) for o in result.outcomes)
        n = len(result.outcomes)
        same_outcome = "-"
        if None not in ref_admitted.values():
            same = sum(o.met_deadline == ref_admitted.get(o.job_id, False) for o in result.outcomes)
            same_outcome = f"{same / n:.2%}"
        ref_dsr, dsr = ref["deadline_satisfactory_ratio"], s["deadline_satisfactory_ratio"]
        ref_gpu_h, gpu_h = ref["gpu_hours"], s["gpu_hours"]
        ref_cost, cost_diff = "-", "-"
        if ref_gpu_h is not None:
            ref_cost, cost_diff = f"{ref_gpu_h:,.1f}", f"{gpu_h / ref_gpu_h - 1:+.2%}"
        print(f"| {ref['trace'].removesuffix('.csv')} | {ref['cluster_spec'].removesuffix('.csv')} | "
              f"{n:,} | {ref_dsr:.4f} | {dsr:.4f} | {dsr - ref_dsr:+.4f} | "
              f"{same_admission / n:.2%} | {same_outcome} | {ref_cost} | {gpu_h:,.1f} | "
              f"{cost_diff} | {wall:.0f} |", flush=True)
        if args.baselines:
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
