"""One scheduling round: lock, reconcile, decide, act, complete resizes, feed the bank.

`ptctl rebalance` (cron), `ptctl submit`, `ptctl resize` and `bank build --submit` all run
rounds and launches under the same lock (`round_lock`), so that two of them never decide on
the same GPUs at once.

Crash safety: every step first records its intent in the job's state (pending_resize), then acts,
then records the outcome. A rebalance killed at any point leaves a record from which the next
one completes the step: a resize whose old attempt has ended is relaunched; a launch whose
registry write was lost is found again by its unique attempt name (see launch).
"""

from __future__ import annotations

import contextlib
import signal
import time
from dataclasses import dataclass, field
from typing import Any, Iterator

from ptctl.backends import backend_for
from ptctl.backends.base import AttemptStatus
from ptctl.config import Profile
from ptctl.errors import PtctlError, SlurmUnreachableError
from ptctl.fsutil import file_lock, try_file_lock, utcnow
from ptctl.jobs.lifecycle import Phase, move
from ptctl.jobs.registry import JobState, Registry
from ptctl.planner.interface import Decision
from ptctl.scheduler.launch import launch
from ptctl.scheduler.views import (ENDED_ATTEMPT_STATES, HOLDING, Fence, LiveJob, fences,
                                   load_live_jobs, plan, poll_attempts)


@dataclass
class Tick:
    """What one round saw and did; printed by rebalance and kept for --json."""

    now: float
    actions: list[dict[str, Any]] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)  # job records skipped, one line each
    fenced: list[Fence] = field(default_factory=list)  # GPUs unreadable jobs may hold
    signalled: set[str] = field(default_factory=set)  # attempts sent a stop signal this round

    def act(self, job_id: str, action: str, **detail: Any) -> None:
        self.actions.append({"job": job_id, "action": action, **detail})


@contextlib.contextmanager
def round_lock(registry: Registry, *, wait: bool = True, create: bool = True) -> Iterator[bool]:
    """The lock of rounds and launches; yields False when `wait` is off and it is taken. With
    `create` off (readers) a missing lock file is not made and no lock is taken."""
    path = registry.home / "rebalance.lock"
    if wait:
        with file_lock(path, create=create) as locked:
            yield locked
    else:
        with try_file_lock(path) as locked:
            yield locked


# --- acting -----------------------------------------------------------------------------------

def reconcile(registry: Registry, job: LiveJob, profile: Profile, tick: Tick) -> None:
    """Bring the registry in line with what Slurm says about the current attempt."""
    state, attempt = job.state, job.state.current_attempt
    progress = job.progress
    if progress is not None and progress.steps_per_s and progress.world_size:
        gpus, rate = str(progress.world_size), float(progress.steps_per_s)
        if state.estimates.get("steps_per_s", {}).get(gpus) != rate:
            job.state = registry.update(job.job_id, lambda st: st.estimates.setdefault(
                "steps_per_s", {}).__setitem__(gpus, rate))
    if attempt is None or state.is_terminal:
        return
    if job.attempt_alive:
        if job.polled.state == "RUNNING" and state.phase == Phase.PENDING:
            job.state = registry.update(job.job_id, _mark_running)
        return
    if attempt.state == "COMPLETED" or state.phase == Phase.FINISHED:
        return
    # The attempt has ended without finishing the job.
    if state.pending_resize:
        return  # complete_resizes relaunches it
    outcome: dict[str, bool] = {}

    def record(st: JobState) -> None:
        # Decide on the state read under the lock: the attempt may have recorded its own end
        # (finished, or stopped) after this round loaded the job and before Slurm was polled.
        cur = st.current_attempt
        # A queued job's last attempt was reconciled already: it is not counted twice.
        if (st.is_terminal or st.phase == Phase.QUEUED or st.pending_resize or cur is None
                or cur.slurm_job_id != attempt.slurm_job_id or cur.state == "COMPLETED"):
            return
        if job.polled is not None and job.polled.cancelled_by_owner:
            _owner_cancelled(st, job.polled)
            return
        outcome["ended_ok"] = cur.state == "STOPPED"
        if cur.state not in ENDED_ATTEMPT_STATES:
            polled = job.polled.state if job.polled is not None else "LOST"
            # It ended without recording an outcome: whatever the exit code, the job failed.
            cur.state = "FAILED" if polled == "COMPLETED" else polled
            cur.reason = cur.reason or f"ended without a result (backend: {polled})"
            cur.ended_at = cur.ended_at or utcnow()
        if not outcome["ended_ok"]:
            st.failures += 1
        move(st, Phase.QUEUED)
        st.gpus = 0

    job.state = registry.update(job.job_id, record)
    if job.state.phase == Phase.CANCELLED and state.phase != Phase.CANCELLED:
        tick.act(job.job_id, "cancelled", reason=job.state.current_attempt.reason)
    if "ended_ok" not in outcome:
        return
    ended_ok = outcome["ended_ok"]
    fatal = job.state.current_attempt.fatal
    if not ended_ok and (fatal or job.state.failures >= profile.max_attempts):
        tail = log_tail(registry, job.job_id, lines=5)
        job.state = registry.update(job.job_id, lambda st: _fail(st, tail))
        tick.act(job.job_id, "failed", attempts=job.state.failures)
    else:
        tick.act(job.job_id, "requeue" if ended_ok else "retry", failures=job.state.failures)


