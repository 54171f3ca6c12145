"""`ptctl status` as a Slurm user reads it, on the real local cluster: the Slurm job, partition,
state with squeue's pending reason; the registry alone (exit 75) while slurmctld is down; and an
owner's `scancel` that ends the job cancelled, undone by `ptctl resume`.

The job waits in Slurm's queue (`--begin=now+1hour`): it never trains, so the test is quick and
every state it checks is one that holds still."""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

from helpers import SLURM, run_cli, slurmctld_down, tiny_spec


def _squeue(slurm_id: str, fmt: str) -> str:
    return subprocess.run(["squeue", "--noheader", f"--jobs={slurm_id}", f"--format={fmt}"],
                          capture_output=True, text=True, timeout=30).stdout.strip()


def _pending_reason(slurm_id: str, expected: str, timeout_s: float = 60.0) -> str:
    """squeue's reason for the pending job once Slurm's scheduler has looked at it: right
    after sbatch, and while other jobs hold the node, it may still read None or Resources."""
    stop = time.monotonic() + timeout_s
    while (reason := _squeue(slurm_id, "%r")) != expected and time.monotonic() < stop:
        time.sleep(1.0)
    return reason


def _cells(table: str, job_id: str) -> list[str]:
    """The cells of a job's row in a plain (piped) table: columns are 2+ spaces apart."""
    line = next(ln for ln in table.splitlines() if ln.startswith(job_id))
    return re.split(r"\s{2,}", line)


def _status(*args: str) -> subprocess.CompletedProcess:
    return run_cli("status", *args, env=SLURM)


def test_status_reads_like_squeue_survives_an_outage_and_sees_an_owner_scancel(tmp_path: Path):
    spec = tiny_spec(tmp_path, name="waits", deadline="24h",
                     slurm={"sbatch_args": {"begin": "now+1hour"}})
    job_id = run_cli("submit", str(spec), "-q", env=SLURM).stdout.strip()
    try:
        slurm_id = json.loads(_status(job_id, "--json").stdout)[0]["slurm_job_id"]
        reason = _pending_reason(slurm_id, "BeginTime")
        assert reason == "BeginTime" and _squeue(slurm_id, "%P") == "debug"
        row = json.loads(_status(job_id, "--json").stdout)[0]
        assert (row["slurm_state"], row["slurm_reason"], row["partition"]) == \
            ("PENDING", reason, "debug")
        assert row["slurm_known"] is True and row["usage"]["attempts"] == 1
        table = _status().stdout
        assert _cells(table, job_id)[2:5] == [slurm_id, "debug", f"PENDING ({reason})"], table

        with slurmctld_down():
            down = _status()
            down_json = _status("--json")
        assert down.returncode == 75 and down_json.returncode == 75
        assert len(down.stderr.strip().splitlines()) == 1 and "retry" in down.stderr
        # ptctl knows the Slurm job's id, not its partition nor its state.
        assert _cells(down.stdout, job_id)[2:5] == [slurm_id, "?", "?"], down.stdout
        [unknown] = json.loads(down_json.stdout)
        assert unknown["slurm_known"] is False and unknown["phase"] == row["phase"]
        assert unknown["slurm_state"] is unknown["slurm_reason"] is unknown["partition"] is None

        # The owner cancels the Slurm job: one round later the ptctl job is cancelled.
        subprocess.run(["scancel", slurm_id], check=True, timeout=30)
        deadline = time.monotonic() + 60
        while _squeue(slurm_id, "%T") not in ("CANCELLED", ""):
            assert time.monotonic() < deadline, _squeue(slurm_id, "%T")
            time.sleep(0.5)
        round_ = run_cli("rebalance", "--json", "--wait-s", "5", env=SLURM)
        assert round_.returncode == 0, round_.stderr
        assert [a["action"] for a in json.loads(round_.stdout)["actions"]
                if a["job"] == job_id] == ["cancelled"]
        cancelled = json.loads(_status(job_id, "--json").stdout)[0]
        assert cancelled["phase"] == "cancelled" and len(cancelled["attempts"]) == 1
        assert cancelled["attempts"][0]["state"] == "CANCELLED"
        assert "scancel by the job's owner (uid" in cancelled["attempts"][0]["reason"]

        resumed = run_cli("resume", job_id, "--json", env=SLURM)
        assert resumed.returncode == 0, resumed.stderr
        new_id = json.loads(resumed.stdout)["slurm_job_id"]
        assert new_id != slurm_id
        assert _squeue(new_id, "%j|%k") == f"{job_id}.a1|ptctl:{job_id}:resume"
        assert json.loads(_status(job_id, "--json").stdout)[0]["phase"] == "pending"
    finally:
        run_cli("cancel", job_id, env=SLURM)
    # ptctl's own scancel was recorded before it was sent: a round leaves the job as it is.
    assert run_cli("rebalance", "--quiet", env=SLURM).returncode == 0
    after = json.loads(_status(job_id, "--json").stdout)[0]
    assert after["phase"] == "cancelled" and len(after["attempts"]) == 2
