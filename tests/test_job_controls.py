"""What a Slurm user expects of job control, on the embedded default: limits stated up front,
pins and holds obeyed by rounds, sbatch-like submit flags. No Slurm needed."""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest
import yaml

from helpers import LOCAL, run_cli, tiny_spec
from ptctl.backends.slurm import SlurmBackend
from ptctl.config import Profile
from ptctl.jobs.lifecycle import Phase
from ptctl.jobs.registry import Registry
from ptctl.jobs.spec import load_spec, resolved_spec_dict, slurm_minutes
from ptctl.planner.prompttuner import LAST_RESIZE
from ptctl.scheduler.launch import attempt_name
from ptctl.scheduler.views import LiveJob, plan

# A local profile as wide as one 8-GPU node: the batch, not the profile, is the limit.
WIDE = {"executor": "local", "gpus_per_node": 8, "gpu_budget": 8}


def _profile_file(tmp_path: Path) -> Path:
    path = tmp_path / "wide.yaml"
    path.write_text(yaml.safe_dump(WIDE))
    return path


def _register(tmp_path: Path, spec: Path, **state) -> str:
    """A job registered as submit would, without launching it."""
    data = resolved_spec_dict(load_spec(spec), datetime.now(timezone.utc))
    registry = Registry(tmp_path / "ptctl-home")
    return registry.create("tiny", data, **state).job_id


def test_submit_states_the_gpu_limits(tmp_path: Path):
    spec = tiny_spec(tmp_path, gpus={"min": 1, "max": 64})  # global 4 / micro 2
    wide = str(_profile_file(tmp_path))
    result = run_cli("submit", str(spec), "--profile", wide, "--dry-run", env=LOCAL)
    assert result.returncode == 0, result.stderr
    assert "gpus.max 64 is clipped to 2" in result.stderr
    assert "global_batch_size 4 / micro_batch_size 2 = 2" in result.stderr
    assert "allowed GPU counts: 1-2" in result.stderr
    # The embedded default has one GPU: its budget is what clips.
    result = run_cli("submit", str(spec), "--dry-run", env=LOCAL)
    assert "clipped to 1" in result.stderr and "gpu_budget (1)" in result.stderr
    # The default gpus.max (8) is a ceiling, not a request: clipping it is not worth a warning.
    default = tiny_spec(tmp_path, gpus={"min": 1})
    result = run_cli("submit", str(default), "--profile", wide, "--dry-run", env=LOCAL)
    assert result.returncode == 0 and "clipped" not in result.stderr, result.stderr
    too_many = tiny_spec(tmp_path, gpus={"min": 3, "max": 4})
    result = run_cli("submit", str(too_many), "--profile", wide, "--dry-run", env=LOCAL)
    assert result.returncode == 2
    assert "gpus.min: 3 GPUs cannot be given" in result.stderr
    assert "one rank per micro-batch" in result.stderr


def test_resize_says_which_limit(tmp_path: Path):
    wide = str(_profile_file(tmp_path))
    job_id = _register(tmp_path, tiny_spec(tmp_path, gpus={"min": 1, "max": 4}), profile=wide)
    result = run_cli("resize", job_id, "--gpus", "3", env=LOCAL)
    assert result.returncode == 2
    assert "3 GPUs not allowed" in result.stderr and "micro_batch_size 2 = 2" in result.stderr
    assert "allowed GPU counts: 1-2" in result.stderr
    result = run_cli("resize", job_id, "--gpus", "5", env=LOCAL)
    assert result.returncode == 2 and "above the spec's gpus.max (4)" in result.stderr
    assert run_cli("resize", job_id, env=LOCAL).returncode == 2  # neither --gpus nor --pin


def _running(tmp_path: Path, **state) -> LiveJob:
    """A job running on 2 GPUs that runs no faster than on 1: the policy would shrink it."""
    spec = tiny_spec(tmp_path, deadline="24h", gpus={"min": 1, "max": 2}, training={
        "global_batch_size": 4, "micro_batch_size": 2, "max_steps": 100000})
    registry = Registry(tmp_path / "ptctl-home")
    job_id = _register(tmp_path, spec, phase=Phase.RUNNING, gpus=2,
                       estimates={"steps_per_s": {"1": 10.0, "2": 10.0}}, **state)
    return LiveJob(registry.load(job_id), registry.load_spec(job_id), None)


