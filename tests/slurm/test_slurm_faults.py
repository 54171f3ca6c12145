"""Faults on the real local Slurm cluster: each job still finishes, resumes from its last
checkpoint (no progress lost beyond it), and never has two Slurm jobs running at once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import SLURM, run_cli, slurmctld_down, steps_for_seconds, tiny_spec


TRAINING = {"global_batch_size": 32, "micro_batch_size": 4, "learning_rate": 0.3,
            "max_steps": 800, "eval_every": 400, "checkpoint_every": 100}


@pytest.fixture(scope="module")
def training(tmp_path_factory) -> dict:
    """TRAINING, long enough (about a minute on one CPU rank) that a fault lands mid-run."""
    steps = steps_for_seconds(tmp_path_factory.mktemp("speed"), TRAINING, 60,
                              TRAINING["max_steps"])
    return TRAINING | {"max_steps": steps, "eval_every": steps // 2}


class Watch:
    """Polls a job through `ptctl status` and the Slurm queue, checking that at most one Slurm
    job of it is pending or running at any time."""

    def __init__(self, job_id: str):
        self.job_id = job_id
        self.max_live = 0

    def live_slurm_jobs(self) -> list[str]:
        out = subprocess.run(["squeue", "--noheader", "--format=%i %j"], capture_output=True,
                             text=True, timeout=30).stdout
        return [line.split()[0] for line in out.splitlines()
                if line.split()[-1].startswith(f"{self.job_id}.a")]

    def status(self) -> dict:
        live = self.live_slurm_jobs()
        self.max_live = max(self.max_live, len(live))
        result = run_cli("status", self.job_id, "--json", env=SLURM)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)[0]

    def until(self, check, timeout: float = 240, rebalance: bool = False) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            if rebalance:
                result = run_cli("rebalance", "--quiet", "--wait-s", "5", env=SLURM)
                assert result.returncode in (0, 75), result.stderr
            status = self.status()
            if check(status):
                return status
            assert time.monotonic() < deadline, f"{self.job_id}: timed out in {status}"
            time.sleep(1)


def submit(tmp_path: Path, name: str, training: dict) -> Watch:
    spec = tiny_spec(tmp_path, name=name, training=training, gpus={"min": 1, "max": 2},
                     deadline="24h")
    result = run_cli("submit", str(spec), "--json", env=SLURM)
    assert result.returncode == 0, result.stderr
    return Watch(json.loads(result.stdout)["job_id"])


def checkpoints(job_id: str) -> list[int]:
    folder = Path(os.environ["PTCTL_HOME"]) / "jobs" / job_id / "checkpoints"
    return sorted(int(p.name.split("_")[1]) for p in folder.glob("step_*"))


def assert_finished_without_loss(watch: Watch, status: dict, resumed_at_least: int,
                                 max_steps: int) -> None:
    assert status["phase"] == "unmet", status
    assert status["step"] == max_steps
    meta = json.loads((Path(os.environ["PTCTL_HOME"]) / "jobs" / watch.job_id / "result" /
                       "ptctl_meta.json").read_text())
    steps = [int(s) for s, _ in meta["loss_curve"]]
    assert steps == list(range(1, max_steps + 1)), "steps lost or repeated"
    assert meta["samples"] == max_steps * TRAINING["global_batch_size"]
    progress = json.loads((Path(os.environ["PTCTL_HOME"]) / "jobs" / watch.job_id /
                           "progress.json").read_text())
    assert progress["resumed_from_step"] >= resumed_at_least
    assert watch.max_live <= 1, "two Slurm jobs of one ptctl job were live at once"


def past_a_checkpoint(status: dict) -> bool:
    return status["step"] >= 2 * TRAINING["checkpoint_every"] and status["phase"] == "running"


def test_owner_scancel_cancels_and_resume_continues(tmp_path: Path, training: dict):
    """An owner's scancel of the running Slurm job ends the ptctl job cancelled after one
    round (not relaunched); `ptctl resume` continues it from its checkpoint to the end."""
    watch = submit(tmp_path, "scancel", training)
    status = watch.until(past_a_checkpoint)
    first = status["attempts"][0]["slurm_job_id"]
    subprocess.run(["scancel", first], check=True, timeout=30)
    watch.until(lambda s: s["slurm_state"] == "CANCELLED")
    result = run_cli("rebalance", "--json", "--wait-s", "5", env=SLURM)
    assert result.returncode == 0, result.stderr
    status = watch.status()
    assert status["phase"] == "cancelled" and len(status["attempts"]) == 1, status
    # scancel's SIGTERM reaches the tasks: they checkpoint before they end.
    saved = max(checkpoints(watch.job_id))
    hint = run_cli("result", watch.job_id, env=SLURM)
    assert hint.returncode == 1 and f"ptctl resume {watch.job_id}" in hint.stderr
    assert f"step_{saved}" in hint.stderr
    resumed = run_cli("resume", watch.job_id, env=SLURM)
    assert resumed.returncode == 0, resumed.stderr
    status = watch.until(lambda s: s["phase"] in ("finished", "unmet", "failed"), rebalance=True)
    assert [a["state"] for a in status["attempts"]][0] == "CANCELLED"
    assert_finished_without_loss(watch, status, saved, training["max_steps"])
    usage = status["usage"]
    assert usage["attempts"] == len(status["attempts"]) and usage["source"] == "sacct"
    hours = usage["elapsed_s"] / 3600  # each attempt ran on 1 or 2 GPUs
    assert hours > 0 and hours * 0.999 <= usage["gpu_hours"] <= 2 * hours * 1.001


def test_scontrol_requeue(tmp_path: Path, training: dict):
    watch = submit(tmp_path, "requeue", training)
    status = watch.until(past_a_checkpoint)
    slurm_id = status["attempts"][0]["slurm_job_id"]
    saved = max(checkpoints(watch.job_id))
    subprocess.run(["scontrol", "requeue", slurm_id], check=True, timeout=30)
    status = watch.until(lambda s: s["phase"] in ("finished", "unmet", "failed"), rebalance=True)
    # The same Slurm job ran again: Slurm's requeue, not a resubmission.
    assert [a["slurm_job_id"] for a in status["attempts"]] == [slurm_id]
    assert_finished_without_loss(watch, status, saved, training["max_steps"])


def test_slurmctld_restarted_mid_run(tmp_path: Path, training: dict):
    watch = submit(tmp_path, "ctldrestart", training)
    watch.until(past_a_checkpoint)
    with slurmctld_down():
        down = run_cli("rebalance", env=SLURM)
        state_during = json.loads((Path(os.environ["PTCTL_HOME"]) / "jobs" / watch.job_id /
                                   "state.json").read_text())
    assert down.returncode == 75 and "Slurm unreachable" in down.stderr
    assert state_during["phase"] == "running" and len(state_during["attempts"]) == 1
    status = watch.until(lambda s: s["phase"] in ("finished", "unmet", "failed"), rebalance=True)
    assert len(status["attempts"]) == 1, "the job kept running through the restart"
    assert_finished_without_loss(watch, status, 0, training["max_steps"])


def test_rebalance_killed_mid_resize(tmp_path: Path, training: dict):
    watch = submit(tmp_path, "killresize", training)
    status = watch.until(past_a_checkpoint)
    saved = max(checkpoints(watch.job_id))
    state_file = Path(os.environ["PTCTL_HOME"]) / "jobs" / watch.job_id / "state.json"
    resize = subprocess.Popen([sys.executable, "-m", "ptctl", "resize", watch.job_id,
                               "--gpus", "2"], env={**os.environ, **SLURM})
    deadline = time.monotonic() + 60
    while json.loads(state_file.read_text()).get("pending_resize") is None:
        assert time.monotonic() < deadline, "resize never recorded"
        time.sleep(0.05)
    resize.send_signal(signal.SIGKILL)  # after the intent is recorded, before the relaunch
    resize.wait(timeout=30)
    status = watch.until(lambda s: s["phase"] in ("finished", "unmet", "failed"), rebalance=True)
    assert [a["gpus"] for a in status["attempts"]][:2] == [1, 2]
    assert_finished_without_loss(watch, status, saved, training["max_steps"])


def test_time_limit_requeues_the_same_job_and_resumes(tmp_path: Path):
    """A 2-minute time limit with USR2 40 s before it: each time the job checkpoints, requeues
    itself (same Slurm job, same size) and resumes, until it is done.

    Slurm checks the warning time about once a minute, so USR2 comes between 20 s and 80 s into
    each run: after start-up, and before the job can finish. The job's length is set from this
    machine's measured speed (one thread, as the Slurm task has), so that it trains for about
    150 s whether the cores are idle or busy."""
    max_steps = steps_for_seconds(tmp_path, TRAINING, 150, 1800)
    profile = tmp_path / "short.yaml"
    profile.write_text("executor: slurm\npartition: debug\ngpus_per_node: 8\ngpu_budget: 8\n"
                       "time_limit_min: 2\nsignal_lead_s: 40\ncpus_per_gpu: 1\n")
    spec = tiny_spec(tmp_path, name="timelimit", training=TRAINING | {"max_steps": max_steps},
                     gpus={"min": 1, "max": 1}, deadline="24h")
    result = run_cli("submit", str(spec), "--json", env={"PTCTL_PROFILE": str(profile)})
    assert result.returncode == 0, result.stderr
    watch = Watch(json.loads(result.stdout)["job_id"])
    status = watch.until(lambda s: s["phase"] in ("finished", "unmet", "failed"), timeout=900)
    assert status["phase"] == "unmet", status
    assert len(status["attempts"]) == 1, "requeued by Slurm, not resubmitted"
    progress = json.loads((Path(os.environ["PTCTL_HOME"]) / "jobs" / watch.job_id /
                           "progress.json").read_text())
    assert progress["resumed_from_step"] > 0, "never hit the time limit"
    assert_finished_without_loss(watch, status, 1, max_steps=max_steps)
