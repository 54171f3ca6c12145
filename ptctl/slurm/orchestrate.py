"""The live side of the scheduler: registry + Slurm state -> policy -> actions.

`ptctl rebalance` (cron), `ptctl submit`, `ptctl resize` and `ptctl status` all go through here.
Decisions come from `ptctl.planner.policies.decide`, the very function `ptctl sim` runs, fed
with JobViews built from the registry, the jobs' progress records and ONE batched squeue call.

Crash safety: every step first records its intent in the job's state (pending_resize), then acts,
then records the outcome. A rebalance killed at any point leaves a record from which the next
one completes the step: a resize whose old attempt has ended is relaunched; a launch whose
registry write was lost is found again by its unique Slurm job name (see launcher).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from ptctl.config import Profile
from ptctl.errors import PtctlError, SlurmUnreachableError
from ptctl.jobs.registry import JobState, Registry, utcnow
from ptctl.planner.convergence import ConvergenceEstimate, from_bank_prediction, refit
from ptctl.planner.gpu_need import ClusterModel, ResizeCost
from ptctl.planner.interface import Decision, JobView, Policy
from ptctl.planner.policies import decide
from ptctl.planner.prompttuner import PromptTunerPolicy, PromptTunerSettings
from ptctl.planner.throughput import ThroughputCurve
from ptctl.slurm import launcher

# Before a job has reported its speed, plan with this many steps/s per GPU (a tiny model on a
# CPU rank does ~50, SmolLM2 on a CPU rank ~0.4, on a GPU far more: progress replaces it fast).
PRIOR_STEPS_PER_S = 0.5
# Attempt states in the registry. STOPPED and FAILED say the tasks exited, not that the Slurm
# job is gone: Slurm may requeue it (scontrol requeue, preemption), so Slurm is asked. Only the
# final states are taken as the registry says.
FINAL_ATTEMPT_STATES = ("COMPLETED", "CANCELLED", "LOST")
ENDED_ATTEMPT_STATES = FINAL_ATTEMPT_STATES + ("STOPPED", "FAILED")


def epoch(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


@dataclass
class LiveJob:
    """One registered job as the scheduler sees it right now."""

    state: JobState
    spec: dict[str, Any]
    progress: dict[str, Any]
    slurm: Any = None  # cluster.SlurmJobState of the current attempt, None if unknown/ended

    @property
    def job_id(self) -> str:
        return self.state.job_id

    @property
    def attempt_alive(self) -> bool:
        """The current attempt is pending or running (in Slurm or as a local process)."""
        attempt = self.state.current_attempt
        if attempt is None or attempt.state in FINAL_ATTEMPT_STATES:
            return False
        return self.slurm is not None and not self.slurm.finished


@dataclass
class Tick:
    """What one round saw and did; printed by rebalance and kept for --json."""

    now: float
    actions: list[dict[str, Any]] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)

    def act(self, job_id: str, action: str, **detail: Any) -> None:
        self.actions.append({"job": job_id, "action": action, **detail})


# --- reading the world ------------------------------------------------------------------------

def load_job(registry: Registry, job_id: str) -> LiveJob:
    """One job's state, spec and progress (NotFoundError for an unknown id)."""
    return LiveJob(registry.load(job_id), registry.load_spec(job_id),
                   registry.read_progress(job_id))


def load_live_jobs(registry: Registry, include_terminal: bool = False) -> list[LiveJob]:
    jobs = []
    for state in registry.all():
        if state.is_terminal and not include_terminal:
            continue
        jobs.append(LiveJob(state, registry.load_spec(state.job_id),
                            registry.read_progress(state.job_id)))
    return jobs


def poll_attempts(jobs: list[LiveJob], profile: Profile) -> None:
    """Fill in each job's current attempt state: ONE squeue call for all of them."""
    current = [j for j in jobs if j.state.current_attempt is not None
               and j.state.current_attempt.state not in FINAL_ATTEMPT_STATES]
    if not current:
        return
    if profile.executor == "slurm":
        from ptctl.slurm import cluster

        states = cluster.queue_state([j.state.current_attempt.slurm_job_id for j in current])
        for job in current:
            job.slurm = states.get(job.state.current_attempt.slurm_job_id)
    else:
        for job in current:
            job.slurm = _local_state(job.state.current_attempt.slurm_job_id)


def _local_state(pid: str):
    """A local (submitit local executor) attempt: alive while its controller process lives."""
    from ptctl.slurm.cluster import SlurmJobState

    ended = SlurmJobState(job_id=pid, state="COMPLETED")
    try:
        if os.waitpid(int(pid), os.WNOHANG)[0]:  # our own child (submit --wait): reap it
            return ended
    except (ChildProcessError, ValueError):
        pass
    try:
        status = Path(f"/proc/{int(pid)}/status").read_text()
    except (OSError, ValueError):
        return ended
    if "\nState:\tZ" in status:  # a zombie another process has not reaped yet
        return ended
    return SlurmJobState(job_id=pid, state="RUNNING")


