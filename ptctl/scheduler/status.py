"""What `ptctl status` shows: the registry joined with ONE batched poll per profile in use,
with each live job's deadline slack, ETA and predicted violation, and each ended job's outcome
and end against its deadline."""

from __future__ import annotations

import time
from typing import Any

from ptctl.config import Config, load_profile
from ptctl.jobs.lifecycle import Phase
from ptctl.jobs.registry import JobState, Registry
from ptctl.scheduler.views import (LiveJob, LiveJobs, epoch, iso, load_job, load_live_jobs,
                                   poll_attempts, remaining_steps)


def status_rows(cfg: Config, job_ids: list[str] | None,
                include_terminal: bool) -> tuple[list[dict[str, Any]], list[str]]:
    """One record per job: the named ones, else every live (or every) job; and one line per
    job record that could not be read (skipped)."""
    registry = Registry(cfg.home)
    if job_ids:
        jobs = LiveJobs([], {})
        jobs += [load_job(registry, job_id) for job_id in job_ids]
    else:
        jobs = load_live_jobs(registry, include_terminal=include_terminal)
    by_profile: dict[str, list[LiveJob]] = {}
    for job in (j for j in jobs if not j.state.is_terminal):
        by_profile.setdefault(job.state.profile or cfg.profile, []).append(job)
    for name, group in by_profile.items():
        poll_attempts(group, load_profile(cfg, name))
    now = time.time()
    return [status_record(job, now) for job in jobs], jobs.unreadable


def status_record(job: LiveJob, now: float) -> dict[str, Any]:
    """A live job carries its slack, ETA and risk; an ended one when it ended against its
    deadline and its outcome in words (risk and slack mean nothing once it has ended)."""
    state, progress = job.state, job.progress
    if progress is not None:
        step, metrics = progress.step, progress.metrics
    else:
        step, metrics = state.progress.get("step", 0), None
    deadline = epoch(job.spec["deadline"])
    attempt = state.current_attempt
    record = {
        "job_id": state.job_id, "name": state.name, "phase": state.phase,
        "outcome": outcome_words(state, job.spec),
        "slurm_job_id": attempt.slurm_job_id if attempt else None,
        # An ended job shows what its attempts recorded, not what the backend says of the
        # process now (a failed attempt's process may well have exited 0).
        "slurm_state": (job.polled.state if job.polled is not None and not state.is_terminal
                        else (attempt.state if attempt else None)),
        "gpus": state.gpus, "world_size": progress.world_size if progress is not None else None,
        "step": step or 0, "max_steps": job.spec["training"]["max_steps"],
        "target": job.spec["target"], "metrics": metrics or state.progress.get("metrics") or {},
        "deadline": job.spec["deadline"], "slack_s": None, "eta": None, "rate_source": None,
        "predicted_violation": None, "ended_at": None, "deadline_margin_s": None,
        "deadline_met": None,
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
    # The all-inclusive rate (evaluations and saves counted: ptctl.jobs.progress).
    rate = progress.steps_per_s if progress is not None else None
    eta = now + left / rate if rate and state.gpus else None
    record.update(slack_s=deadline - now, eta=iso(eta), rate_source=(
        "measured" if rate else state.estimates.get("rate_source")), predicted_violation=bool(
        eta and eta > deadline) or bool(state.estimates.get("infeasible")))
    return record


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

