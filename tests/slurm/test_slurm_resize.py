"""Checkpoint-and-resubmit on the real local Slurm cluster: a job resized 1 -> 2 -> 1 GPUs
ends with the same prompt as an uninterrupted run."""

from __future__ import annotations

import json
import time
from pathlib import Path

from safetensors.torch import load_file

from helpers import SLURM, rebalance_until, run_cli, steps_for_seconds, tiny_spec


TRAINING = {"global_batch_size": 8, "micro_batch_size": 2, "learning_rate": 0.3,
            "max_steps": 400, "eval_every": 200, "checkpoint_every": 100}


def wait_step_beyond(job_id: str, step: int, timeout: float = 120) -> dict:
    """Wait until the newest attempt runs and has trained past `step` (the step an earlier
    attempt stopped at is already beyond it, so the step alone does not say the new one runs)."""
    deadline = time.monotonic() + timeout
    while True:
        status = json.loads(run_cli("status", job_id, "--json", env=SLURM).stdout)[0]
        if status["phase"] in ("finished", "unmet", "failed"):
            return status
        newest = status["attempts"][-1]
        if newest["state"] == "RUNNING" and status["world_size"] == newest["gpus"] and \
                status["step"] > step:
            return status
        assert time.monotonic() < deadline, f"{job_id} stuck at step {status['step']}"
        time.sleep(1)


def test_resize_grow_and_shrink_keeps_the_result(tmp_path: Path):
    # Long enough (about 45 s on one rank) to still be running through both resizes.
    training = TRAINING | {"max_steps": steps_for_seconds(tmp_path, TRAINING, 45, 400)}
    spec = tiny_spec(tmp_path, name="elastic", training=training, gpus={"min": 1, "max": 4},
                     deadline="24h")
    # One thread, as each Slurm task has (cpus_per_gpu: 1): same kernels, same float sums.
    reference = run_cli("run", str(spec), "--dir", str(tmp_path / "reference"), "--gpus", "1",
                        "--json", env={"OMP_NUM_THREADS": "1"}, timeout=600)
    assert reference.returncode == 3, reference.stderr  # max_steps, short of its target

    result = run_cli("submit", str(spec), "--json", env=SLURM)
    assert result.returncode == 0, result.stderr
    submitted = json.loads(result.stdout)
    job_id = submitted["job_id"]
    assert submitted["launched_gpus"] == 1
    status = wait_step_beyond(job_id, 0)
    for gpus in (2, 1):
        before = status["step"]
        resized = run_cli("resize", job_id, "--gpus", str(gpus), "--json", env=SLURM)
        assert resized.returncode == 0, resized.stderr
        assert json.loads(resized.stdout)["gpus"] == gpus
        status = wait_step_beyond(job_id, before)
    status = rebalance_until(job_id, {"finished", "unmet", "failed"})
    assert status["phase"] == "unmet", status
    attempts = status["attempts"]
    assert [a["gpus"] for a in attempts] == [1, 2, 1]
    assert len({a["slurm_job_id"] for a in attempts}) == 3
    assert [a["state"] for a in attempts[:2]] == ["STOPPED", "STOPPED"], (attempts, status)

    home = tmp_path / "ptctl-home" / "jobs" / job_id
    ours = load_file(home / "result" / "adapter_model.safetensors")
    theirs = load_file(tmp_path / "reference" / "result" / "adapter_model.safetensors")
    assert ours.keys() == theirs.keys()
    for key in ours:
        assert (ours[key] - theirs[key]).abs().max().item() <= 1e-5


def test_resize_while_the_attempt_is_still_starting(tmp_path: Path):
    """Resizes that reach each new attempt before its training loop runs still complete.

    Where USR2 lands varies from run to run (before the interpreter starts, in submitit's handler
    on rank 0, or in the training loop). The middle case once left rank 1 of a 2-rank attempt
    waiting forever at its rendezvous; srun's --kill-on-bad-exit now ends it. This test does not
    force that exact window, so it passes without the fix too."""
    spec = tiny_spec(tmp_path, name="early", training=TRAINING, gpus={"min": 1, "max": 2})
    job_id = json.loads(run_cli("submit", str(spec), "--json", env=SLURM).stdout)["job_id"]
    for gpus in (2, 1):  # each right after the previous launch, before training starts
        resized = run_cli("resize", job_id, "--gpus", str(gpus), "--json", env=SLURM)
        assert resized.returncode == 0, resized.stderr
        assert json.loads(resized.stdout)["gpus"] == gpus, resized.stdout
    status = rebalance_until(job_id, {"finished", "unmet", "failed"})
    assert status["phase"] == "unmet", status
    assert [a["gpus"] for a in status["attempts"]][:3] == [1, 2, 1]
    # An attempt ended by a resize reads STOPPED wherever the signal reached it (in submitit's
    # handler before training, rank 0 cannot record it: rebalance does).
    assert [a["state"] for a in status["attempts"][:2]] == ["STOPPED", "STOPPED"], status