# --- estimates --------------------------------------------------------------------------------

def convergence(job: LiveJob) -> ConvergenceEstimate:
    """Total steps to the target: the bank's prediction (or max_steps), refitted on the job's
    own eval curve (error rate for accuracy targets, loss for loss targets)."""
    max_steps = job.spec["training"]["max_steps"]
    predicted = job.state.estimates.get("predicted_steps") or max_steps
    prior = from_bank_prediction(min(predicted, max_steps))
    curve = job.progress.get("eval_curve") or []
    metric, _, value = str(job.spec["target"]).split()
    if len(curve) >= 4:
        steps = [row[0] for row in curve]
        ys = [1.0 - row[1] for row in curve] if metric == "accuracy" else [row[2] for row in curve]
        target = 1.0 - float(value) if metric == "accuracy" else float(value)
        try:
            prior = refit(prior, steps, ys, target)
        except PtctlError:
            pass  # a curve that does not fit yet: keep the prior
    return prior


def remaining_steps(job: LiveJob) -> tuple[float, float]:
    """(expected remaining steps, their sd), never beyond max_steps. The policy adds its own
    safety margin from the sd."""
    est = convergence(job)
    done = float(job.progress.get("step", 0))
    room = max(0.0, job.spec["training"]["max_steps"] - done)
    left = min(est.remaining(done, 0.0), room)
    # No margin can take a job past max_steps.
    return left, min(est.sd_iterations, room - left)


def throughput(job: LiveJob) -> ThroughputCurve:
    """Steps/s per GPU count: measured by the job (kept in its estimates), else a prior."""
    train = job.spec["training"]
    curve = ThroughputCurve(job.spec["model"], train["global_batch_size"],
                            {int(g): float(r) for g, r in
                             job.state.estimates.get("steps_per_s", {}).items()})
    if not curve.measured:
        curve = ThroughputCurve(job.spec["model"], train["global_batch_size"],
                                {1: PRIOR_STEPS_PER_S})
    return curve


