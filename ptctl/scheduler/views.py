"""The live jobs as the policy sees them, and the policy's decisions on them.

Decisions come from `ptctl.planner.policies.decide`, the very function `ptctl sim` runs, fed
with JobViews built from the registry, the jobs' progress records and ONE batched poll of the
backend.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Sequence

from ptctl.backends import backend_for
from ptctl.backends.base import AttemptStatus
from ptctl.config import Profile
from ptctl.errors import PtctlError
from ptctl.jobs.lifecycle import Phase
from ptctl.jobs.progress import Progress
from ptctl.jobs.registry import JobState, Registry
from ptctl.planner.convergence import ConvergenceEstimate, refit, stated_prediction
from ptctl.planner.gpu_need import ClusterModel, ResizeCost
from ptctl.planner.interface import Decision, JobView, Policy
from ptctl.planner.policies import decide
from ptctl.planner.prompttuner import PromptTunerPolicy, PromptTunerSettings
from ptctl.planner.views import job_view as build_view
from ptctl.planner.throughput import ThroughputCurve
from ptctl.scheduler.limits import GpuLimits

# With no speed record for a job's shape and no `steps_per_s_prior` in its profile, plan with
# this many steps/s per GPU: a guess ("uncalibrated": a tiny model on a CPU rank does ~50,
# SmolLM2 ~0.4, a GPU far more), so submit never refuses a job on it; progress replaces it.
PRIOR_STEPS_PER_S = 0.5
# Attempt states in the registry. STOPPED and FAILED say the tasks exited, not that the Slurm
# job is gone: Slurm may requeue it (scontrol requeue, preemption), so Slurm is asked. Only the
# final states are taken as the registry says.
FINAL_ATTEMPT_STATES = ("COMPLETED", "CANCELLED", "LOST")
ENDED_ATTEMPT_STATES = FINAL_ATTEMPT_STATES + ("STOPPED", "FAILED")
# Phases in which a job's attempt holds its GPUs.
HOLDING = (Phase.PENDING, Phase.RUNNING)


def epoch(timestamp: str) -> float:
    return datetime.fromisoformat(timestamp).timestamp()


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="seconds")


@dataclass
class LiveJob:
    """One registered job as the scheduler sees it right now."""

    state: JobState
    spec: dict[str, Any]
    progress: Progress | None
    polled: AttemptStatus | None = None  # the current attempt, None if unknown/ended

    @property
    def job_id(self) -> str:
        return self.state.job_id

    @property
    def attempt_alive(self) -> bool:
        """The current attempt is pending or running (in Slurm or as a local process)."""
        attempt = self.state.current_attempt
        if attempt is None or attempt.state in FINAL_ATTEMPT_STATES:
            return False
        return self.polled is not None and not self.polled.finished

    @property
    def mid_resize(self) -> bool:
        return self.state.phase == Phase.RESIZING or bool(self.state.pending_resize)

    @property
    def frozen(self) -> bool:
        """Out of the policy's hands this round: mid-resize, held by the user, or pinned and
        holding its GPUs (a pinned job in the queue is planned at its pinned count only)."""
        return self.mid_resize or self.state.held or (
            self.state.pinned_gpus is not None and self.state.phase in HOLDING)


# --- reading the world ------------------------------------------------------------------------

def load_job(registry: Registry, job_id: str) -> LiveJob:
    """One job's state, spec and progress (NotFoundError for an unknown id)."""
    return LiveJob(registry.load(job_id), registry.load_spec(job_id),
                   registry.read_progress(job_id))


class LiveJobs(list):
    """The jobs read; `unreadable`: one line per record skipped, naming its file; `skipped`:
    the jobs among them (id -> their state where that reads) whose attempts may hold GPUs."""

    def __init__(self, unreadable: list[str], skipped: dict[str, JobState | None]) -> None:
        super().__init__()
        self.unreadable = unreadable
        self.skipped = skipped


