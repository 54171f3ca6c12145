"""Prompt-tuning traces from `ptctl sim gen`: `prompttuner` (Prompt Bank starts and
predictions) against `infless` and `elasticflow` (random initial prompts), over seeds and loads,
on 32 GPUs (4 servers x 8, as the published evaluation).

Usage: python benchmarks/sim_prompt_tuning.py [--seeds 5] [--rates 10,20,40,80] [--jobs 300]
                                             [--convergence FILE]
Prints a markdown table of ratios baseline / prompttuner (higher = prompttuner better), and
in brackets the most any policy in prompttuner's place could show (same starts, same 10 s bank
search): violations over the jobs that miss their deadline even alone on the cluster
(`ptctl.sim.engine.misses_even_alone`), GPU-hours over the sum of each job's cheapest run
(`least_gpu_seconds`).
Without `--convergence` the traces resample the measured starts (ptctl/sim/measured_starts.json);
`--convergence` is `ptctl sim gen`'s file, e.g. a log-normal bank/random ratio of exactly 1 for
the scheduler alone.
"""

from __future__ import annotations

import argparse

from ptctl.planner.gpu_need import ClusterModel
from ptctl.sim.engine import simulate
from ptctl.sim.gen import GenSpec, generate, load_convergence, prompt_tuning_throughputs
from ptctl.sim.results import SimConfig


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--rates", default="10,20,40,80")
    parser.add_argument("--jobs", type=int, default=300)
    parser.add_argument("--gpus", type=int, default=32)
    parser.add_argument("--convergence", default=None)
    args = parser.parse_args()
    convergence = load_convergence(args.convergence)
    if convergence["bank_over_random_median"] is None:
        print("bank starts and predictions: resampled from ptctl/sim/measured_starts.json\n")
    else:
        print(f"bank/random step ratio: median {convergence['bank_over_random_median']:g}, "
              f"sigma {convergence['bank_over_random_sigma']:g}; no bank predictions\n")
    config = SimConfig(ClusterModel(args.gpus), prompt_tuning_throughputs(), estimate_rel_sd=0.2)
    print("| arrivals/h | seed | violations pt / infless / ef | GPU-h pt / infless / ef | "
          "viol. ratio infless/pt | viol. ratio ef/pt | cost ratio infless/pt | cost ratio ef/pt |")
    print("|---|---|---|---|---|---|---|---|")
    totals: dict[float, dict[str, list[float]]] = {}  # rate -> policy -> [violations, GPU-h]
    floors: dict[float, list[float]] = {}  # rate -> prompttuner's [misses even alone, least GPU-h]
    policies = ("prompttuner", "infless", "elasticflow")
    for rate in (float(r) for r in args.rates.split(",")):
        for seed in range(args.seeds):
            jobs = generate(GenSpec(jobs=args.jobs, rate_per_hour=rate, seed=seed), convergence)
            s = {p: simulate(jobs, p, config).summary() for p in policies}
            v = {p: int(s[p]["jobs"] - s[p]["met_deadline"]) for p in s}
            c = {p: s[p]["gpu_hours"] for p in s}
            floor = floors.setdefault(rate, [0, 0.0])
            floor[0] += s["prompttuner"]["missed_even_alone"]
            floor[1] += s["prompttuner"]["least_gpu_hours"]
            for p in policies:
                acc = totals.setdefault(rate, {}).setdefault(p, [0, 0.0])
                acc[0] += v[p]
                acc[1] += c[p]
            print(f"| {rate:g} | {seed} | {v['prompttuner']} / {v['infless']} / {v['elasticflow']} | "
                  f"{c['prompttuner']:.0f} / {c['infless']:.0f} / {c['elasticflow']:.0f} | "
                  f"{v['infless'] / max(v['prompttuner'], 1):.1f}x | "
                  f"{v['elasticflow'] / max(v['prompttuner'], 1):.1f}x | "
                  f"{c['infless'] / c['prompttuner']:.2f}x | {c['elasticflow'] / c['prompttuner']:.2f}x |",
                  flush=True)
    # Ratios of totals over the seeds (a seed with few violations does not dominate them).
    print(f"\n| arrivals/h | violations over {args.seeds} seeds pt / infless / ef | pt missed even "
          "alone | viol. ratio infless/pt (bound) | ef/pt (bound) | cost ratio infless/pt (bound) "
          "| ef/pt (bound) |")
    print("|---|---|---|---|---|---|---|")
    overall = {p: [0, 0.0] for p in policies}
    floors["all"] = [sum(f[0] for f in floors.values()), sum(f[1] for f in floors.values())]
    for rate, by_policy in [*totals.items(), ("all", overall)]:
        if rate != "all":
            for p in policies:
                overall[p][0] += by_policy[p][0]
                overall[p][1] += by_policy[p][1]
        (vp, cp), (vi, ci), (ve, ce) = (by_policy[p] for p in policies)
        missed, least = floors[rate]
        label = "all loads" if rate == "all" else f"{rate:g}"
        print(f"| {label} | {vp} / {vi} / {ve} | {missed} | {vi / max(vp, 1):.1f}x "
              f"({vi / max(missed, 1):.2f}x) | {ve / max(vp, 1):.1f}x ({ve / max(missed, 1):.2f}x) | "
              f"{ci / cp:.2f}x ({ci / least:.2f}x) | {ce / cp:.2f}x ({ce / least:.2f}x) |")

if __name__ == "__main__":
    main()