def allowed_gpus(spec: dict[str, Any], profile: Profile) -> tuple[int, ...]:
    """Counts a job may run at: within its bounds and the budget, at most one rank per
    micro-batch, and whole nodes once it spans more than one."""
    train = spec["training"]
    micro_batches = max(1, train["global_batch_size"] // train["micro_batch_size"])
    high = min(spec["gpus"]["max"], profile.gpu_budget, micro_batches)
    counts = [g for g in range(spec["gpus"]["min"], high + 1)
              if g <= profile.gpus_per_node or g % profile.gpus_per_node == 0]
    return tuple(counts)


def cluster_model(profile: Profile) -> ClusterModel:
    return ClusterModel(total_gpus=profile.gpu_budget, gpus_per_node=profile.gpus_per_node,
                        slot_s=60.0,
                        resize_cost=ResizeCost(profile.checkpoint_s, profile.queue_wait_s,
                                               profile.start_s, profile.model_load_s))


def job_view(job: LiveJob, profile: Profile) -> JobView | None:
    """The policy's view of a job; None for jobs the policy must not move (mid-resize)."""
    allowed = allowed_gpus(job.spec, profile)
    if not allowed:
        return None
    running = job.state.phase in ("pending", "running") and job.state.gpus > 0
    left, sd = remaining_steps(job)
    return JobView(
        job_id=job.job_id, model=job.spec["model"],
        global_batch=job.spec["training"]["global_batch_size"],
        arrival_s=epoch(job.state.created_at), deadline_s=epoch(job.spec["deadline"]),
        state="running" if running else "queued", gpus=job.state.gpus if running else 0,
        min_gpus=allowed[0], max_gpus=allowed[-1], allowed_gpus=allowed,
        remaining_iterations=left, remaining_sd=sd, throughput=throughput(job),
        memory=dict(job.state.policy_memory))


def plan(jobs: list[LiveJob], profile: Profile, policy: str, now: float,
         extra: list[JobView] = ()) -> list[Decision]:
    """The policy's decisions for the jobs it may move (plus `extra`, e.g. a job being
    submitted). GPUs held by jobs mid-resize are taken off the budget first."""
    views, held = [], 0
    for job in jobs:
        if job.state.phase == "resizing" or job.state.pending_resize:
            held += job.state.pending_resize["gpus"] if job.state.pending_resize else 0
            continue
        view = job_view(job, profile)
        if view is not None:
            views.append(view)
    views += list(extra)
    if not views:
        return []
    return decide(live_policy(policy, profile), now, max(0, profile.gpu_budget - held), views,
                  cluster_model(profile))


def live_policy(policy: str, profile: Profile) -> str | Policy:
    """The named policy, with the profile's hysteresis where the policy has one."""
    if policy != "prompttuner":
        return policy
    return PromptTunerPolicy(PromptTunerSettings(hold_s=profile.resize_hold_s,
                                                 reclaim_min_gain=profile.reclaim_min_gain))


# --- acting -----------------------------------------------------------------------------------

def reconcile(registry: Registry, job: LiveJob, profile: Profile, tick: Tick) -> None:
    """Bring the registry in line with what Slurm says about the current attempt."""
    state, attempt = job.state, job.state.current_attempt
    progress = job.progress
    if progress.get("steps_per_s") and progress.get("world_size"):
        gpus, rate = str(progress["world_size"]), float(progress["steps_per_s"])
        if state.estimates.get("steps_per_s", {}).get(gpus) != rate:
            job.state = registry.update(job.job_id, lambda st: st.estimates.setdefault(
                "steps_per_s", {}).__setitem__(gpus, rate))
    if attempt is None or state.is_terminal:
        return
    if job.attempt_alive:
        if job.slurm.state == "RUNNING" and state.phase == "pending":
            job.state = registry.update(job.job_id, lambda st: setattr(st, "phase", "running"))
        return
    if attempt.state == "COMPLETED" or state.phase == "finished":
        return
    # The attempt has ended without finishing the job.
    if state.pending_resize:
        return  # complete_resizes relaunches it
    outcome: dict[str, bool] = {}

    def record(st: JobState) -> None:
        # Decide on the state read under the lock: the attempt may have recorded its own end
        # (finished, or stopped) after this round loaded the job and before Slurm was polled.
        cur = st.current_attempt
        if (st.is_terminal or st.phase == "finished" or st.pending_resize or cur is None
                or cur.slurm_job_id != attempt.slurm_job_id or cur.state == "COMPLETED"):
            return
        outcome["ended_ok"] = cur.state == "STOPPED"
        if cur.state not in ENDED_ATTEMPT_STATES:
            cur.state = job.slurm.state if job.slurm is not None else "LOST"
            cur.ended_at = cur.ended_at or utcnow()
        if not outcome["ended_ok"]:
            st.failures += 1
        st.phase = "queued"
        st.gpus = 0

    job.state = registry.update(job.job_id, record)
    if "ended_ok" not in outcome:
        return
    ended_ok = outcome["ended_ok"]
    if not ended_ok and job.state.failures >= profile.max_attempts:
        tail = log_tail(registry, job.job_id, lines=5)
        job.state = registry.update(job.job_id, lambda st: _fail(st, tail))
        tick.act(job.job_id, "failed", attempts=job.state.failures)
    else:
        tick.act(job.job_id, "requeue" if ended_ok else "retry", failures=job.state.failures)


def _fail(state: JobState, tail: str) -> None:
    state.phase = "failed"
    state.errors.append(f"failed {state.failures} times; last log lines:\n{tail}")


def request_resize(registry: Registry, job: LiveJob, gpus: int, profile: Profile,
                   tick: Tick) -> None:
    """Record the resize, then ask the running attempt to checkpoint and stop."""
    attempt = job.state.current_attempt
    job.state = registry.update(job.job_id, lambda st: _set_resize(st, gpus))
    signal_attempt(profile, attempt.slurm_job_id, signal.SIGUSR2)
    tick.act(job.job_id, "resize", gpus_from=attempt.gpus, gpus_to=gpus)


def _set_resize(state: JobState, gpus: int) -> None:
    state.pending_resize = {"gpus": gpus, "from_slurm_job_id": state.current_attempt.slurm_job_id,
                            "requested_at": utcnow()}
    state.phase = "resizing"


def _requeue_stopped(state: JobState) -> None:
    state.pending_resize, state.phase, state.gpus = None, "queued", 0


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


def signal_attempt(profile: Profile, slurm_id: str, sig: signal.Signals) -> None:
    """USR2 to every task (training checkpoints and stops); TERM/KILL for cancel."""
    if profile.executor == "slurm":
        subprocess.run(["scancel", f"--signal={sig.name.removeprefix('SIG')}", slurm_id],
                       capture_output=True, timeout=30, check=False)
    # Local attempts poll the registry for a pending resize; nothing to signal.


def complete_resizes(registry: Registry, jobs: list[LiveJob], profile: Profile, tick: Tick,
                     wait_s: float) -> None:
    """Relaunch every job whose resize stop has completed, waiting up to `wait_s` for them."""
    deadline = time.monotonic() + wait_s
    waiting = [j for j in jobs if j.state.pending_resize]
    poll_attempts(waiting, profile)
    for job in waiting:
        if job.attempt_alive:  # again: a rebalance may have died before its signal went out
            signal_attempt(profile, job.state.current_attempt.slurm_job_id, signal.SIGUSR2)
    while waiting:
        poll_attempts(waiting, profile)
        still = []
        for job in waiting:
            if job.attempt_alive:
                still.append(job)
                continue
            if job.state.current_attempt.state not in ENDED_ATTEMPT_STATES:
                slurm_state = job.slurm.state if job.slurm is not None else None
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
                     tick: Tick, action: str) -> None:
    """Submit an attempt; a failed sbatch is recorded on the job and retried next round."""
    try:
        launcher.launch(registry, job.job_id, gpus, profile)
    except SlurmUnreachableError:
        raise  # the whole round stops: nothing can be done until slurmctld answers
    except PtctlError as exc:
        message = f"launch with {gpus} GPU(s) failed (retried next rebalance): {exc}"
        job.state = registry.update(job.job_id, lambda st: st.errors.append(message))
        tick.act(job.job_id, "launch-failed", gpus=gpus, error=str(exc))
        return
    job.state = registry.load(job.job_id)
    tick.act(job.job_id, action, gpus=gpus)


