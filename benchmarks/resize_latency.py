"""Resize latency on the local Slurm cluster: from the resize request to training resumed at
the new GPU count, broken down into its parts, against a cold start measured in the same run.

    python benchmarks/resize_latency.py [--resizes 4]

Needs the local cluster (slurm_templates/local/start.sh). A tiny-random job (long enough to
outlive the resizes) is submitted with `ptctl submit` (profile localslurm) and resized
2 -> 1 -> 2 ... with `ptctl resize`. Parts, from the registry and the job's progress records:
  checkpoint  request -> the old attempt saved its checkpoint and stopped
  relaunch    stopped -> the new attempt submitted (how soon the waiting resize saw it)
  queue+start submitted -> the new attempt's rank 0 in ptctl's code (Slurm scheduling,
              the interpreter starting, torch and transformers imported)
  model load  engine entered -> model loaded and checkpoint restored: training resumes
The baseline is the job's own cold start: submitted -> training started, first attempt.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import yaml

SPEC = {
    "name": "resize-bench", "model": "tiny-random",
    "task": {"source": "tweet-sentiment", "max_train_samples": 512, "eval_samples": 16,
             "max_length": 32,
             "label_words": {"negative": "bad", "neutral": "okay", "positive": "good"}},
    "prompt": {"virtual_tokens": 4, "init": "random"},
    "training": {"global_batch_size": 32, "micro_batch_size": 4, "max_steps": 100000,
                 "eval_every": 100000, "checkpoint_every": 1000},
    "target": "accuracy >= 0.99", "deadline": "2h", "gpus": {"min": 1, "max": 2},
}


def ptctl(*args: str, env: dict) -> dict:
    out = subprocess.run([sys.executable, "-m", "ptctl", *args, "--json"], env=env,
                         capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise SystemExit(f"ptctl {' '.join(args)}: {out.stderr.strip()}")
    return json.loads(out.stdout)


def ts(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--resizes", type=int, default=4)
    args = parser.parse_args()
    home = tempfile.mkdtemp(prefix="ptctl-resize-bench-")
    env = {**os.environ, "PTCTL_HOME": home, "PTCTL_PROFILE": "localslurm"}
    spec = Path(home) / "spec.yaml"
    spec.write_text(yaml.safe_dump(SPEC))
    job = ptctl("submit", str(spec), "--best-effort", env=env)["job_id"]
    root = Path(home) / "jobs" / job
    progress = root / "progress.json"

    def wait_resumed(after: float) -> dict:
        deadline = time.time() + 300
        while time.time() < deadline:
            if progress.is_file():
                p = json.loads(progress.read_text())
                if p.get("loop_started", 0) > after and p.get("step", 0) > p["resumed_from_step"]:
                    return p
            time.sleep(0.2)
        raise SystemExit("training did not resume within 300 s")

    first = wait_resumed(0)
    state = json.loads((root / "state.json").read_text())
    cold = first["loop_started"] - ts(state["attempts"][0]["submitted_at"])
    rows = []
    try:
        for i in range(args.resizes):
            gpus = 1 if i % 2 == 0 else 2
            asked = time.time()
            ptctl("resize", job, "--gpus", str(gpus), env=env)
            p = wait_resumed(asked)
            state = json.loads((root / "state.json").read_text())
            old, new = state["attempts"][-2], state["attempts"][-1]
            requested = asked
            parts = {
                "checkpoint": ts(old["ended_at"]) - requested,
                "relaunch": ts(new["submitted_at"]) - ts(old["ended_at"]),
                "queue+start": p["session_started"] - ts(new["submitted_at"]),
                "model load": p["loop_started"] - p["session_started"],
            }
            parts["total"] = p["loop_started"] - requested
            rows.append((f"{old['gpus']} -> {new['gpus']}", parts))
    finally:
        subprocess.run([sys.executable, "-m", "ptctl", "cancel", job], env=env,
                       capture_output=True, timeout=120)
    names = ["checkpoint", "relaunch", "queue+start", "model load", "total"]
    print("| resize | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for label, parts in rows:
        print(f"| {label} | " + " | ".join(f"{parts[n]:.1f} s" for n in names) + " |")
    medians = {n: statistics.median(p[n] for _, p in rows) for n in names}
    print("| median | " + " | ".join(f"{medians[n]:.1f} s" for n in names) + " |")
    print(f"\ncold start of the same job (submit -> training started): {cold:.1f} s; "
          f"median resize / cold start = {medians['total'] / cold:.2f}")


if __name__ == "__main__":
    main()
