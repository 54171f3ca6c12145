"""What a Slurm user expects, on the real local cluster: `submit --parsable`, attempt names that
squeue's default format shows, sbatch options that reach Slurm, hold/release, and a resize
pinned against rebalances. Each job is cancelled at the end: only its first minute matters."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import yaml

from helpers import SLURM, run_cli, tiny_spec

# Far more steps than a test waits for (the job is cancelled), and a deadline the planner's
# prior speed still meets.
TRAINING = {"global_batch_size": 4, "micro_batch_size": 2, "learning_rate": 0.3,
            "max_steps": 30000, "eval_every": 10000, "checkpoint_every": 50}


def _status(job_id: str) -> dict:
    return json.loads(run_cli("status", job_id, "--json", env=SLURM).stdout)[0]


def _slurm(*args: str) -> str:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=30,
                          check=True).stdout


def _rebalance() -> list[dict]:
    result = run_cli("rebalance", "--json", "--wait-s", "5", env=SLURM)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["actions"]


def test_parsable_submit_names_options_and_hold(tmp_path: Path):
    spec = tiny_spec(tmp_path, name="habits", training=TRAINING, deadline="24h")
    result = run_cli("submit", str(spec), "--parsable", "--time", "00:07:00", "--mail-type",
                     "END", "--mail-user", "nobody@localhost", env=SLURM)
    assert result.returncode == 0, result.stderr
    job_id = result.stdout.strip()
    try:
        assert result.stdout == f"{job_id}\n"
        slurm_id = _status(job_id)["slurm_job_id"]
        # squeue's default NAME column (8 characters) starts with the job id.
        default = _slurm("squeue", "--noheader", f"--jobs={slurm_id}").split()
        assert default[2] == f"{job_id}.a0"[:8], default
        name, comment = _slurm("squeue", "--noheader", f"--jobs={slurm_id}",
                               "--format=%j|%k").strip().split("|")
        assert name == f"{job_id}.a0" and comment == f"ptctl:{job_id}:start"
        show = _slurm("scontrol", "show", "job", slurm_id)
        assert "TimeLimit=00:07:00" in show and "MailType=END" in show, show
        assert "MailUser=nobody@localhost" in show, show
        script = _slurm("scontrol", "write", "batch_script", slurm_id, "-")
        options = [line for line in script.splitlines() if line.startswith("#SBATCH")]
        assert "#SBATCH --wckey=ptctl" in options and not any("submitit" in o for o in options)

        assert run_cli("hold", job_id, env=SLURM).returncode == 0
        assert [a for a in _rebalance() if a["job"] == job_id] == []
        held = _status(job_id)
        assert held["held"] and held["phase"] in ("pending", "running"), held
        assert "(held)" in run_cli("status", env=SLURM).stdout
        assert run_cli("release", job_id, env=SLURM).returncode == 0
        assert _status(job_id)["held"] is False
    finally:
        run_cli("cancel", job_id, env=SLURM)


def test_pinned_resize_survives_rebalances(tmp_path: Path, monkeypatch):
    # No hysteresis in this profile: only the pin keeps the policy from shrinking the job.
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    shipped = Path(__file__).resolve().parents[2] / "ptctl" / "profiles" / "localslurm.yaml"
    (profiles / "localslurm.yaml").write_text(yaml.safe_dump(
        yaml.safe_load(shipped.read_text()) | {"resize_hold_s": 0}))
    monkeypatch.setenv("PTCTL_PROFILES_DIR", str(profiles))
    spec = tiny_spec(tmp_path, name="pinned", training=TRAINING, deadline="24h",
                     gpus={"min": 1, "max": 2})
    job_id = run_cli("submit", str(spec), "-q", env=SLURM).stdout.strip()
    try:
        resized = run_cli("resize", job_id, "--gpus", "2", "--pin", "--json", env=SLURM)
        assert resized.returncode == 0, resized.stderr
        assert json.loads(resized.stdout)["pinned_gpus"] == 2
        for _ in range(2):
            assert [a for a in _rebalance() if a["job"] == job_id] == []
        status = _status(job_id)
        assert status["phase"] in ("pending", "running"), status
        assert status["gpus"] == 2 and status["pinned_gpus"] == 2
        assert [a["gpus"] for a in status["attempts"]] == [1, 2]
        assert "2(pinned)" in run_cli("status", env=SLURM).stdout
        refused = run_cli("resize", job_id, "--gpus", "3", env=SLURM)
        assert refused.returncode == 2 and "above the spec's gpus.max (2)" in refused.stderr
    finally:
        run_cli("cancel", job_id, env=SLURM)
