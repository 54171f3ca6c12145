"""Kill -9 a training run at random moments, resume it each time, compare with a run never killed.

A tiny job (tiny-random, 1 rank) is run once uninterrupted. Then, in another folder, the same job
is started and killed with SIGKILL N times, each at a random moment once training is under way;
every third kill waits for a checkpoint being written (its temp folder present) and kills then.
After each kill every checkpoint left is loaded with its checksums; at the end the run is resumed
to its end and its prompt compared with the uninterrupted one.

    python benchmarks/kill_resume.py [--kills 10] [--steps 300] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

from ptctl.errors import CorruptFileError
from ptctl.tuning.checkpoint import list_checkpoints, load_checkpoint
from ptctl.tuning.prompt import read_adapter

ENV = os.environ | {"OMP_NUM_THREADS": "1"}


def write_spec(folder: Path, steps: int) -> Path:
    spec = {"name": "kill-resume", "model": "tiny-random",
            "task": {"source": "tweet-sentiment", "max_train_samples": 64, "eval_samples": 16,
                     "max_length": 32,
                     "label_words": {"negative": "bad", "neutral": "okay", "positive": "good"}},
            "prompt": {"virtual_tokens": 4, "init": "random"},
            "training": {"global_batch_size": 4, "micro_batch_size": 2, "learning_rate": 0.3,
                         "max_steps": steps, "eval_every": steps, "checkpoint_every": 3},
            "target": "accuracy >= 0.99", "deadline": "30m", "gpus": {"min": 1, "max": 1}}
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def start(spec: Path, folder: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "ptctl", "run", str(spec), "--dir",
                             str(folder), "--quiet"], env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def step_of(folder: Path) -> int:
    try:
        return int(json.loads((folder / "progress.json").read_text())["step"])
    except (OSError, ValueError, KeyError):
        return -1


def kill_once(spec: Path, folder: Path, rng: random.Random, mid_checkpoint: bool) -> dict:
    """Start the run, wait for training to move past where it resumed, kill -9 it."""
    before = step_of(folder)
    proc = start(spec, folder)
    while step_of(folder) <= before and proc.poll() is None:
        time.sleep(0.01)
    if mid_checkpoint:
        ckpts, limit = folder / "checkpoints", time.monotonic() + 10
        while (not any(ckpts.glob(".step_*.tmp")) and proc.poll() is None
               and time.monotonic() < limit):
            pass  # spin: a tiny checkpoint is written in milliseconds
    else:
        time.sleep(rng.uniform(0.0, 1.0))
    ended_first = proc.poll() is not None
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return {"ended_before_kill": ended_first, "step_at_kill": step_of(folder),
            "temp_left": len(list((folder / "checkpoints").glob(".step_*.tmp")))}


def corrupt_checkpoints(folder: Path) -> int:
    bad = 0
    for path in list_checkpoints(folder / "checkpoints"):
        try:
            load_checkpoint(path)
        except CorruptFileError:
            bad += 1
    return bad


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="ptctl-kill-resume-"))
    spec = write_spec(work, args.steps)
    t0 = time.monotonic()
    assert subprocess.run([sys.executable, "-m", "ptctl", "run", str(spec), "--dir",
                           str(work / "straight"), "--quiet"], env=ENV).returncode in (0, 3)
    kills, corrupt = [], 0
    for i in range(args.kills):
        kills.append(kill_once(spec, work / "killed", rng, mid_checkpoint=i % 3 == 2))
        corrupt += corrupt_checkpoints(work / "killed")
        print(f"kill {i + 1}: {kills[-1]}", file=sys.stderr)
    final = subprocess.run([sys.executable, "-m", "ptctl", "run", str(spec), "--dir",
                            str(work / "killed"), "--quiet"], env=ENV)
    a, _ = read_adapter(work / "straight" / "result")
    b, _ = read_adapter(work / "killed" / "result")
    print(json.dumps({
        "kills": sum(not k["ended_before_kill"] for k in kills),
        "kills_mid_checkpoint": sum(k["temp_left"] > 0 for k in kills),
        "steps_at_kills": [k["step_at_kill"] for k in kills],
        "corrupt_checkpoints": corrupt, "final_exit": final.returncode,
        "resumed_equal_to_uninterrupted": bool(torch.equal(a, b)),
        "max_abs_diff": float((a - b).abs().max()), "seconds": round(time.monotonic() - t0),
        "folder": str(work)}, indent=1))


if __name__ == "__main__":
    main()
