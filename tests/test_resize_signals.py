"""A resize reaches a running attempt as one SIGUSR2, and a stop that lands outside the training
loop is recorded as a stop, not a failure.

A second USR2 right after the first reaches rank 0 once its training loop has stopped and handed
the signal back to submitit, whose handler then raises wherever rank 0 is: the attempt once read
FAILED although it stopped as asked and resumed fine."""

from __future__ import annotations

import signal
from datetime import datetime, timezone
from pathlib import Path

import pytest

from helpers import RecordingBackend, tiny_spec, use_backend
from ptctl.backends.base import AttemptStatus
from ptctl.config import Profile
from ptctl.jobs.registry import Registry, SlurmAttempt
from ptctl.jobs.spec import load_spec, resolved_spec_dict
from ptctl.scheduler import control, worker
from ptctl.scheduler.round import rebalance_once

PROFILE = Profile(name="test", executor="local", gpus_per_node=4, gpu_budget=4)


class Backend(RecordingBackend):
    """Every attempt runs until signalled; signals are recorded, not delivered."""

    def poll(self, attempt_ids):
        return {a: AttemptStatus(a, "RUNNING") for a in attempt_ids}


@pytest.fixture
def backend(monkeypatch) -> Backend:
    return use_backend(monkeypatch, Backend())


def _running_job(tmp_path: Path, registry: Registry, **fields) -> str:
    data = resolved_spec_dict(load_spec(tiny_spec(tmp_path, gpus={"min": 1, "max": 2})),
                              datetime.now(timezone.utc))
    attempt = SlurmAttempt("41", 1, "2026-01-01T00:00:00.000+00:00",
                           started_at="2026-01-01T00:00:05.000+00:00", state="RUNNING")
    return registry.create("elastic", data, phase="running", gpus=1, attempts=[attempt],
                           **fields).job_id


def test_a_resize_signals_its_attempt_once(tmp_path: Path, backend: Backend):
    registry = Registry(tmp_path / "home")
    job_id = _running_job(tmp_path, registry)
    tick = control.resize(registry, job_id, 2, PROFILE, wait_s=0)
    assert backend.signals == [("41", signal.SIGUSR2)]
    assert [a["action"] for a in tick.actions] == ["resize"]
    assert registry.load(job_id).pending_resize["gpus"] == 2


def test_a_round_signals_again_a_resize_asked_earlier(tmp_path: Path, backend: Backend):
    """The process that asked may have died between recording the resize and signalling."""
    registry = Registry(tmp_path / "home")
    _running_job(tmp_path, registry, pending_resize={
        "gpus": 2, "from_slurm_job_id": "41", "requested_at": "2026-01-01T00:01:00.000+00:00"})
    rebalance_once(registry, PROFILE, "prompttuner", resize_wait_s=0)
    assert backend.signals == [("41", signal.SIGUSR2)]


def test_a_stop_outside_the_training_loop_is_recorded_as_stopped(tmp_path: Path, monkeypatch):
    registry = Registry(tmp_path / "home")
    job_id = _running_job(tmp_path, registry, pending_resize={
        "gpus": 2, "from_slurm_job_id": "41", "requested_at": "2026-01-01T00:01:00.000+00:00"})
    # What submitit's local executor sets in each task: this is rank 0 of attempt 41.
    for name, value in {"SUBMITIT_EXECUTOR": "local", "SUBMITIT_LOCAL_JOB_ID": "41",
                        "SUBMITIT_LOCAL_NTASKS": "1", "SUBMITIT_LOCAL_JOB_NUM_NODES": "1",
                        "SUBMITIT_LOCAL_NODEID": "0", "SUBMITIT_LOCAL_GLOBALID": "0",
                        "SUBMITIT_LOCAL_LOCALID": "0"}.items():
        monkeypatch.setenv(name, value)
    task = worker.TuningTask(str(registry.home), job_id)
    assert task.checkpoint() is None  # a resize is pending: end the attempt, do not requeue
    attempt = registry.load(job_id).current_attempt
    assert (attempt.state, attempt.reason) == (
        "STOPPED", "stopped for a resize outside the training loop")

    # submitit then raises in rank 0; the worker's failure record leaves the stop standing.
    state = registry.update(job_id, lambda st: worker._mark_attempt_failed(
        st, "41", "UncompletedJobError: Job not requeued", False))
    assert state.current_attempt.state == "STOPPED" and state.errors == []


def test_without_a_resize_the_checkpoint_requeues_as_is(tmp_path: Path, monkeypatch):
    registry = Registry(tmp_path / "home")
    job_id = _running_job(tmp_path, registry)
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "local")
    delayed = worker.TuningTask(str(registry.home), job_id).checkpoint()
    assert delayed.function.job_id == job_id
    assert registry.load(job_id).current_attempt.state == "RUNNING"