def _owner_cancelled(state: JobState, polled: AttemptStatus) -> None:
    """The job's owner cancelled its Slurm job (`scancel`): the job ends cancelled, its
    checkpoints kept for `ptctl resume`. ptctl's own cancels never come here: `ptctl cancel`
    records the job cancelled before its scancel, and a resize only signals (and records its
    intent first)."""
    attempt = state.current_attempt
    attempt.state, attempt.ended_at = "CANCELLED", attempt.ended_at or utcnow()
    attempt.reason = "scancel by the job's owner" + (
        f" (uid {polled.cancelled_by})" if polled.cancelled_by else "")
    state.gpus = 0
    move(state, Phase.CANCELLED)


def _mark_running(state: JobState) -> None:
    if state.phase == Phase.PENDING:  # re-checked under the lock: the attempt may have said so
        move(state, Phase.RUNNING)


def _fail(state: JobState, tail: str) -> None:
    if state.is_terminal:  # re-checked under the lock: cancelled meanwhile
        return
    move(state, Phase.FAILED)
    attempt = state.current_attempt
    if attempt.fatal:
        state.errors.append(f"failed on bad input (not retried): {attempt.reason}")
    else:
        state.errors.append(f"failed {state.failures} times; last log lines:\n{tail}")


def request_resize(registry: Registry, job: LiveJob, gpus: int, profile: Profile,
                   tick: Tick) -> None:
    """Record the resize, then ask the running attempt to checkpoint and stop."""
    attempt = job.state.current_attempt
    job.state = registry.update(job.job_id, lambda st: _set_resize(st, gpus))
    if job.state.pending_resize is None:
        return  # it ended since the round read it
    backend_for(profile).signal(attempt.slurm_job_id, signal.SIGUSR2)
    tick.signalled.add(attempt.slurm_job_id)
    tick.act(job.job_id, "resize", gpus_from=attempt.gpus, gpus_to=gpus)


def _set_resize(state: JobState, gpus: int) -> None:
    if state.is_terminal:  # re-checked under the lock: finished or cancelled meanwhile
        return
    state.pending_resize = {"gpus": gpus, "from_slurm_job_id": state.current_attempt.slurm_job_id,
                            "requested_at": utcnow()}
    move(state, Phase.RESIZING)


def _requeue_stopped(state: JobState) -> None:
    if state.is_terminal:  # re-checked under the lock: finished as it stopped
        return
    state.pending_resize, state.gpus = None, 0
    move(state, Phase.QUEUED)


def _record_resize_stop(state: JobState, slurm_state: str | None) -> None:
    """Mark the attempt a resize ended as STOPPED, if its rank 0 could not say so itself.

    USR2 that reaches an attempt before its training loop runs (interpreter start, model load)
    ends it in submitit's handler, before rank 0 can record anything: its last checkpoint is
    still the state to resume, so the attempt stopped as asked.
    """
    attempt = state.current_attempt
    if attempt.state not in ENDED_ATTEMPT_STATES:  # re-checked under the registry's lock
        attempt.state = "STOPPED"
        attempt.ended_at = attempt.ended_at or utcnow()
        attempt.reason = ("stopped for a resize before training started"
                          f" (Slurm: {slurm_state or 'gone'})")


