"""ptctl's own commands against the real local Slurm cluster (slurm_templates/local).

Skipped without a running cluster unless PTCTL_REQUIRE_SLURM=1 (CI). The test that stops
slurmctld runs last in this file and starts it again.
"""

from __future__ import annotations

import json
import os
from pathlib import Path


from helpers import SLURM, rebalance_until, run_cli, slurmctld_down, tiny_spec



def test_doctor_passes_on_the_cluster():
    result = run_cli("doctor", "--json", env=SLURM)
    data = json.loads(result.stdout)
    assert result.returncode == 0, data
    checks = {c["name"]: c for c in data["checks"]}
    assert checks["slurm controller"]["status"] == "ok"
    assert checks["partition GPUs"]["status"] == "ok"
    assert "8 GPUs per node" in checks["partition GPUs"]["detail"]


def test_two_gpu_job_through_slurm(tmp_path: Path):
    spec = tiny_spec(tmp_path, gpus={"min": 2, "max": 2}, name="slurm2")
    result = run_cli("submit", str(spec), "--json", env=SLURM)
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    assert plan["launched_gpus"] == 2 and plan["slurm_job_id"]
    status = rebalance_until(plan["job_id"], {"finished", "unmet", "failed"})
    assert status["phase"] == "unmet", status
    attempt = status["attempts"][0]
    assert attempt["gpus"] == 2 and attempt["slurm_job_id"] == plan["slurm_job_id"]
    # Both ranks ran: each task wrote its own log.
    logs = Path(os.environ["PTCTL_HOME"]) / "jobs" / plan["job_id"] / "logs" / \
        plan["slurm_job_id"]
    assert sorted(p.name for p in logs.glob("*_log.out")) == [
        f"{plan['slurm_job_id']}_0_log.out", f"{plan['slurm_job_id']}_1_log.out"]


def test_failed_sbatch_is_recorded_and_retried(tmp_path: Path):
    bad = tmp_path / "badpart.yaml"
    bad.write_text("executor: slurm\npartition: no-such-partition\ngpus_per_node: 8\n"
                   "gpu_budget: 8\n")
    spec = tiny_spec(tmp_path, name="retry")
    result = run_cli("submit", str(spec), "--json", env={"PTCTL_PROFILE": str(bad)})
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    assert plan["launched_gpus"] == 0 and "partition no-such-partition" in plan["launch_error"]
    assert "invalid partition" in plan["launch_error"].lower()
    again = run_cli("rebalance", "--json", env={"PTCTL_PROFILE": str(bad)})
    assert again.returncode == 0, again.stderr
    assert [a["action"] for a in json.loads(again.stdout)["actions"]] == ["launch-failed"]
    status = json.loads(run_cli("status", plan["job_id"], "--json", env=SLURM).stdout)[0]
    assert status["phase"] == "queued" and "launch with 1 GPU(s) failed" in status["errors"][-1]
    # With the partition fixed, the next round starts it.
    assert rebalance_until(plan["job_id"], {"finished", "unmet", "failed"})["phase"] == "unmet"


def test_doctor_with_the_generic_profile_finds_the_default_partition():
    result = run_cli("doctor", "--json", env={"PTCTL_PROFILE": "slurm"})
    checks = {c["name"]: c for c in json.loads(result.stdout)["checks"]}
    assert checks["partition GPUs"]["detail"].startswith("partition debug:")


def test_doctor_fails_clearly_while_slurmctld_down():
    """Last in the file: it stops slurmctld and starts it again with start.sh."""
    with slurmctld_down():
        result = run_cli("doctor", env=SLURM)
        submit = run_cli("submit", str(tiny_spec(Path.cwd())), env=SLURM)
    assert result.returncode == 1
    line = [ln for ln in result.stdout.splitlines() if "slurm controller" in ln]
    assert line and "fail" in line[0], result.stdout
    assert submit.returncode == 75, submit.stderr
    assert submit.stderr.startswith("ptctl: error: Slurm unreachable")
    assert len(submit.stderr.strip().splitlines()) == 1