def carry_out(registry: Registry, jobs: dict[str, LiveJob], decisions: list[Decision],
              profile: Profile, tick: Tick) -> None:
    for decision in decisions:
        job = jobs.get(decision.job_id)
        if job is None:
            continue
        memory_changed = decision.memory != job.state.policy_memory
        estimates = {"predicted_finish": decision.predicted_finish_s,
                     "infeasible": decision.action == "infeasible", "reason": decision.reason}
        if memory_changed or any(job.state.estimates.get(k) != v for k, v in estimates.items()):
            job.state = registry.update(job.job_id, lambda st: (
                st.policy_memory.clear(), st.policy_memory.update(decision.memory),
                st.estimates.update(estimates)))
        if decision.action == "decline":
            job.state = registry.update(job.job_id, lambda st: _decline(st, decision.reason))
            tick.act(job.job_id, "declined", reason=decision.reason)
            continue
        current = job.state.gpus if job.state.phase in ("pending", "running") else 0
        if decision.gpus == current:
            continue
        if current == 0 and decision.gpus > 0:
            launch_or_record(registry, job, decision.gpus, profile, tick, "start")
        elif current > 0:
            # gpus == 0 means: checkpoint and go back to the queue.
            request_resize(registry, job, decision.gpus, profile, tick)


def _decline(state: JobState, reason: str) -> None:
    state.phase = "cancelled"
    state.errors.append(f"declined by the scheduling policy: {reason}")


def bank_finished(registry: Registry, jobs: list[LiveJob], bank_dir: str, tick: Tick) -> None:
    """Add the prompts of finished jobs whose spec asks for it to their model's Prompt Bank.

    The entry id is the job id, so a repeated add replaces rather than duplicates, and the
    entry is recorded in the job's estimates so that the next round skips it."""
    todo = [j for j in jobs if j.state.phase == "finished"
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
                   resize_wait_s: float = 60.0, bank_dir: str | None = None) -> Tick:
    """One scheduling round. Safe to run again right after: it then changes nothing."""
    tick = Tick(now=time.time())
    jobs = load_live_jobs(registry, include_terminal=bank_dir is not None)
    poll_attempts(jobs, profile)
    if not dry_run:
        for job in jobs:
            reconcile(registry, job, profile, tick)
        complete_resizes(registry, jobs, profile, tick, wait_s=0.0)
        if bank_dir is not None:
            bank_finished(registry, jobs, bank_dir, tick)
    jobs = [j for j in jobs if not j.state.is_terminal]
    tick.decisions = plan(jobs, profile, policy, tick.now)
    if dry_run:
        return tick
    carry_out(registry, {j.job_id: j for j in jobs}, tick.decisions, profile, tick)
    complete_resizes(registry, [j for j in jobs if j.state.pending_resize], profile, tick,
                     wait_s=resize_wait_s)
    return tick


def log_tail(registry: Registry, job_id: str, lines: int = 20) -> str:
    """The last lines of the current attempt's rank-0 logs (stderr, then stdout)."""
    state = registry.load(job_id)
    attempt = state.current_attempt
    if attempt is None:
        return ""
    folder = registry.paths(job_id).logs / attempt.slurm_job_id
    texts = []
    for suffix in ("err", "out"):
        for path in sorted(folder.glob(f"*_0_log.{suffix}")):
            texts += path.read_text(errors="replace").splitlines()[-lines:]
    return "\n".join(texts[-lines:])
