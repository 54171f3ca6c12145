"""How well `ptctl submit` predicts a job's duration, before and after the speed record knows
its shape.

Submits tiny-random jobs of mixed shapes (max_steps, batch sizes, max_length, eval_every), each
shape twice, one after another on the local profile with `submit --wait`, in a fresh state
folder. For each job: predicted duration (predicted_finish - the plan's time) against the
actual one (the job's last progress write - the plan's time). Reports the median and worst
ratio for first runs of a shape and for repeats. `--calibrate` submits with `--calibrate`, so
a first run is planned from a calibration of its shape (not counted in its duration).

    PYTHONPATH=. python benchmarks/predict_duration.py [--rounds 2] [--calibrate] [--out F.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from datetime import datetime
from pathlib import Path

import yaml

# (max_steps, global batch, micro batch, max_length, eval_every)
SHAPES = [(30, 4, 2, 32, 10), (40, 4, 2, 32, 20), (20, 8, 4, 32, 10), (30, 2, 2, 32, 10),
          (20, 4, 4, 64, 5), (15, 8, 8, 64, 5), (30, 4, 2, 16, 15), (20, 2, 1, 48, 10),
          (35, 4, 2, 32, 7), (20, 8, 2, 32, 20)]


def spec(folder: Path, i: int, shape: tuple[int, ...]) -> Path:
    steps, batch, micro, length, every = shape
    data = {"name": f"pd{i}", "model": "tiny-random",
            "task": {"source": "tweet-sentiment", "max_train_samples": 64, "eval_samples": 16,
                     "max_length": length,
                     "label_words": {"negative": "bad", "neutral": "okay", "positive": "good"}},
            "prompt": {"virtual_tokens": 4, "init": "random"},
            "training": {"global_batch_size": batch, "micro_batch_size": micro,
                         "learning_rate": 0.3, "max_steps": steps, "eval_every": every,
                         "checkpoint_every": 50},
            "target": "accuracy >= 0.99", "deadline": "60m", "gpus": {"min": 1, "max": 1}}
    path = folder / f"pd{i}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def run_one(path: Path, env: dict[str, str], calibrate: bool) -> dict:
    out = subprocess.run([sys.executable, "-m", "ptctl", "submit", str(path), "--wait", "--json",
                          *(["--calibrate"] if calibrate else [])],
                         capture_output=True, text=True, env=env, timeout=900)
    if out.returncode not in (0, 3):
        raise SystemExit(f"{path}: exit {out.returncode}: {out.stderr[-2000:]}")
    plan = json.loads(out.stdout)
    home = Path(env["PTCTL_HOME"]) / "jobs" / plan["job_id"]
    state = json.loads((home / "state.json").read_text())
    progress = json.loads((home / "progress.json").read_text())
    submitted = state["estimates"]["submitted_at"]  # when submit made its plan
    predicted = datetime.fromisoformat(plan["predicted_finish"]).timestamp() - submitted
    actual = progress["updated"] - submitted
    return {"job": plan["job_id"], "source": plan["rate_source"],
            "assumed_steps_per_s": plan["assumed_steps_per_s"],
            "predicted_s": predicted, "actual_s": actual, "ratio": predicted / actual}


def summary(rows: list[dict]) -> str:
    ratios = [r["ratio"] for r in rows]
    worst = max(ratios, key=lambda x: max(x, 1 / x))
    return f"n={len(rows)}  median {statistics.median(ratios):.2f}x  worst {worst:.2f}x"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2, help="runs of each shape")
    parser.add_argument("--calibrate", action="store_true",
                        help="submit --calibrate: time a shape before its first plan")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, PTCTL_HOME=f"{tmp}/home", PTCTL_PROFILE="local",
                   XDG_CONFIG_HOME=f"{tmp}/xdg")
        rows = []
        for rnd in range(args.rounds):
            for i, shape in enumerate(SHAPES):
                row = run_one(spec(Path(tmp), i, shape), env, args.calibrate) | {"shape": shape, "run": rnd + 1}
                rows.append(row)
                print(f"run {rnd + 1} shape {shape}: {row['source']:12s} assumed "
                      f"{row['assumed_steps_per_s']:.3g} steps/s  predicted "
                      f"{row['predicted_s']:6.1f} s  actual {row['actual_s']:6.1f} s  "
                      f"ratio {row['ratio']:.2f}", flush=True)
    print("first runs:", summary([r for r in rows if r["run"] == 1]))
    print("repeats:   ", summary([r for r in rows if r["run"] > 1]))
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