def load_live_jobs(registry: Registry, include_terminal: bool = False) -> LiveJobs:
    """The jobs of the registry (live ones only, unless `include_terminal`). A job whose state
    or spec cannot be read is skipped (its attempts are fenced: `fences`); one whose progress
    record cannot be read is kept with none (skipping it would let a round hand its GPUs to
    others). Either is reported."""
    scan = registry.scan()
    jobs = LiveJobs(scan.unreadable, dict.fromkeys(scan.unreadable_jobs))
    for state in scan.states:
        if state.is_terminal and not include_terminal:
            continue
        try:
            spec = registry.load_spec(state.job_id)
        except PtctlError as exc:
            jobs.unreadable.append(str(exc))
            if not state.is_terminal:
                jobs.skipped[state.job_id] = state
            continue
        try:
            progress = registry.read_progress(state.job_id)
        except PtctlError as exc:
            jobs.unreadable.append(str(exc))
            progress = None
        jobs.append(LiveJob(state, spec, progress))
    return jobs


@dataclass
class Fence:
    """GPUs a job whose record does not read may hold. An unreadable record is no proof that
    the job's attempts ended: each one the backend still reports pending or running stays off
    the budget, at the GPUs the backend reports for it (Slurm), else the count the job's state
    recorded, else the most its spec allows, else the whole budget."""

    job_id: str
    candidates: dict[str, int]  # attempt id -> GPUs to count it at if it is alive
    attempts: list[str] = field(default_factory=list)  # the live ones, once polled
    gpus: int = 0

    def settle(self, polled: dict[str, AttemptStatus]) -> None:
        alive = {a: s for a, s in polled.items() if a in self.candidates and not s.finished}
        self.attempts = sorted(alive)
        self.gpus = sum(status.gpus or self.candidates[a] for a, status in alive.items())

    def to_dict(self) -> dict[str, Any]:
        return {"job": self.job_id, "attempts": self.attempts, "gpus": self.gpus}

    def line(self) -> str:
        return (f"job {self.job_id}: its record does not read and attempt(s) "
                f"{', '.join(self.attempts)} may still run: {self.gpus} GPU(s) kept off the "
                "budget while they do")


# submitit's log folder of an attempt is named by its id: a Slurm job id or a local pid.
_ATTEMPT_FOLDER_RE = re.compile(r"^[0-9]{1,12}$")


def fences(registry: Registry, jobs: LiveJobs, profile: Profile) -> list[Fence]:
    """A fence for each skipped job that has attempts the backend may still run: those its
    state lists as not ended, or, when its state does not read, every attempt log folder
    (submitit makes one per attempt as it submits it). Settled by `poll_attempts`."""
    found = []
    for job_id, state in jobs.skipped.items():
        if state is not None:
            candidates = {a.slurm_job_id: a.gpus for a in state.attempts
                          if a.state not in FINAL_ATTEMPT_STATES}
        else:
            try:
                names = [p.name for p in registry.paths(job_id).logs.iterdir()]
            except OSError:  # no logs/: never launched
                names = []
            most = _most_gpus(registry, job_id, profile)
            candidates = {n: most for n in names if _ATTEMPT_FOLDER_RE.match(n)}
        if candidates:
            found.append(Fence(job_id, candidates))
    return found


def _most_gpus(registry: Registry, job_id: str, profile: Profile) -> int:
    try:
        allowed = allowed_gpus(registry.load_spec(job_id), profile)
    except PtctlError:
        allowed = ()
    return max(allowed, default=profile.gpu_budget)


def poll_attempts(jobs: list[LiveJob], profile: Profile, fenced: Sequence[Fence] = ()) -> None:
    """Fill in each job's current attempt state, and settle each fence: ONE backend query for
    all of them."""
    current = [j for j in jobs if j.state.current_attempt is not None
               and j.state.current_attempt.state not in FINAL_ATTEMPT_STATES]
    extra = [a for fence in fenced for a in fence.candidates]
    if not current and not extra:
        return
    states = backend_for(profile).poll(
        [j.state.current_attempt.slurm_job_id for j in current] + extra)
    for job in current:
        job.polled = states.get(job.state.current_attempt.slurm_job_id)
    for fence in fenced:
        fence.settle(states)


# --- estimates --------------------------------------------------------------------------------

