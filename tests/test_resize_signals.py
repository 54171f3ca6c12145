"""A resize reaches a running attempt as one SIGUSR2 per round, a USR2 that arrives after the
training loop stopped is ignored, and submitit's end of an attempt whose resize is pending is
recorded as a stop, not a failure.

A USR2 that reaches rank 0 once its training loop has stopped (a repeated one, or the first when
the loop stopped on the registry's pending resize before the signal came) goes to submitit's
handler, which raises wherever rank 0 is: the attempt once read FAILED although it stopped as
asked and resumed fine."""

from __future__ import annotations

import os
import signal
from datetime import datetime, timezone
from pathlib import Path

import pytest
from submitit.core.utils import UncompletedJobError

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


def test_after_the_training_loop_a_usr2_no_longer_reaches_submitit(monkeypatch):
    """Before the loop, USR2 goes to the handler submitit installed (checkpoint and requeue, or
    end the attempt); after it, the loop has answered the stop and a late one is ignored."""
    received = []
    previous = signal.signal(signal.SIGUSR2, lambda signum, frame: received.append(signum))
    try:
        loop = {"ran": False}
        worker._answer_usr2_once(loop)
        os.kill(os.getpid(), signal.SIGUSR2)
        assert received == [signal.SIGUSR2]
        loop["ran"] = True
        os.kill(os.getpid(), signal.SIGUSR2)
        assert received == [signal.SIGUSR2]
    finally:
        signal.signal(signal.SIGUSR2, previous)


def test_submitits_end_of_an_attempt_with_a_resize_pending_is_a_stop(tmp_path: Path):
    registry = Registry(tmp_path / "home")
    resizing = _running_job(tmp_path, registry, pending_resize={
        "gpus": 2, "from_slurm_job_id": "41", "requested_at": "2026-01-01T00:01:00.000+00:00"})
    running = _running_job(tmp_path, registry)
    ended = UncompletedJobError("Job not requeued because: checkpoint returned None.")
    assert worker._stopped_for_resize(ended, registry, resizing)
    assert not worker._stopped_for_resize(ended, registry, running)
    assert not worker._stopped_for_resize(RuntimeError("gloo: connection closed"), registry,
                                          resizing)


def test_without_a_resize_the_checkpoint_requeues_as_is(tmp_path: Path, monkeypatch):
    registry = Registry(tmp_path / "home")
    job_id = _running_job(tmp_path, registry)
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "local")
    delayed = worker.TuningTask(str(registry.home), job_id).checkpoint()
    assert delayed.function.job_id == job_id
    assert registry.load(job_id).current_attempt.state == "RUNNING"
