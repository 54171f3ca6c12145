"""Against the real single-node cluster of slurm_templates/local (started by .ci/run).

Skipped when Slurm is missing or slurmctld does not answer, unless PTCTL_REQUIRE_SLURM=1 (CI),
which turns the skip into a failure. The test that stops slurmctld runs last.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time

import pytest

from ptctl.errors import EXIT_SLURM_UNREACHABLE, SlurmUnreachableError
from ptctl.backends import slurm as cluster
from ptctl.backends.base import AttemptStatus
from helpers import slurmctld_down





def _sbatch(*args: str) -> str:
    out = subprocess.run(["sbatch", "--parsable", "--output=/dev/null", *args],
                         capture_output=True, text=True, timeout=30, check=True).stdout
    return out.strip().split(";")[0]


def _wait_state(job_id: str, states: set[str], timeout: float = 30) -> AttemptStatus:
    deadline = time.monotonic() + timeout
    while True:
        job = cluster.queue_state([job_id]).get(job_id)
        if job and job.state in states:
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} not in {states} after {timeout} s: {job}")
        time.sleep(0.5)


def test_submitit_job_sees_two_gpus(tmp_path):
    import submitit

    executor = submitit.AutoExecutor(folder=tmp_path / "submitit", cluster="slurm")
    executor.update_parameters(slurm_partition="debug", slurm_gpus_per_node=2, timeout_min=5,
                               name="ptctl-test-gpus")
    # os.getenv pickles by reference, so the job process needs no test module on its path.
    job = executor.submit(os.getenv, "CUDA_VISIBLE_DEVICES")
    try:
        # Wait on the result file: without accounting, submitit's sacct-based state is blind.
        deadline = time.monotonic() + 90
        while not job.paths.result_pickle.exists():
            assert time.monotonic() < deadline, f"no result from job {job.job_id} in 90 s"
            time.sleep(0.5)
        visible = job.result()
    finally:
        job.cancel(check=False)
    assert visible is not None and len(visible.split(",")) == 2, visible


def test_queue_state_running_and_finished(monkeypatch):
    finished_id = _sbatch("--wrap=true")
    _wait_state(finished_id, {"COMPLETED"})
    running_id = _sbatch("--gpus-per-node=1", "--wrap=sleep 120")
    try:
        _wait_state(running_id, {"RUNNING"})
        calls: list[list[str]] = []
        real_run = cluster._run

        def counting_run(args, timeout=cluster.TIMEOUT_S):
            calls.append(args)
            return real_run(args, timeout)

        monkeypatch.setattr(cluster, "_run", counting_run)
        states = cluster.queue_state([running_id, finished_id, "99999999"])
    finally:
        subprocess.run(["scancel", running_id], timeout=30, check=False)

    assert [a[0] for a in calls].count("squeue") == 1
    assert set(states) == {running_id, finished_id}  # the unknown id is left out
    running, done = states[running_id], states[finished_id]
    assert running.state == "RUNNING" and not running.finished
    assert running.gpus == 1 and running.nodes == socket.gethostname().split(".")[0]
    assert running.start and running.end is None
    assert done.state == "COMPLETED" and done.finished and done.end


def test_single_unknown_id_is_absent():
    # squeue fails on a single unknown id (but not among several): that must not raise.
    assert cluster.queue_state(["99999999"]) == {}


def test_sacct_reports_finished_jobs():
    """The fallback for jobs squeue forgot (after MinJobAge): only with --accounting."""
    if not cluster.accounting_enabled():
        pytest.skip("accounting off: start the cluster with start.sh --accounting")
    job_id = _sbatch("--gpus-per-node=2", "--wrap=true")
    _wait_state(job_id, {"COMPLETED"})
    deadline = time.monotonic() + 30
    while (job := cluster._sacct([job_id]).get(job_id)) is None or not job.finished:
        assert time.monotonic() < deadline, f"sacct does not report job {job_id} finished: {job}"
        time.sleep(0.5)
    assert job.state == "COMPLETED" and job.gpus == 2 and job.start and job.end


def test_partition_info():
    info = cluster.partition_info("debug")
    assert info.up and info.nodes >= 1 and info.total_gpus >= info.gpus_per_node >= 2


def test_unreachable_while_slurmctld_down():
    """Last in the file: it stops slurmctld and starts it again with start.sh."""
    with slurmctld_down():
        t0 = time.monotonic()
        with pytest.raises(SlurmUnreachableError) as ping_error:
            cluster.ping()
        with pytest.raises(SlurmUnreachableError) as queue_error:
            cluster.queue_state(["1", "2"])
        elapsed = time.monotonic() - t0
    cluster.ping()
    for error in (ping_error.value, queue_error.value):
        assert error.exit_code == EXIT_SLURM_UNREACHABLE and "\n" not in str(error)
    assert elapsed < 15, f"ping + squeue took {elapsed:.1f} s to report slurmctld down"