def test_rounds_leave_pinned_held_and_freshly_resized_jobs_alone(tmp_path: Path):
    profile = Profile(name="wide", **WIDE)
    now = time.time()
    [free] = plan([_running(tmp_path)], profile, "prompttuner", now)
    assert free.gpus == 1  # what a round does to an unpinned job
    assert plan([_running(tmp_path, pinned_gpus=2)], profile, "prompttuner", now) == []
    assert plan([_running(tmp_path, held=True)], profile, "prompttuner", now) == []
    [recent] = plan([_running(tmp_path, policy_memory={LAST_RESIZE: now - 30})], profile,
                    "prompttuner", now)
    assert recent.gpus == 2  # a resize 30 s ago is within resize_hold_s


def test_hold_release_and_pin_a_queued_job(tmp_path: Path):
    job_id = _register(tmp_path, tiny_spec(tmp_path), profile="local")
    assert run_cli("hold", job_id, env=LOCAL).returncode == 0
    decisions = json.loads(run_cli("rebalance", "--dry-run", "--json", env=LOCAL).stdout)
    assert [d for d in decisions["decisions"] if d["job_id"] == job_id] == []
    status = json.loads(run_cli("status", job_id, "--json", env=LOCAL).stdout)[0]
    assert status["held"] is True and status["phase"] == "queued"
    assert "queued(held)" in run_cli("status", env=LOCAL).stdout
    assert run_cli("release", job_id, env=LOCAL).returncode == 0
    decisions = json.loads(run_cli("rebalance", "--dry-run", "--json", env=LOCAL).stdout)
    assert [d["gpus"] for d in decisions["decisions"] if d["job_id"] == job_id] == [1]
    pinned = run_cli("resize", job_id, "--gpus", "1", "--pin", "--json", env=LOCAL)
    assert pinned.returncode == 0, pinned.stderr
    assert json.loads(pinned.stdout)["pinned_gpus"] == 1
    assert "0(pinned:1)" in run_cli("status", env=LOCAL).stdout
    unpinned = json.loads(run_cli("resize", job_id, "--unpin", "--json", env=LOCAL).stdout)
    assert unpinned["pinned_gpus"] is None


@pytest.mark.parametrize("flag,value,expected", [
    ("--time", "soon", "--time: got 'soon'"), ("--time", "0", "--time"),
    ("--mail-type", "SOMETIMES", "--mail-type: got 'SOMETIMES'")])
def test_submit_rejects_bad_sbatch_flags(tmp_path: Path, flag, value, expected):
    result = run_cli("submit", str(tiny_spec(tmp_path)), flag, value, "--dry-run", env=LOCAL)
    assert result.returncode == 2 and expected in result.stderr


def test_slurm_time_forms():
    assert [slurm_minutes(t) for t in ("90", "30:10", "01:30:00", "1-2", "1-0:30")] == \
        [90, 31, 90, 1560, 1470]
    assert slurm_minutes("1h") is None


def test_batch_script_names_the_job_first():
    profile = Profile(name="p", partition="debug", mail_type="END", mail_user="me@example.org")
    params = SlurmBackend(profile).executor_parameters(1, attempt_name("tiny-abcd", 2),
                                                       "ptctl:tiny-abcd:resize")
    assert params["name"] == "tiny-abcd.a2" and params["slurm_wckey"] == "ptctl"
    assert params["slurm_comment"] == "ptctl:tiny-abcd:resize"
    assert params["slurm_mail_type"] == "END" and params["slurm_mail_user"] == "me@example.org"


def test_quiet_submit_prints_the_id_keeps_overrides_and_warns_on_a_repeat(tmp_path: Path):
    spec = str(tiny_spec(tmp_path))
    first = run_cli("submit", spec, "-q", "--time", "00:05:00", "--mail-type", "END,FAIL",
                    env=LOCAL)
    second = run_cli("submit", spec, "--parsable", "--time", "00:05:00", "--mail-type",
                     "END,FAIL", env=LOCAL)
    registry = Registry(tmp_path / "ptctl-home")
    try:
        assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
        job_id, again = first.stdout.strip(), second.stdout.strip()
        assert first.stdout == f"{job_id}\n" and registry.exists(again) and again != job_id
        assert f"the same spec was submitted as job {job_id}" in second.stderr
        slurm = registry.load_spec(again)["slurm"]
        assert slurm["time_limit_min"] == 5 and slurm["mail_type"] == "END,FAIL"
    finally:
        for job in registry.ids():
            run_cli("cancel", job, env=LOCAL)