def complete_resizes(registry: Registry, jobs: list[LiveJob], profile: Profile, tick: Tick,
                     wait_s: float) -> None:
    """Relaunch every job whose resize stop has completed, waiting up to `wait_s` for them."""
    deadline = time.monotonic() + wait_s
    backend = backend_for(profile)
    waiting = [j for j in jobs if j.state.pending_resize]
    poll_attempts(waiting, profile)
    # Signal again the attempts an earlier round asked to stop (it may have died before its
    # signal went out), once: a second USR2 that reaches rank 0 after its training loop stopped
    # lands in submitit's handler instead of the loop's.
    for job in waiting:
        attempt_id = job.state.current_attempt.slurm_job_id
        if job.attempt_alive and attempt_id not in tick.signalled:
            backend.signal(attempt_id, signal.SIGUSR2)
            tick.signalled.add(attempt_id)
    while waiting:
        poll_attempts(waiting, profile)
        still = []
        for job in waiting:
            if job.attempt_alive:
                still.append(job)
                continue
            if job.state.current_attempt.state not in ENDED_ATTEMPT_STATES:
                slurm_state = job.polled.state if job.polled is not None else None
                job.state = registry.update(job.job_id,
                                            lambda st: _record_resize_stop(st, slurm_state))
            gpus = job.state.pending_resize["gpus"]
            if gpus == 0:  # checkpointed to give its GPUs back: it waits in the queue
                job.state = registry.update(job.job_id, _requeue_stopped)
                tick.act(job.job_id, "queued")
                continue
            launch_or_record(registry, job, gpus, profile, tick, "relaunch")
        waiting = still
        if not waiting or time.monotonic() >= deadline:
            break
        time.sleep(1.0)


def launch_or_record(registry: Registry, job: LiveJob, gpus: int, profile: Profile,
                     tick: Tick, action: str) -> bool:
    """Submit an attempt; a failed sbatch is recorded on the job and retried next round.
    Whether it was submitted."""
    try:
        launch(registry, job.job_id, gpus, profile)
    except SlurmUnreachableError:
        raise  # the whole round stops: nothing can be done until slurmctld answers
    except PtctlError as exc:
        message = f"launch with {gpus} GPU(s) failed (retried next rebalance): {exc}"
        job.state = registry.update(job.job_id, lambda st: _add_error(st, message))
        tick.act(job.job_id, "launch-failed", gpus=gpus, error=str(exc))
        return False
    job.state = registry.load(job.job_id)
    tick.act(job.job_id, action, gpus=gpus)
    return True


def _add_error(state: JobState, message: str) -> None:
    if not state.errors or state.errors[-1] != message:  # the same failure again is no news
        state.errors.append(message)


# A predicted finish moves with the clock every round; it is news once it moved this much (the
# planner's slot).
FINISH_NEWS_S = 60.0


def _record_decision(registry: Registry, job: LiveJob, decision: Decision, memory: bool) -> None:
    """Keep the policy's estimates, and its memory unless the decision could not be carried
    out (a failed launch did not start the job: its memory of when it last moved stays)."""
    estimates = {"predicted_finish": decision.predicted_finish_s,
                 "infeasible": decision.action == "infeasible", "reason": decision.reason}
    old = job.state.estimates
    same = (all(old.get(k) == estimates[k] for k in ("infeasible", "reason"))
            and _same_finish(old.get("predicted_finish"), decision.predicted_finish_s))
    new_memory = memory and decision.memory != job.state.policy_memory
    if same and not new_memory:
        return

    def change(st: JobState) -> None:
        if new_memory:
            st.policy_memory.clear()
            st.policy_memory.update(decision.memory)
        if not same:
            st.estimates.update(estimates)
    job.state = registry.update(job.job_id, change)


def _same_finish(old: float | None, new: float | None) -> bool:
    if old is None or new is None:
        return old is new
    return abs(old - new) < FINISH_NEWS_S


