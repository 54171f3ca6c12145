"""Speed: one policy decision for 1,000 active jobs on 256 GPUs, and a 15,000-job trace.

Usage: python benchmarks/sim_speed.py
"""

from __future__ import annotations

import random
import time

from ptctl.planner.gpu_need import ClusterModel
from ptctl.planner.interface import JobView
from ptctl.planner.policies import decide
from ptctl.sim.engine import simulate
from ptctl.sim.gen import PROMPT_TUNING_BATCH, GenSpec, generate, prompt_tuning_throughputs
from ptctl.sim.results import SimConfig


def decision_benchmark(policy: str, repeats: int = 5) -> float:
    rnd = random.Random(0)
    table = prompt_tuning_throughputs()
    models = ["gpt-base", "gpt-large", "vicuna-7b"]
    jobs, used = [], 0
    for i in range(1000):
        curve = table.curve(rnd.choice(models), PROMPT_TUNING_BATCH)
        gpus = 1 if used < 200 and rnd.random() < 0.3 else 0
        used += gpus
        jobs.append(JobView(f"j{i}", curve.model, PROMPT_TUNING_BATCH, 0.0, rnd.uniform(600, 20000),
                            "running" if gpus else "queued", gpus, 1, 32, curve.allowed_gpus,
                            rnd.uniform(100, 5000), curve, remaining_sd=50.0,
                            memory={"ef_admitted": True}))
    cluster = ClusterModel(256)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        decide(policy, 0.0, 256, jobs, cluster)
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    print("| benchmark | policy | result |")
    print("|---|---|---|")
    for policy in ("prompttuner", "infless", "edf", "fifo"):
        print(f"| one decision, 1,000 jobs, 256 GPUs | {policy} | {decision_benchmark(policy) * 1000:.1f} ms |", flush=True)
    jobs = generate(GenSpec(jobs=15000, rate_per_hour=60, seed=0))
    config = SimConfig(ClusterModel(32), prompt_tuning_throughputs(), estimate_rel_sd=0.2)
    for policy in ("prompttuner", "infless"):
        start = time.perf_counter()
        result = simulate(jobs, policy, config)
        seconds = time.perf_counter() - start
        # Little's law: the jobs in the system on average, which every round walks.
        done = [o for o in result.outcomes if o.finish_s is not None]
        in_system = (sum(o.finish_s - o.arrival_s for o in done)
                     / (max(o.finish_s for o in done) - jobs[0].arrival_s))
        print(f"| 15,000-job trace (60/h, 32 GPUs), {result.rounds} rounds, {in_system:.0f} jobs "
              f"in the system on average | {policy} | {seconds:.1f} s |", flush=True)


if __name__ == "__main__":
    main()
