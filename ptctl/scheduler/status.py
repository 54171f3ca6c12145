"""What `ptctl status` shows: the registry joined with ONE batched poll per profile in use,
with each live job's Slurm job, partition, state and pending reason, deadline slack, ETA and
predicted violation, and each ended job's outcome and end against its deadline.

While slurmctld does not answer, the rows are ptctl's own records with the Slurm fields unknown
(None), and `StatusReport.unreachable` says why: the command prints them, then exits 75."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from ptctl.backends import backend_for
from ptctl.config import Config, Profile, load_profile
from ptctl.errors import SlurmUnreachableError
from ptctl.jobs.lifecycle import Phase
from ptctl.jobs.registry import JobState, Registry
from ptctl.scheduler.views import (LiveJob, LiveJobs, epoch, iso, load_job, load_live_jobs,
                                   poll_attempts, remaining_steps)


@dataclass
class StatusReport:
    rows: list[dict[str, Any]]
    unreadable: list[str] = field(default_factory=list)  # job records skipped, one line each
    unreachable: str | None = None  # why Slurm could not be asked, when it could not


def status_rows(cfg: Config, job_ids: list[str] | None, include_terminal: bool) -> StatusReport:
    """One record per job: the named ones, else every live (or every) job."""
    registry = Registry(cfg.home)
    if job_ids:
        jobs = LiveJobs([], {})
        jobs += [load_job(registry, job_id) for job_id in job_ids]
    else:
        jobs = load_live_jobs(registry, include_terminal=include_terminal)
    by_profile: dict[str, list[LiveJob]] = {}
    for job in (j for j in jobs if not j.state.is_terminal):
        by_profile.setdefault(job.state.profile or cfg.profile, []).append(job)
    unknown: set[str] = set()
    unreachable = None
    for name, group in by_profile.items():
        try:
            poll_attempts(group, load_profile(cfg, name))
        except SlurmUnreachableError as exc:
            unreachable = str(exc)
            unknown.update(j.job_id for j in group)
    now = time.time()
    return StatusReport([status_record(job, now, slurm_known=job.job_id not in unknown)
                         for job in jobs], jobs.unreadable, unreachable)


def status_record(job: LiveJob, now: float, slurm_known: bool = True) -> dict[str, Any]:
    """A live job carries its slack, ETA and risk; an ended one when it ended against its
    deadline and its outcome in words (risk and slack mean nothing once it has ended).
    `slurm_known` False: Slurm could not be asked, so its fields are None."""
    state, progress = job.state, job.progress
    if progress is not None:
        step, metrics = progress.step, progress.metrics
    else:
        step, metrics = state.progress.get("step", 0), None
    deadline = epoch(job.spec["deadline"])
    attempt = state.current_attempt
    polled = job.polled if slurm_known and not state.is_terminal else None
    record = {
        "job_id": state.job_id, "name": state.name, "phase": state.phase,
        "outcome": outcome_words(state, job.spec),
        "slurm_job_id": attempt.slurm_job_id if attempt else None,
        "slurm_known": slurm_known,
        # An ended job shows what its attempts recorded, not what the backend says of the
        # process now (a failed attempt's process may well have exited 0).
        "slurm_state": (polled.state if polled is not None else
                        attempt.state if attempt and slurm_known else None),
        "slurm_reason": polled.reason or None if polled is not None else None,
        "partition": polled.partition or None if polled is not None else None,
        "gpus": state.gpus, "world_size": progress.world_size if progress is not None else None,
        "step": step or 0, "max_steps": job.spec["training"]["max_steps"],
        "target": job.spec["target"], "metrics": metrics or state.progress.get("metrics") or {},
        "deadline": job.spec["deadline"], "slack_s": None, "eta": None, "eta_source": None,
        "rate_source": None, "predicted_violation": None, "ended_at": None,
        "deadline_margin_s": None, "deadline_met": None,
        "pending_resize": state.pending_resize, "pinned_gpus": state.pinned_gpus,
        "held": state.held, "failures": state.failures,
        "errors": state.errors[-3:],
        "attempts": [a.__dict__ for a in state.attempts],
    }
    if state.is_terminal:
        margin = deadline_margin_s(state, job.spec)
        record.update(ended_at=state.ended_at or state.updated_at, deadline_margin_s=margin,
                      deadline_met=margin >= 0)
        return record
    left, _ = remaining_steps(job)
    # The all-inclusive rate (evaluations and saves counted: ptctl.jobs.progress); before the
    # job measures one, the ETA is the plan's predicted finish.
    rate = progress.steps_per_s if progress is not None else None
    measured = now + left / rate if rate and state.gpus else None
    eta = measured if measured is not None else state.estimates.get("predicted_finish")
    # The risk follows the ETA shown; with none, the plan's verdict.
    late = eta > deadline if eta is not None else bool(state.estimates.get("infeasible"))
    record.update(slack_s=deadline - now, eta=iso(eta), eta_source=(
        None if eta is None else "measured" if measured is not None else "plan"),
        rate_source="measured" if rate else state.estimates.get("rate_source"),
        predicted_violation=late)
    return record


def usage(state: JobState, profile: Profile, now: float) -> dict[str, Any]:
    """Elapsed time and GPU-hours over all the job's attempts: accounting's figures where
    Slurm keeps them (ElapsedRaw x allocated GPUs, requeued runs included), else ptctl's own
    attempt records (start to end, or to now for a live attempt, x the attempt's GPUs)."""
    ids = [a.slurm_job_id for a in state.attempts]
    try:
        accounted = backend_for(profile).usage(ids) if ids else {}
    except SlurmUnreachableError:
        accounted = {}
    elapsed_s = gpu_s = 0.0
    sources = set()
    for attempt in state.attempts:
        if attempt.slurm_job_id in accounted:
            seconds, gpu_seconds = accounted[attempt.slurm_job_id]
            # Accounting that does not track gres/gpu allocates none: the attempt's count.
            gpu_seconds = gpu_seconds or seconds * attempt.gpus
            sources.add("sacct")
        else:
            live = attempt is state.current_attempt and not state.is_terminal
            end = attempt.ended_at or (iso(now) if live else None)
            seconds = (epoch(end) - epoch(attempt.started_at)
                       if attempt.started_at and end else 0.0)
            gpu_seconds = seconds * attempt.gpus
            sources.add("ptctl")
        elapsed_s += seconds
        gpu_s += gpu_seconds
    return {"attempts": len(state.attempts), "elapsed_s": elapsed_s,
            "gpu_hours": gpu_s / 3600.0, "source": "+".join(sorted(sources)) or None}


# Times a job's estimates keep as epoch seconds, for the planner's arithmetic.
_EPOCH_ESTIMATES = ("predicted_finish", "submitted_at")


def state_document(state: JobState) -> dict[str, Any]:
    """A job's record as `--json` shows it: every time ISO-8601 UTC (as everywhere in
    `--json`), and without the policy's private memory."""
    doc = state.to_dict()
    doc.pop("policy_memory")
    doc["estimates"] = {k: iso(v) if k in _EPOCH_ESTIMATES and isinstance(v, (int, float))
                        else v for k, v in doc["estimates"].items()}
    return doc


def deadline_margin_s(state: JobState, spec: dict[str, Any]) -> float:
    """Seconds from the end of an ended job to its deadline: negative when it ended late.
    Records from before `ended_at` existed are judged by their last update."""
    return epoch(spec["deadline"]) - epoch(state.ended_at or state.updated_at)


def outcome_words(state: JobState, spec: dict[str, Any]) -> str:
    """How the job ended (or where it is), for people: scripts read `phase`."""
    metrics = state.progress.get("metrics") or {}
    metric = str(spec["target"]).split()[0]
    got = f"{metric} {metrics[metric]:.3f}" if metric in metrics else f"no {metric} measured"
    if state.phase == Phase.FINISHED:
        return f"target reached ({got}, target {spec['target']})"
    if state.phase == Phase.UNMET:
        return (f"stopped at max_steps ({state.progress.get('step', '?')}), target not reached "
                f"({got}, target {spec['target']})")
    if state.phase == Phase.FAILED and state.errors:
        # "failed 3 times; last log lines:" and the tail: the first line and the last one.
        lines = state.errors[-1].splitlines()
        return lines[0] if len(lines) == 1 else f"{lines[0].split(';')[0]}: {lines[-1]}"
    return str(state.phase)


ENDED_WORDS = {Phase.FINISHED: "target reached", Phase.UNMET: "target not reached",
               Phase.FAILED: "failed", Phase.CANCELLED: "cancelled"}