def convergence(job: LiveJob) -> ConvergenceEstimate:
    """Total steps to the target: the bank's prediction (or max_steps), refitted on the job's
    own eval curve (error rate for accuracy targets, loss for loss targets)."""
    max_steps = job.spec["training"]["max_steps"]
    predicted = job.state.estimates.get("predicted_steps") or max_steps
    prior = stated_prediction(min(predicted, max_steps),
                              job.state.estimates.get("predicted_steps_sd_log"))
    curve = job.progress.eval_curve if job.progress else []
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
    done = float(job.progress.step if job.progress else 0)
    room = max(0.0, job.spec["training"]["max_steps"] - done)
    left = min(est.remaining(done, 0.0), room)
    # No margin can take a job past max_steps.
    return left, min(est.sd_iterations, room - left)


def throughput(job: LiveJob) -> ThroughputCurve:
    """Steps/s per GPU count: measured by the job (kept in its estimates), else the prior
    submit chose (speed record, profile or the uncalibrated guess: ptctl.scheduler.admission)."""
    train = job.spec["training"]
    estimates = job.state.estimates
    for rates in (estimates.get("steps_per_s"), estimates.get("prior_steps_per_s")):
        if rates:
            return ThroughputCurve(job.spec["model"], train["global_batch_size"],
                                   {int(g): float(r) for g, r in rates.items()})
    return ThroughputCurve(job.spec["model"], train["global_batch_size"], {1: PRIOR_STEPS_PER_S})


def allowed_gpus(spec: dict[str, Any], profile: Profile) -> tuple[int, ...]:
    """The counts a job spec may run at under `profile` (see `GpuLimits` for why)."""
    return GpuLimits.of(spec, profile).allowed


def cluster_model(profile: Profile) -> ClusterModel:
    return ClusterModel(total_gpus=profile.gpu_budget, gpus_per_node=profile.gpus_per_node,
                        slot_s=60.0,
                        resize_cost=ResizeCost(profile.checkpoint_s, profile.queue_wait_s,
                                               profile.start_s, profile.model_load_s))


def job_view(job: LiveJob, profile: Profile) -> JobView | None:
    """The policy's view of a job; None for a job that no GPU count fits."""
    allowed = allowed_gpus(job.spec, profile)
    if job.state.pinned_gpus is not None:
        allowed = tuple(g for g in allowed if g == job.state.pinned_gpus)
    if not allowed:
        return None
    running = job.state.phase in HOLDING and job.state.gpus > 0
    left, sd = remaining_steps(job)
    return build_view(job.job_id, job.spec["model"], job.spec["training"]["global_batch_size"],
                      epoch(job.state.created_at), epoch(job.spec["deadline"]),
                      gpus=job.state.gpus if running else 0, allowed_gpus=allowed,
                      remaining_iterations=left, remaining_sd=sd, throughput=throughput(job),
                      memory=job.state.policy_memory)


def held_gpus(job: LiveJob) -> int:
    """GPUs a job counts against the budget: its new count while it resizes, else the count
    its attempt runs at."""
    if job.mid_resize:
        return job.state.pending_resize["gpus"] if job.state.pending_resize else 0
    return job.state.gpus if job.state.phase in HOLDING else 0


def plan(jobs: list[LiveJob], profile: Profile, policy: str, now: float,
         extra: Sequence[JobView] = (), fenced: Sequence[Fence] = ()) -> list[Decision]:
    """The policy's decisions for the jobs it may move (plus `extra`, e.g. a job being
    submitted). GPUs held by frozen jobs (mid-resize, held, pinned) and fenced by unreadable
    ones are taken off the budget first."""
    views = [view for job in jobs if not job.frozen
             if (view := job_view(job, profile)) is not None]
    views += list(extra)
    if not views:
        return []
    held = sum(held_gpus(job) for job in jobs if job.frozen) + sum(f.gpus for f in fenced)
    return decide(live_policy(policy, profile), now, max(0, profile.gpu_budget - held), views,
                  cluster_model(profile))


def live_policy(policy: str, profile: Profile) -> str | Policy:
    """The named policy, with the profile's hysteresis where the policy has one."""
    if policy != "prompttuner":
        return policy
    return PromptTunerPolicy(PromptTunerSettings(hold_s=profile.resize_hold_s,
                                                 reclaim_min_gain=profile.reclaim_min_gain))
