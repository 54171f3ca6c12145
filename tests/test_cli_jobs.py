"""The job commands on the embedded default (submitit's local executor): what a user sees."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from helpers import BAD_VALUES, GOOD, run_cli, tiny_spec, with_value
from ptctl.fsutil import file_lock

LOCAL = {"PTCTL_PROFILE": "local"}


@pytest.mark.parametrize("path,value,expected", BAD_VALUES[::3],
                         ids=[f"{p}={v!r}" for p, v, _ in BAD_VALUES[::3]])
def test_submit_bad_spec_exit_2_and_nothing_written(tmp_path: Path, path, value, expected):
    data = with_value(path, value)
    if path == "prompt.init_text":
        data["prompt"]["init"] = "text"
    spec = tmp_path / "bad.yaml"
    spec.write_text(yaml.safe_dump(data))
    home = tmp_path / "ptctl-home"
    result = run_cli("submit", str(spec), env=LOCAL)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ptctl: error: ")
    assert path in lines[0] and expected in lines[0]
    assert not (home / "jobs").exists() or not list((home / "jobs").iterdir())


def test_submit_unknown_key_and_past_deadline(tmp_path: Path):
    spec = tmp_path / "typo.yaml"
    spec.write_text(yaml.safe_dump(with_value("training.learnig_rate", 0.1)))
    result = run_cli("submit", str(spec), env=LOCAL)
    assert result.returncode == 2 and "training.learnig_rate: unknown key" in result.stderr
    past = tiny_spec(tmp_path, deadline="2020-01-01T00:00:00+00:00")
    result = run_cli("submit", str(past), env=LOCAL)
    assert result.returncode == 2 and "deadline:" in result.stderr and "past" in result.stderr
    assert not (tmp_path / "ptctl-home" / "jobs").exists()


def test_impossible_deadline_refused_unless_best_effort(tmp_path: Path):
    # 5000 steps at the profile's 0.5 steps/s cannot fit in one minute on one GPU (a guessed
    # speed never refuses: tests/test_speeds.py).
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    (profiles / "slowcpu.yaml").write_text(yaml.safe_dump(
        {"executor": "local", "gpus_per_node": 1, "gpu_budget": 1, "steps_per_s_prior": 0.5}))
    env = {"PTCTL_PROFILES_DIR": str(profiles), "PTCTL_PROFILE": "slowcpu"}
    spec = tiny_spec(tmp_path, deadline="1m", training={
        "global_batch_size": 4, "micro_batch_size": 2, "max_steps": 5000})
    result = run_cli("submit", str(spec), "--dry-run", env=env)
    assert result.returncode == 2
    assert "deadline:" in result.stderr and "cannot be met" in result.stderr
    assert "--best-effort" in result.stderr
    ok = run_cli("submit", str(spec), "--dry-run", "--best-effort", "--json", env=env)
    assert ok.returncode == 0, ok.stderr
    plan = json.loads(ok.stdout)["plan"]
    assert plan["feasible"] is False and plan["rate_source"] == "profile"


def test_submit_wait_runs_to_the_end_locally(tmp_path: Path):
    """The tiny model cannot reach accuracy 0.99: the job runs to max_steps and says so."""
    spec = tiny_spec(tmp_path)
    result = run_cli("submit", str(spec), "--wait", "--json", env=LOCAL, timeout=600)
    assert result.returncode == 3, result.stderr
    plan = json.loads(result.stdout)
    job_id = plan["job_id"]
    assert plan["phase"] == "unmet" and plan["launched_gpus"] == 1
    assert "target not reached" in plan["outcome"] and plan["deadline_met"] is True

    status = json.loads(run_cli("status", job_id, "--json", env=LOCAL).stdout)[0]
    assert status["phase"] == "unmet" and status["step"] == 12
    assert status["attempts"][0]["state"] == "COMPLETED"
    assert status["deadline_met"] is True and status["deadline_margin_s"] > 0
    assert status["slack_s"] is None and status["predicted_violation"] is None
    listing = json.loads(run_cli("ls", "--json", env=LOCAL).stdout)
    assert [j["job_id"] for j in listing] == [job_id]
    assert listing[0]["outcome"] == "target not reached"
    res = json.loads(run_cli("result", job_id, "--json", env=LOCAL).stdout)
    assert res["steps"] == 12 and res["model"] == "tiny-random"
    assert res["target_reached"] is False and res["reason"] == "max_steps"
    assert res["init_prompt_id"] is None and res["init_prompt"] == "random"
    assert (Path(res["adapter"]) / "adapter_model.safetensors").is_file()
    human = run_cli("result", job_id, env=LOCAL).stdout
    assert "target not reached" in human and "{" not in human
    assert "initial prompt  random" in human and "met by" in human
    live = run_cli("status", env=LOCAL)
    assert live.returncode == 0 and "1 ended job(s): ptctl status --all" in live.stderr
    ended = run_cli("status", "--all", env=LOCAL).stdout
    assert "unmet" in ended and "met by" in ended
    logs = run_cli("logs", job_id, env=LOCAL)
    assert logs.returncode == 0
    # A second rebalance right after changes nothing.
    again = json.loads(run_cli("rebalance", "--json", env=LOCAL).stdout)
    assert again["actions"] == []


def test_ls_on_an_empty_state_folder_names_it():
    result = run_cli("ls", env=LOCAL)
    assert result.returncode == 0
    assert f"no jobs in {Path.cwd() / 'ptctl-home' / 'jobs'}" in result.stderr


def test_unknown_job_is_one_line_exit_1():
    result = run_cli("status", "nope-abcd", env=LOCAL)
    assert result.returncode == 1
    assert result.stderr.strip() == f"ptctl: error: job 'nope-abcd': no such job in " \
                                    f"{Path.cwd() / 'ptctl-home' / 'jobs'}"


def test_doctor_local_profile_passes_and_json():
    result = run_cli("doctor", "--json", env=LOCAL)
    data = json.loads(result.stdout)
    assert result.returncode == 0, result.stdout
    names = {c["name"]: c["status"] for c in data["checks"]}
    assert names["slurm"] == "skip" and names["state folder writable"] == "ok"


def test_doctor_fails_on_unwritable_state_folder(tmp_path: Path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = run_cli("doctor", env={**LOCAL, "PTCTL_HOME": str(blocker / "state")})
    assert result.returncode == 1
    assert "state folder writable" in result.stdout and "fail" in result.stdout


def test_good_spec_dry_run_plans_without_registering(tmp_path: Path):
    spec = tmp_path / "good.yaml"
    spec.write_text(yaml.safe_dump(GOOD | {"prompt": {"init": "random"}}))
    result = run_cli("submit", str(spec), "--dry-run", "--json", env=LOCAL)
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)["plan"]
    assert plan["gpus"] == 1 and plan["feasible"] and plan["profile"] == "local"
    assert not (tmp_path / "ptctl-home").exists()  # not even the round lock's file


def test_finished_job_feeds_the_bank_once(tmp_path: Path):
    bank_dir = tmp_path / "bank"
    env = {**LOCAL, "PTCTL_BANK_DIR": str(bank_dir)}
    # Reached at the first evaluation: only jobs that reach their target feed the bank.
    spec = tiny_spec(tmp_path, target="loss <= 1000", prompt={
        "virtual_tokens": 4, "init": "random", "add_to_bank": True})
    result = run_cli("submit", str(spec), "--wait", "--json", env=env, timeout=600)
    assert result.returncode == 0, result.stderr
    job_id = json.loads(result.stdout)["job_id"]
    entries = json.loads(run_cli("bank", "ls", "--json", env=env).stdout)
    ids = [e["id"] for e in (entries["entries"] if isinstance(entries, dict) else entries)]
    assert ids == [job_id]
    state = json.loads(run_cli("status", job_id, "--json", env=env).stdout)[0]
    assert state["phase"] == "finished"
    again = json.loads(run_cli("rebalance", "--json", env=env).stdout)
    assert again["actions"] == []
    # A new job with `init: bank` now finds that entry, in `ptctl run` too, and starts from it
    # only if it scores better than the job's own random start. (Trained for no step, the
    # entry is the seed-0 draw itself: a tie, and the job keeps its own draw, the same prompt.)
    again_spec = tiny_spec(tmp_path, name="tiny2", target="loss <= 1000",
                           prompt={"virtual_tokens": 4, "init": "bank"})
    run = run_cli("run", str(again_spec), "--dir", str(tmp_path / "run2"), env=env)
    assert run.returncode == 0, run.stderr
    assert f"best entry {job_id}" in run.stderr
    meta = json.loads((tmp_path / "run2" / "result" / "ptctl_meta.json").read_text())
    from_entry = f"starting from bank entry {job_id}" in run.stderr
    assert from_entry or "starting from its own random start" in run.stderr
    assert meta["init_prompt_id"] == (job_id if from_entry else None)


def test_submit_waits_for_a_round_in_progress(tmp_path: Path):
    """submit plans against the live jobs under the rounds' lock: never beside a rebalance."""
    spec = tiny_spec(tmp_path)
    with file_lock(tmp_path / "ptctl-home" / "rebalance.lock"):
        proc = subprocess.Popen([sys.executable, "-m", "ptctl", "submit", str(spec), "--dry-run",
                                 "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env={**os.environ, **LOCAL})
        time.sleep(8)
        assert proc.poll() is None, proc.communicate()
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert json.loads(out)["plan"]["feasible"]
