"""Reconciling the registry with Slurm when an attempt records its own end during the round.

A rebalance round loads the jobs, then polls Slurm. An attempt that finishes (or checkpoints and
stops) in between has already written its end to the registry, but the round's snapshot still
reads RUNNING, and Slurm no longer lists it. The live build of the seed bank hit this: a finished
job was counted as a failure, requeued and launched once more."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest

from helpers import GOOD
from ptctl.config import Profile
from ptctl.backends.base import AttemptStatus
from ptctl.jobs.lifecycle import move
from ptctl.jobs.registry import Registry, SlurmAttempt
from ptctl.jobs.spec import resolved_spec_dict, spec_from_dict
from ptctl.scheduler.round import Tick, reconcile
from ptctl.scheduler.views import load_job


def _spec() -> dict:
    return resolved_spec_dict(spec_from_dict(GOOD), datetime(2029, 1, 1, tzinfo=timezone.utc))


@pytest.mark.parametrize("own_end,phase,action", [
    ("COMPLETED", "finished", None),    # it finished: nothing to do
    ("STOPPED", "running", "requeue"),  # it checkpointed and stopped: requeue, not a failure
])
def test_an_attempt_ending_during_the_round_is_not_a_failure(tmp_path: Path, own_end, phase,
                                                               action):
    registry = Registry(tmp_path)
    attempt = SlurmAttempt("41", 1, "2026-11-21T18:00:00.000+00:00",
                           started_at="2026-11-21T18:00:05.000+00:00", state="RUNNING")
    job_id = registry.create("race", _spec(), phase="running", gpus=1,
                             attempts=[attempt]).job_id
    snapshot = load_job(registry, job_id)  # the round loads the job...

    def own_end_record(st):  # ... the attempt records its end ...
        st.current_attempt.state = own_end
        st.current_attempt.ended_at = "2026-11-21T18:05:00.000+00:00"
        if phase != st.phase:
            move(st, phase)
    registry.update(job_id, own_end_record)
    snapshot.polled = AttemptStatus(job_id="41", state="COMPLETED")  # ... and Slurm says ended
    tick = Tick(now=0.0)
    reconcile(registry, snapshot, Profile(name="test"), tick)

    after = registry.load(job_id)
    assert after.failures == 0
    assert [a.state for a in after.attempts] == [own_end]
    assert after.phase == ("finished" if own_end == "COMPLETED" else "queued")
    assert [a["action"] for a in tick.actions] == ([action] if action else [])


def test_an_input_error_fails_the_job_after_one_attempt(tmp_path: Path):
    """Bad data fails every attempt alike: the attempt that says so is the last one."""
    registry = Registry(tmp_path)
    attempt = SlurmAttempt("41", 1, "2026-11-21T18:00:00.000+00:00", state="FAILED",
                           reason="/d.jsonl:3: not valid JSON", fatal=True)
    job_id = registry.create("bad", _spec(), phase="running", gpus=1,
                             attempts=[attempt]).job_id
    job = load_job(registry, job_id)
    job.polled = AttemptStatus(job_id="41", state="COMPLETED")
    tick = Tick(now=0.0)
    reconcile(registry, job, Profile(name="test"), tick)
    after = registry.load(job_id)
    assert after.phase == "failed" and after.failures == 1 and after.ended_at
    assert [a.state for a in after.attempts] == ["FAILED"]
    assert after.errors[-1] == "failed on bad input (not retried): /d.jsonl:3: not valid JSON"
    assert [a["action"] for a in tick.actions] == ["failed"]


def test_an_attempt_ending_unrecorded_is_failed_and_counted_once(tmp_path: Path):
    """A process that died without recording its end is a failed attempt, whatever its exit
    code, and later rounds do not count it again while the job waits in the queue."""
    registry = Registry(tmp_path)
    attempt = SlurmAttempt("41", 1, "2026-11-21T18:00:00.000+00:00", state="RUNNING")
    job_id = registry.create("dies", _spec(), phase="running", gpus=1,
                             attempts=[attempt]).job_id
    for _ in range(2):
        job = load_job(registry, job_id)
        job.polled = AttemptStatus(job_id="41", state="COMPLETED")
        reconcile(registry, job, Profile(name="test"), Tick(now=0.0))
    after = registry.load(job_id)
    assert after.phase == "queued" and after.failures == 1
    assert after.attempts[0].state == "FAILED" and "COMPLETED" in after.attempts[0].reason


@pytest.mark.parametrize("polled,phase,action", [
    # scancel by the job's owner: it ends cancelled, its checkpoints kept for `ptctl resume`
    (AttemptStatus("41", "CANCELLED", cancelled_by="1000", user_id="1000"), "cancelled",
     "cancelled"),
    # no accounting to say who: taken as the owner's
    (AttemptStatus("41", "CANCELLED"), "cancelled", "cancelled"),
    # an administrator's scancel, a preemption, a node failure, a time limit: a fault
    (AttemptStatus("41", "CANCELLED", cancelled_by="0", user_id="1000"), "queued", "retry"),
    (AttemptStatus("41", "PREEMPTED", user_id="1000"), "queued", "retry"),
    (AttemptStatus("41", "NODE_FAIL", user_id="1000"), "queued", "retry"),
    (AttemptStatus("41", "TIMEOUT", user_id="1000"), "queued", "retry"),
])
def test_who_ended_the_slurm_job_decides_cancelled_or_relaunched(tmp_path: Path, polled, phase,
                                                                 action):
    registry = Registry(tmp_path)
    attempt = SlurmAttempt("41", 1, "2026-11-21T18:00:00.000+00:00", state="RUNNING")
    job_id = registry.create("gone", _spec(),
                             phase="running", gpus=1, attempts=[attempt]).job_id
    job = load_job(registry, job_id)
    job.polled = polled
    tick = Tick(now=0.0)
    reconcile(registry, job, Profile(name="test"), tick)
    after = registry.load(job_id)
    assert after.phase == phase and after.gpus == 0
    assert [a["action"] for a in tick.actions] == [action]
    if phase == "cancelled":
        assert after.attempts[-1].state == "CANCELLED" and after.failures == 0
        assert "scancel by the job's owner" in after.attempts[-1].reason
    else:
        assert after.failures == 1 and after.attempts[-1].state == polled.state


def test_sacct_lines_say_who_cancelled_and_who_owns():
    from ptctl.backends.slurm import parse_sacct_line

    jid, job = parse_sacct_line("57|CANCELLED by 0|None|node1|billing=1,cpu=1,gres/gpu=2,"
                                "node=1||2026-12-05T07:00:00|2026-12-05T07:01:00|debug|1000")
    assert (jid, job.state, job.cancelled_by, job.user_id, job.gpus, job.partition) == \
        ("57", "CANCELLED", "0", "1000", 2, "debug")
    assert not job.cancelled_by_owner and job.finished
    _, job = parse_sacct_line("58|PENDING|BeginTime|None assigned||gres/gpu=1|Unknown|Unknown|"
                              "debug|0")
    assert (job.state, job.reason, job.cancelled_by, job.gpus, job.start) == \
        ("PENDING", "BeginTime", None, 1, None)
