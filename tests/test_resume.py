"""`ptctl resume` on the embedded default: a cancelled job continues from its kept checkpoint,
admitted against its deadline like a submit; jobs that cannot be resumed say why."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from helpers import LOCAL, run_cli, steps_for_seconds, tiny_spec
from ptctl.jobs.registry import Registry, SlurmAttempt
from ptctl.jobs.spec import load_spec, resolved_spec_dict

TRAINING = {"global_batch_size": 4, "micro_batch_size": 2, "learning_rate": 0.3,
            "max_steps": 200, "eval_every": 200, "checkpoint_every": 10}


# The attempt trains on one thread, as steps_for_seconds measured it.
ONE_THREAD = {"OMP_NUM_THREADS": "1"}


def _status(job_id: str) -> dict:
    return json.loads(run_cli("status", job_id, "--json", env=LOCAL).stdout)[0]


def _until(job_id: str, check, timeout: float = 600) -> dict:
    deadline = time.monotonic() + timeout
    while not check(status := _status(job_id)):
        assert time.monotonic() < deadline, f"{job_id}: timed out in {status}"
        time.sleep(2)
    return status


def _detached(tmp_path: Path, *args: str) -> str:
    """Run a ptctl command that launches a local attempt, and its stdout: the attempt's process
    inherits the command's streams, so they go to a file, not to a pipe it would hold open."""
    out = tmp_path / "out.txt"
    with out.open("w") as stream:
        done = subprocess.run([sys.executable, "-m", "ptctl", *args], stdout=stream,
                              stderr=subprocess.STDOUT, env={**os.environ, **LOCAL, **ONE_THREAD},
                              timeout=300)
    assert done.returncode == 0, out.read_text()
    return out.read_text()


def test_a_cancelled_job_resumes_from_its_checkpoint(tmp_path: Path):
    # About 30 s of training on one thread of this machine now: long enough to cancel it
    # mid-run, not so long that the test waits for long.
    steps = steps_for_seconds(tmp_path, TRAINING, 30, 100)
    training = TRAINING | {"max_steps": steps, "eval_every": steps}
    spec = tiny_spec(tmp_path, name="resume", training=training, deadline="2h")
    job_id = _detached(tmp_path, "submit", str(spec), "-q").strip()
    running = _until(job_id, lambda s: s["step"] >= 2 * TRAINING["checkpoint_every"])
    # squeue's columns, with the local backend's own equivalents: the controller's pid as the
    # job id, `local` as the partition, no pending reason.
    table = run_cli("status", env=LOCAL).stdout.splitlines()
    assert table[0].split()[:5] == ["job", "phase", "jobid", "partition", "state"]
    row = table[1].split()
    assert row[2] == running["slurm_job_id"] and row[3] == "local" and row[4] == "RUNNING"
    assert running["partition"] == "local" and running["slurm_reason"] is None

    assert run_cli("cancel", job_id, env=LOCAL).returncode == 0
    gone = time.monotonic() + 60
    while Path(f"/proc/{running['slurm_job_id']}").exists():  # its last checkpoint written
        assert time.monotonic() < gone, "the cancelled attempt's process lives on"
        time.sleep(0.2)
    checkpoints = Path(os.environ["PTCTL_HOME"]) / "jobs" / job_id / "checkpoints"
    kept = max(int(p.name.split("_")[1]) for p in checkpoints.glob("step_*"))
    result = run_cli("result", job_id, env=LOCAL)
    assert result.returncode == 1
    assert f"step_{kept}" in result.stderr and f"ptctl resume {job_id}" in result.stderr

    plan = json.loads(_detached(tmp_path, "resume", job_id, "--json"))
    assert plan["launched_gpus"] == 1 and plan["feasible"] is True
    assert plan["from_step"] == kept and plan["checkpoint"].endswith(f"step_{kept}")
    ended = _until(job_id, lambda s: s["phase"] not in ("queued", "pending", "running"))
    assert ended["phase"] == "unmet" and ended["step"] == steps, ended
    assert len(ended["attempts"]) == 2 and ended["attempts"][0]["state"] == "CANCELLED"
    progress = json.loads((checkpoints.parent / "progress.json").read_text())
    assert progress["resumed_from_step"] >= kept
    usage = _status(job_id)["usage"]
    assert usage["attempts"] == 2 and usage["source"] == "ptctl" and usage["elapsed_s"] > 0
    assert "usage: 2 attempt(s)" in run_cli("status", job_id, env=LOCAL).stdout


def _registered(tmp_path: Path, deadline: str | None = None, **state) -> str:
    data = resolved_spec_dict(load_spec(tiny_spec(tmp_path, deadline="1h")),
                              datetime.now(timezone.utc))
    data["deadline"] = deadline or data["deadline"]
    return Registry(tmp_path / "ptctl-home").create("tiny", data, profile="local",
                                                    **state).job_id


def test_what_cannot_be_resumed_says_why(tmp_path: Path):
    live = _registered(tmp_path)
    result = run_cli("resume", live, env=LOCAL)
    assert result.returncode == 1 and "is queued: only a cancelled or failed job" in result.stderr
    past = _registered(tmp_path, "2020-01-01T00:00:00+00:00", phase="cancelled", held=True)
    result = run_cli("resume", past, env=LOCAL)
    assert result.returncode == 2 and "has passed" in result.stderr
    assert "--deadline" in result.stderr and "--best-effort" in result.stderr
    bad = run_cli("resume", past, "--deadline", "yesterday", env=LOCAL)
    assert bad.returncode == 2 and bad.stderr.startswith("ptctl: error: --deadline: got")
    # A new deadline admits it again (held: it waits in the queue, nothing launches).
    again = run_cli("resume", past, "--deadline", "3h", "--json", env=LOCAL)
    assert again.returncode == 0, again.stderr
    new_deadline = datetime.fromisoformat(json.loads(again.stdout)["deadline"])
    assert new_deadline > datetime.now(timezone.utc)
    assert _status(past)["phase"] == "queued"
    assert Registry(tmp_path / "ptctl-home").load_spec(past)["deadline"] == \
        new_deadline.isoformat()


def test_a_job_failed_by_crashes_resumes_one_failed_on_bad_input_does_not(tmp_path: Path):
    crashed = SlurmAttempt("4242", 1, "2026-12-05T07:00:00.000+00:00", state="FAILED",
                           reason="RuntimeError: out of memory")
    failed = _registered(tmp_path, phase="failed", failures=3, attempts=[crashed], held=True)
    resumed = run_cli("resume", failed, "--json", env=LOCAL)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["checkpoint"] is None  # none kept: it starts over
    state = Registry(tmp_path / "ptctl-home").load(failed)
    assert state.phase == "queued" and state.failures == 0 and state.ended_at is None
    bad = SlurmAttempt("4243", 1, "2026-12-05T07:00:00.000+00:00", state="FAILED",
                       reason="data.jsonl:3: not valid JSON", fatal=True)
    fatal = _registered(tmp_path, phase="failed", failures=1, attempts=[bad])
    refused = run_cli("resume", fatal, env=LOCAL)
    assert refused.returncode == 1 and "failed on bad input" in refused.stderr