def carry_out(registry: Registry, jobs: dict[str, LiveJob], decisions: list[Decision],
              profile: Profile, tick: Tick) -> None:
    for decision in decisions:
        job = jobs.get(decision.job_id)
        if job is None:
            continue
        if decision.action == "decline":
            _record_decision(registry, job, decision, memory=True)
            job.state = registry.update(job.job_id, lambda st: _decline(st, decision.reason))
            tick.act(job.job_id, "declined", reason=decision.reason)
            continue
        current = job.state.gpus if job.state.phase in HOLDING else 0
        done = True
        if current == 0 and decision.gpus > 0:
            done = launch_or_record(registry, job, decision.gpus, profile, tick, "start")
        elif current > 0 and decision.gpus != current:
            # gpus == 0 means: checkpoint and go back to the queue.
            request_resize(registry, job, decision.gpus, profile, tick)
        _record_decision(registry, job, decision, memory=done)


def _decline(state: JobState, reason: str) -> None:
    if state.is_terminal:  # re-checked under the lock: cancelled meanwhile
        return
    move(state, Phase.CANCELLED)
    state.errors.append(f"declined by the scheduling policy: {reason}")


def bank_finished(registry: Registry, jobs: list[LiveJob], bank_dir: str, tick: Tick) -> None:
    """Add the prompts of finished jobs whose spec asks for it to their model's Prompt Bank.

    The entry id is the job id, so a repeated add replaces rather than duplicates, and the
    entry is recorded in the job's estimates so that the next round skips it."""
    todo = [j for j in jobs if j.state.phase == Phase.FINISHED
            and j.spec["prompt"].get("add_to_bank") and "bank_entry" not in j.state.estimates]
    if not todo:
        return
    from ptctl.bank.ingest import add_from_result

    for job in todo:
        try:
            entry = add_from_result(bank_dir, registry.paths(job.job_id).root)
        except PtctlError as exc:
            message = f"not added to the Prompt Bank: {exc}"
            job.state = registry.update(job.job_id, lambda st: (
                st.estimates.__setitem__("bank_entry", None), st.errors.append(message)))
            tick.act(job.job_id, "bank-failed", error=str(exc))
            continue
        job.state = registry.update(job.job_id,
                                    lambda st: st.estimates.__setitem__("bank_entry", entry))
        tick.act(job.job_id, "banked", entry=entry)


def rebalance_once(registry: Registry, profile: Profile, policy: str, *, dry_run: bool = False,
                   resize_wait_s: float = 60.0, bank_dir: str | None = None,
                   wait_for_lock: bool = True) -> Tick | None:
    """One scheduling round under the round lock. Safe to run again right after: it then
    changes nothing. None when `wait_for_lock` is off and another round holds the lock."""
    with round_lock(registry, wait=wait_for_lock) as locked:
        if not locked:
            return None
        tick = Tick(now=time.time())
        jobs = load_live_jobs(registry, include_terminal=bank_dir is not None)
        tick.unreadable = jobs.unreadable
        fenced = fences(registry, jobs, profile)
        poll_attempts(jobs, profile, fenced)
        tick.fenced = [f for f in fenced if f.gpus]
        if not dry_run:
            for job in jobs:
                reconcile(registry, job, profile, tick)
            complete_resizes(registry, jobs, profile, tick, wait_s=0.0)
            if bank_dir is not None:
                bank_finished(registry, jobs, bank_dir, tick)
        jobs = [j for j in jobs if not j.state.is_terminal]
        tick.decisions = plan(jobs, profile, policy, tick.now, fenced=tick.fenced)
        if dry_run:
            return tick
        carry_out(registry, {j.job_id: j for j in jobs}, tick.decisions, profile, tick)
        complete_resizes(registry, [j for j in jobs if j.state.pending_resize], profile, tick,
                         wait_s=resize_wait_s)
        return tick


def log_tail(registry: Registry, job_id: str, lines: int = 20) -> str:
    """The last lines of the current attempt's rank-0 logs (stderr, then stdout)."""
    attempt = registry.load(job_id).current_attempt
    if attempt is None:
        return ""
    texts = []
    for stream in ("err", "out"):
        for path in registry.paths(job_id).log_files(attempt.slurm_job_id, 0, stream):
            texts += path.read_text(errors="replace").splitlines()[-lines:]
    return "\n".join(texts[-lines:])
