"""Prompt-tuning traces from `ptctl sim gen`: `prompttuner` (Prompt Bank starts, warm pool)
against `infless` and `elasticflow` (random initial prompts), over seeds and loads, on 32 GPUs
(4 servers x 8, as the published evaluation).

Usage: python benchmarks/sim_prompt_tuning.py [--seeds 3] [--rates 20,40,80] [--jobs 300]
Prints a markdown table of ratios baseline / prompttuner (higher = prompttuner better).
"""

from __future__ import annotations

import argparse
import statistics

from ptctl.planner.gpu_need import ClusterModel
from ptctl.sim.engine import SimConfig, simulate
from ptctl.sim.gen import GenSpec, generate, prompt_tuning_throughputs


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--rates", default="20,40,80")
    parser.add_argument("--jobs", type=int, default=300)
    parser.add_argument("--gpus", type=int, default=32)
    args = parser.parse_args()
    config = SimConfig(ClusterModel(args.gpus), prompt_tuning_throughputs(), estimate_rel_sd=0.2)
    print("| arrivals/h | seed | violations pt / infless / ef | GPU-h pt / infless / ef | "
          "viol. ratio infless/pt | viol. ratio ef/pt | cost ratio infless/pt | cost ratio ef/pt |")
    print("|---|---|---|---|---|---|---|---|")
    per_rate = {}
    for rate in (float(r) for r in args.rates.split(",")):
        for seed in range(args.seeds):
            jobs = generate(GenSpec(jobs=args.jobs, rate_per_hour=rate, seed=seed))
            s = {p: simulate(jobs, p, config).summary() for p in ("prompttuner", "infless", "elasticflow")}
            v = {p: s[p]["jobs"] - s[p]["met_deadline"] for p in s}
            c = {p: s[p]["gpu_hours"] for p in s}
            r = (v["infless"] / max(v["prompttuner"], 1), v["elasticflow"] / max(v["prompttuner"], 1),
                 c["infless"] / c["prompttuner"], c["elasticflow"] / c["prompttuner"])
            per_rate.setdefault(rate, []).append(r)
            print(f"| {rate:g} | {seed} | {v['prompttuner']} / {v['infless']} / {v['elasticflow']} | "
                  f"{c['prompttuner']:.0f} / {c['infless']:.0f} / {c['elasticflow']:.0f} | "
                  f"{r[0]:.1f}x | {r[1]:.1f}x | {r[2]:.2f}x | {r[3]:.2f}x |", flush=True)
    print("\n| arrivals/h | mean viol. ratio infless/pt | ef/pt | mean cost ratio infless/pt | ef/pt |")
    print("|---|---|---|---|---|")
    for rate, rows in per_rate.items():
        means = [statistics.fmean(col) for col in zip(*rows)]
        print(f"| {rate:g} | {means[0]:.1f}x | {means[1]:.1f}x | {means[2]:.2f}x | {means[3]:.2f}x |")


if __name__ == "__main__":
    main()
