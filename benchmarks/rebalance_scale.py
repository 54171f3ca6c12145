"""How long one `ptctl rebalance` round takes with 1,000 registered jobs, and how many squeue calls.

Needs the local Slurm cluster (slurm_templates/local/start.sh). The 1,000 jobs are registered
in a fresh state folder, each pointing at a real pending Slurm job (one held job array of 1,000
tasks), so the round does what it does on a busy cluster: read 1,000 records and progress files,
ONE squeue call for all their Slurm ids, build 1,000 policy views and decide. `--dry-run` is
used so that the round does not act on 1,000 held jobs; acting adds one sbatch per start.

The baseline measured in the same run is a naive poll: one `squeue --job` call per job, as a
tool without a batched query would do (timed on the first 50 jobs and scaled).

    python benchmarks/rebalance_scale.py [--jobs 1000]
"""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import tempfile
import time
from datetime import datetime, timedelta, timezone

from ptctl.config import load_config, load_profile
from ptctl.jobs.lifecycle import Phase, move
from ptctl.fsutil import utcnow
from ptctl.jobs.registry import Registry, SlurmAttempt
from ptctl.backends import slurm as cluster
from ptctl.scheduler.round import rebalance_once


def spec_for(i: int, now: datetime) -> dict:
    return {
        "name": f"bench{i}", "model": "tiny-random",
        "task": {"source": "tweet-sentiment"},
        "prompt": {"virtual_tokens": 8, "init": "random"},
        "training": {"global_batch_size": 8, "micro_batch_size": 1, "max_steps": 200 + i % 300},
        "target": "accuracy >= 0.8",
        "deadline": (now + timedelta(minutes=20 + i % 180)).isoformat(),
        "gpus": {"min": 1, "max": 8},
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=1000)
    args = parser.parse_args()
    cluster.ping()
    array = subprocess.run(
        ["sbatch", "--parsable", "--hold", f"--array=0-{args.jobs - 1}", "--output=/dev/null",
         "--gpus-per-node=1", "--wrap=true"], capture_output=True, text=True, check=True,
        timeout=60).stdout.strip()
    try:
        with tempfile.TemporaryDirectory() as home:
            registry = Registry(home)
            now = datetime.now(timezone.utc)
            t0 = time.perf_counter()
            for i in range(args.jobs):
                state = registry.create(f"bench{i}", spec_for(i, now))
                gpus = 1 + i % 2

                def running(st, i=i, gpus=gpus):
                    move(st, Phase.RUNNING)
                    st.gpus = gpus
                    st.attempts.append(SlurmAttempt(f"{array}_{i}", gpus, utcnow(),
                                                    state="RUNNING"))
                    st.estimates["steps_per_s"] = {str(gpus): 2.0 * gpus}

                registry.update(state.job_id, running)
            register_s = time.perf_counter() - t0

            cfg = load_config({"home": home})
            profile = dataclasses.replace(load_profile(cfg, "localslurm"), gpu_budget=256)
            calls: list[str] = []
            real_run = cluster._run

            def counting_run(argv, timeout=cluster.TIMEOUT_S):
                calls.append(argv[0])
                return real_run(argv, timeout)

            cluster._run = counting_run
            rounds = []
            for _ in range(3):
                calls.clear()
                t0 = time.perf_counter()
                tick = rebalance_once(registry, profile, "prompttuner", dry_run=True)
                rounds.append(time.perf_counter() - t0)
            squeue_calls = calls.count("squeue")
            cluster._run = real_run

            sample = [f"{array}_{i}" for i in range(50)]
            t0 = time.perf_counter()
            for jid in sample:
                cluster.queue_state([jid])
            naive_s = (time.perf_counter() - t0) / len(sample) * args.jobs
    finally:
        subprocess.run(["scancel", array], check=False, timeout=60)

    best = min(rounds)
    print(f"jobs registered: {args.jobs} in {register_s:.1f} s")
    print(f"rebalance --dry-run round: best {best:.2f} s, rounds "
          f"{', '.join(f'{r:.2f}' for r in rounds)} s; squeue calls per round: {squeue_calls}; "
          f"decisions: {len(tick.decisions)}")
    print(f"baseline (one squeue per job, extrapolated from 50): {naive_s:.1f} s for the "
          f"queries alone -> batched round is {naive_s / best:.1f}x faster")


if __name__ == "__main__":
    main()
