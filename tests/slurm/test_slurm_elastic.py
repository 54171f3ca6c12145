"""End to end on the real local Slurm cluster: three jobs, `ptctl rebalance` run periodically.

Budget 2 GPUs and deadlines no job can meet, so the live prompttuner policy runs all three
best-effort in deadline order (B < A < C), each at its most efficient count within what is left,
the fastest of equals: a curve measured at one count only is linear, every count equally
efficient. A starts alone on 2 GPUs; B arrives and A shrinks to 1. When B finishes, one GPU is
free: either A grows back to 2 (if 2 ranks measured at least as efficient as 1) and C waits, or
C starts on it; C has only ever been measured on 1 GPU, so its fitted curve is linear and, with
zero resize cost in this profile, it grows to 2 as soon as A finishes. Either way one job grows
and one shrinks. Every job
ends (unmet: its 0.99 target is out of reach) with the prompt an uninterrupted run gives, and
none joins the Prompt Bank, which takes only prompts that reached their target.
"""

from __future__ import annotations

import json
import os
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import yaml
from safetensors.torch import load_file

from helpers import run_cli, tiny_spec


PROFILE = {
    "executor": "slurm", "partition": "debug", "gpus_per_node": 8, "gpu_budget": 2,
    "time_limit_min": 30, "signal_lead_s": 30, "cpus_per_gpu": 1, "mem_gb": 1,
    "checkpoint_s": 0, "queue_wait_s": 0, "start_s": 0, "model_load_s": 0,
    "resize_hold_s": 0, "max_attempts": 3,
}


def training(steps: int) -> dict:
    return {"global_batch_size": 32, "micro_batch_size": 4, "learning_rate": 0.3,
            "max_steps": steps, "eval_every": steps, "checkpoint_every": 100}


def make_spec(folder: Path, name: str, steps: int, deadline: str, max_gpus: int) -> Path:
    folder.mkdir()
    return tiny_spec(folder, name=name, training=training(steps), deadline=deadline,
                     gpus={"min": 1, "max": max_gpus},
                     prompt={"virtual_tokens": 4, "init": "random", "add_to_bank": True})


def status(job_id: str, env: dict) -> dict:
    result = run_cli("status", job_id, "--json", env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)[0]


def test_three_jobs_grow_shrink_and_end_as_uninterrupted_runs(tmp_path: Path):
    profile = tmp_path / "elastic.yaml"
    profile.write_text(yaml.safe_dump(PROFILE))
    env = {"PTCTL_PROFILE": str(profile), "PTCTL_BANK_DIR": str(tmp_path / "bank")}
    # Absolute deadlines in the order B < A < C whatever the start-up delays; A's 2,000 steps
    # cannot fit in 50 s on this hardware, so all three stay best-effort.
    start = datetime.now(timezone.utc)
    at = {k: (start + timedelta(seconds=s)).isoformat() for k, s in
          (("a", 50), ("b", 40), ("c", 70))}
    specs = {
        "a": make_spec(tmp_path / "a", "job-a", 2000, at["a"], 2),
        "b": make_spec(tmp_path / "b", "job-b", 200, at["b"], 1),
        "c": make_spec(tmp_path / "c", "job-c", 2000, at["c"], 2),
    }
    ids = {}
    ids["a"] = json.loads(run_cli("submit", str(specs["a"]), "--best-effort", "--json",
                                  env=env).stdout)["job_id"]
    deadline = time.monotonic() + 120
    while not status(ids["a"], env)["step"]:  # A runs (and reports its speed) on 2 GPUs
        assert time.monotonic() < deadline
        time.sleep(1)
    for key in ("b", "c"):
        result = run_cli("submit", str(specs[key]), "--best-effort", "--json", env=env)
        assert result.returncode == 0, result.stderr
        ids[key] = json.loads(result.stdout)["job_id"]
        assert json.loads(result.stdout)["launched_gpus"] == 0  # the budget is taken

    deadline = time.monotonic() + 900
    while True:
        result = run_cli("rebalance", "--json", "--wait-s", "10", env=env)
        assert result.returncode == 0, result.stderr
        states = {k: status(v, env) for k, v in ids.items()}
        if all(s["phase"] in ("finished", "unmet", "failed", "cancelled") for s in states.values()):
            rebalance = json.loads(run_cli("rebalance", "--json", env=env).stdout)
            if not rebalance["actions"]:
                break
        assert time.monotonic() < deadline, states
        time.sleep(2)

    assert {k: s["phase"] for k, s in states.items()} == dict.fromkeys(ids, "unmet")
    counts = {k: [a["gpus"] for a in s["attempts"]] for k, s in states.items()}
    assert counts["a"][:2] == [2, 1], counts  # A shrank for B
    assert any(later > earlier for c in counts.values() for earlier, later in zip(c, c[1:])), \
        counts  # and a job grew
    assert counts["b"] == [1], counts
    slurm_ids = [a["slurm_job_id"] for k in ids for a in states[k]["attempts"]]
    assert len(set(slurm_ids)) == len(slurm_ids)

    home = Path(os.environ["PTCTL_HOME"]) / "jobs"
    for key, job_id in ids.items():
        reference = tmp_path / key / "reference"
        run = run_cli("run", str(specs[key]), "--dir", str(reference), "--gpus", "1",
                      env={"OMP_NUM_THREADS": "1"}, timeout=900)
        assert run.returncode == 3, run.stderr  # max_steps, short of its 0.99 target
        ours = load_file(home / job_id / "result" / "adapter_model.safetensors")
        theirs = load_file(reference / "result" / "adapter_model.safetensors")
        for name in ours:
            assert (ours[name] - theirs[name]).abs().max().item() <= 1e-5, (key, name)

    # add_to_bank takes only prompts that reached their target: none of these three did.
    assert not (tmp_path / "bank").exists() or not list((tmp_path / "bank").rglob("*.safetensors"))
