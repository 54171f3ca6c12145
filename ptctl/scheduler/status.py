"""What `ptctl status` shows: the registry joined with ONE batched poll per profile in use,
with each job's deadline slack, ETA and predicted violation."""

from __future__ import annotations

import time
from typing import Any

from ptctl.config import Config, load_profile
from ptctl.jobs.lifecycle import Phase
from ptctl.jobs.registry import Registry
from ptctl.scheduler.views import (LiveJob, epoch, iso, load_job, load_live_jobs, poll_attempts,
                                   remaining_steps)


def status_rows(cfg: Config, job_ids: list[str] | None,
                include_terminal: bool) -> list[dict[str, Any]]:
    """One record per job: the named ones, else every live (or every) job."""
    registry = Registry(cfg.home)
    if job_ids:
        jobs = [load_job(registry, job_id) for job_id in job_ids]
    else:
        jobs = load_live_jobs(registry, include_terminal=include_terminal)
    by_profile: dict[str, list[LiveJob]] = {}
    for job in jobs:
        by_profile.setdefault(job.state.profile or cfg.profile, []).append(job)
    for name, group in by_profile.items():
        poll_attempts(group, load_profile(cfg, name))
    now = time.time()
    return [status_record(job, now) for job in jobs]


def status_record(job: LiveJob, now: float) -> dict[str, Any]:
    state, progress = job.state, job.progress
    if progress is not None:
        step, metrics = progress.step, progress.metrics
    else:
        step, metrics = state.progress.get("step", 0), None
    deadline = epoch(job.spec["deadline"])
    eta = None
    if not state.is_terminal:
        left, _ = remaining_steps(job)
        rate = progress.steps_per_s if progress is not None else None
        if rate and state.gpus:
            eta = now + left / rate
    elif state.phase == Phase.FINISHED:
        eta = epoch(state.updated_at)
    attempt = state.current_attempt
    return {
        "job_id": state.job_id, "name": state.name, "phase": state.phase,
        "slurm_job_id": attempt.slurm_job_id if attempt else None,
        "slurm_state": (job.polled.state if job.polled is not None
                        else (attempt.state if attempt else None)),
        "gpus": state.gpus, "world_size": progress.world_size if progress is not None else None,
        "step": step or 0, "max_steps": job.spec["training"]["max_steps"],
        "target": job.spec["target"], "metrics": metrics or state.progress.get("metrics") or {},
        "deadline": job.spec["deadline"], "slack_s": deadline - now, "eta": iso(eta),
        "predicted_violation": bool(eta and eta > deadline) or bool(
            state.estimates.get("infeasible")),
        "pending_resize": state.pending_resize, "pinned_gpus": state.pinned_gpus,
        "held": state.held, "failures": state.failures,
        "errors": state.errors[-3:],
        "attempts": [a.__dict__ for a in state.attempts],
    }
