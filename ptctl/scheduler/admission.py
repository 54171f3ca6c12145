"""What `ptctl submit` (and `ptctl resume`) asks: can this job meet its deadline next to the
live ones, and with how many GPUs does it start.

The new job is planned together with the live jobs by the same policy call a round makes, and
it starts at once on the GPUs that are free now, counted by the rule the rounds use.

Its speed before it reports any comes from the speed record of what ran here
(ptctl.planner.speeds), else the profile's `steps_per_s_prior`, else a guess: a plan on a
guess ("uncalibrated") never refuses a job; the rounds refit it on the job's own progress.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

from ptctl.backends import backend_for
from ptctl.config import Config, Profile
from ptctl.errors import BadInputError, PtctlError, excerpt
from ptctl.jobs.lifecycle import Phase, move
from ptctl.jobs.registry import JobState, Registry
from ptctl.jobs.spec import JobSpec, parse_deadline, resolved_spec_dict
from ptctl.planner import speeds
from ptctl.scheduler.limits import check_spec
from ptctl.scheduler.repeats import earlier_run
from ptctl.scheduler.round import Tick, launch_or_record, round_lock
from ptctl.scheduler.views import (PRIOR_STEPS_PER_S, Fence, LiveJob, epoch, fences,
                                   held_gpus, iso, job_view, load_live_jobs, plan,
                                   poll_attempts)

Say = Callable[[str], None]
# A second submit of the same spec content within this long is warned about (a retyped
# command, a script run twice); it still goes through.
DUPLICATE_WINDOW_S = 600.0


def submit(cfg: Config, profile: Profile, spec: JobSpec, *, origin: str,
           best_effort: bool = False, dry_run: bool = False, calibrate: bool = False,
           info: Say | None = None, warn: Say | None = None) -> dict[str, Any]:
    """Plan the job and, unless `dry_run`, register and launch it; the plan as `--json` shows
    it. `origin` (the spec file) starts every error message. `calibrate`: time the job's shape
    first (ptctl.scheduler.calibration) when the speed record lacks it."""
    now = datetime.now(timezone.utc)
    deadline = spec.deadline_at(now)
    if deadline <= now:
        raise BadInputError(f"{origin}: deadline: {deadline.isoformat()} is in the past")
    check_spec(origin, spec.to_dict(), profile, warn)
    from ptctl.tuning.checks import check_inputs  # transformers loads only here

    check_inputs(spec, origin, warn)
    backend_for(profile).ping()
    if calibrate:
        from ptctl.scheduler import calibration

        if not calibration.measured(cfg, profile, spec):
            calibration.calibrate(cfg, profile, spec, info=info)
        elif info:
            info(f"{origin}: this shape's speed is on record already: no calibration needed")
    choice = _initial_prompt(cfg, spec, info, warn)
    # The bank's prediction with its spread and what the pick was compared with; without a
    # bank query, the whole run.
    prediction = choice["estimates"] if choice else {"predicted_steps": spec.training.max_steps}
    registry = Registry(cfg.home)
    spec_dict = resolved_spec_dict(spec, now)
    repeat = earlier_run(registry, spec_dict, choice["prompt_id"] if choice else None)
    if repeat is not None:
        # Deterministic training: the steps the earlier job took, with no spread around them.
        prediction = prediction | {"predicted_steps": repeat.steps,
                                   "predicted_steps_sd_log": 0.0,
                                   "predicted_interval": [repeat.steps, repeat.steps]}
        if info:
            info(f"{origin}: predicted {repeat.steps} steps, as job {repeat.job_id} of the same "
                 "task from the same initial prompt took")
    predicted = prediction["predicted_steps"]
    digest = hashlib.sha256(json.dumps(spec.to_dict(), sort_keys=True).encode()).hexdigest()
    earlier = registry.submitted_since(digest, DUPLICATE_WINDOW_S)
    if earlier is not None and warn:
        warn(f"{origin}: the same spec was submitted as job {earlier.job_id} at "
             f"{earlier.created_at}; submitting it again")
    # A dry run writes nothing, not even the lock's file: it waits for a round under way only
    # where one has run before.
    with round_lock(registry, create=not dry_run):
        jobs, fenced = _live_jobs(registry, profile, warn)
        speed = prior_speed(cfg.home, spec_dict, profile)
        estimates = {**prediction, **speed}
        draft = LiveJob(JobState(job_id="new-job-0000", name=spec.name, created_at=now.isoformat(),
                                 estimates=estimates), spec_dict, None)
        view = job_view(draft, profile)  # not None: check_spec found a count that fits
        view = with_overhead(view, speed.get("overhead_s"), profile)
        decision = plan(jobs, profile, cfg.policy, now.timestamp(), extra=[view],
                        fenced=fenced)[-1]
        feasible = decision.action not in ("infeasible", "decline")
        calibrated = speed["rate_source"] != "uncalibrated"
        assumed = view.throughput.rate(decision.gpus or min(view.allowed_gpus))
        reason = decision.reason if calibrated else (
            f"uncalibrated: no measured speed for this shape, assumed {assumed:.3g} steps/s; "
            f"accepted whatever the plan says ({decision.reason}), the plan is refitted on the "
            "job's first progress reports")
        answer = {"gpus": decision.gpus, "action": decision.action, "reason": reason,
                  "predicted_finish": iso(decision.predicted_finish_s),
                  "deadline": deadline.isoformat(timespec="seconds"),
                  "predicted_steps": predicted,
                  "predicted_steps_from": f"job {repeat.job_id}" if repeat else
                  ("bank" if choice else "max_steps"),
                  "assumed_steps_per_s": assumed, "rate_source": speed["rate_source"],
                  "init_prompt_id": choice["prompt_id"] if choice else None,
                  **{k: v for k, v in prediction.items() if k != "predicted_steps"},
                  "profile": profile.name, "policy": cfg.policy, "feasible": feasible}
        if not feasible and not best_effort and calibrated:
            earliest = answer["predicted_finish"] or "never within the GPU budget"
            raise BadInputError(f"{origin}: deadline: {deadline.isoformat(timespec='seconds')} "
                                f"cannot be met (earliest finish {earliest}); use --best-effort "
                                "to run it anyway")
        if dry_run:
            return answer
        files = ({"init_prompt.safetensors": choice["prompt_bytes"]}
                 if choice and choice["prompt_bytes"] else None)
        state = registry.create(
            spec.name, spec_dict, files=files, profile=profile.ref, best_effort=best_effort,
            spec_digest=digest,
            init_prompt_id=answer["init_prompt_id"],
            # submitted_at: when the plan was made, the start of what it predicts (and of
            # the overhead the speed record measures).
            estimates=estimates | {"planned_gpus": decision.gpus,
                                   "submitted_at": now.timestamp()})
        start_now(registry, jobs, fenced, LiveJob(state, spec_dict, None), view.allowed_gpus,
                  decision.gpus, profile, answer, warn)
    return answer


def _live_jobs(registry: Registry, profile: Profile,
               warn: Say | None) -> tuple[list[LiveJob], list[Fence]]:
    """The live jobs a new or resumed job is planned beside, their attempts polled, and the
    GPUs unreadable records may hold, each skipped record and fence said in one line."""
    jobs = load_live_jobs(registry)
    for line in jobs.unreadable if warn else ():
        warn(f"skipped: {line}")
    fenced = fences(registry, jobs, profile)
    poll_attempts(jobs, profile, fenced)
    for line in [f.line() for f in fenced if f.gpus] if warn else ():
        warn(line)
    return jobs, fenced


def start_now(registry: Registry, jobs: list[LiveJob], fenced: list[Fence], job: LiveJob,
              allowed: tuple[int, ...], planned: int, profile: Profile, answer: dict[str, Any],
              warn: Say | None) -> None:
    """Launch a just admitted job on the GPUs free now (none held by the live jobs or fenced
    for unreadable ones), up to its planned count (else the next round starts it), and say so
    in `answer`: job_id, launched_gpus, slurm_job_id and any launch_error."""
    free = (profile.gpu_budget - sum(held_gpus(j) for j in jobs)
            - sum(f.gpus for f in fenced))
    gpus = max((g for g in allowed if g <= min(planned, free)), default=0)
    if job.state.held:
        gpus = 0
    state = job.state
    if gpus > 0:
        tick = Tick(now=datetime.now(timezone.utc).timestamp())
        launch_or_record(registry, job, gpus, profile, tick, "start")
        state = registry.load(state.job_id)
        if tick.actions[-1]["action"] == "launch-failed":
            answer["launch_error"] = tick.actions[-1]["error"]
            if warn:
                warn(f"{state.job_id}: registered, but {answer['launch_error']}; "
                     "rebalance retries it")
            gpus = 0
    answer["job_id"] = state.job_id
    answer["launched_gpus"] = gpus
    answer["slurm_job_id"] = (state.current_attempt.slurm_job_id
                              if gpus and state.current_attempt else None)


def resume(cfg: Config, profile: Profile, job_id: str, *, best_effort: bool = False,
           deadline: str | None = None, warn: Say | None = None) -> dict[str, Any]:
    """Relaunch a cancelled job, or one that failed by faults, from its kept checkpoint.

    It is admitted as a new submit is: planned next to the live jobs against its deadline
    (or `deadline`, a new one: an ISO-8601 time or a duration from now), and refused when it
    cannot meet it unless `best_effort`. The plan as `--json` shows it."""
    registry = Registry(cfg.home)
    now = datetime.now(timezone.utc)
    with round_lock(registry):
        state = registry.load(job_id)
        if state.phase not in (Phase.CANCELLED, Phase.FAILED):
            raise PtctlError(f"job {job_id} is {state.phase}: only a cancelled or failed job "
                             "can be resumed")
        last = state.current_attempt
        if state.phase == Phase.FAILED and last is not None and last.fatal:
            raise PtctlError(f"job {job_id} failed on bad input: a resume would fail the same "
                             "way; fix the spec or data and submit it again")
        spec = registry.load_spec(job_id)
        if deadline is not None:
            spec["deadline"] = _new_deadline(deadline, now)
        if epoch(spec["deadline"]) <= now.timestamp() and not best_effort:
            raise BadInputError(f"job {job_id}: deadline {spec['deadline']} has passed; give "
                                "--deadline for a new one, or --best-effort to run anyway")
        jobs, fenced = _live_jobs(registry, profile, warn)
        job = LiveJob(dataclasses.replace(state, phase=Phase.QUEUED, gpus=0), spec,
                      registry.read_progress(job_id))
        view = job_view(job, profile)
        if view is None:
            raise PtctlError(f"job {job_id}: no GPU count of its spec fits profile "
                             f"{profile.name}")
        decision = plan(jobs, profile, cfg.policy, now.timestamp(), extra=[view],
                        fenced=fenced)[-1]
        feasible = decision.action not in ("infeasible", "decline")
        answer = {"gpus": decision.gpus, "action": decision.action, "reason": decision.reason,
                  "predicted_finish": iso(decision.predicted_finish_s),
                  "deadline": spec["deadline"], "feasible": feasible, "profile": profile.name,
                  "policy": cfg.policy, **_kept_checkpoint(registry, job_id)}
        if not feasible and not best_effort:
            earliest = answer["predicted_finish"] or "never within the GPU budget"
            raise BadInputError(f"job {job_id}: deadline {spec['deadline']} cannot be met "
                                f"(earliest finish {earliest}); give --deadline for a new "
                                "one, or --best-effort to run anyway")
        if deadline is not None:
            registry.write_spec(job_id, spec)

        def reopen(st: JobState) -> None:
            move(st, Phase.QUEUED)
            st.gpus, st.failures, st.pending_resize, st.ended_at = 0, 0, None, None
            st.best_effort = st.best_effort or best_effort
            st.estimates.update(predicted_finish=decision.predicted_finish_s,
                                infeasible=not feasible, reason=decision.reason)

        job.state = registry.update(job_id, reopen)
        start_now(registry, jobs, fenced, job, view.allowed_gpus, decision.gpus, profile,
                  answer, warn)
    return answer


def _kept_checkpoint(registry: Registry, job_id: str) -> dict[str, Any]:
    """The checkpoint the next attempt continues from (none: it starts over)."""
    from ptctl.tuning.checkpoint import latest_checkpoint

    kept = latest_checkpoint(registry.paths(job_id).checkpoints)
    return {"checkpoint": str(kept) if kept else None,
            "from_step": int(kept.name.removeprefix("step_")) if kept else 0}


def _new_deadline(text: str, now: datetime) -> str:
    """`--deadline`: an ISO-8601 time or a duration from now, stored as the spec stores it."""
    try:
        when = parse_deadline(text)
    except ValueError as exc:
        raise BadInputError(f"--deadline: got {excerpt(text)}, expected an ISO-8601 time or "
                            f"a duration like 90m ({exc})") from None
    when = now + when if isinstance(when, timedelta) else when
    return when.astimezone(timezone.utc).isoformat()


def _initial_prompt(cfg: Config, spec: JobSpec, info: Say | None,
                    warn: Say | None) -> dict[str, Any] | None:
    """The Prompt Bank's best starting prompt for this task, when the spec asks for one."""
    if spec.prompt.init != "bank":
        return None
    try:
        from ptctl.bank.query import choose_initial_prompt
    except ImportError:
        if warn:
            warn("no Prompt Bank support installed: starting from a random prompt")
        return None
    return choose_initial_prompt(cfg.bank_dir, spec, info=info, warn=warn)


def prior_speed(home: str, spec: dict[str, Any], profile: Profile) -> dict[str, Any]:
    """The job's steps/s per GPU count until it measures its own, and where they come from
    (`rate_source`: record, profile or uncalibrated), as its estimates keep them."""
    device = speeds.device_key(profile)
    found = speeds.estimate(home, spec, device)
    if found is not None:
        return {"prior_steps_per_s": {str(g): r for g, r in found.rates.items()},
                "rate_source": "record", "overhead_s": found.overhead_s, "device": device}
    if profile.steps_per_s_prior:
        return {"prior_steps_per_s": {"1": float(profile.steps_per_s_prior)},
                "rate_source": "profile", "device": device}
    return {"prior_steps_per_s": {"1": PRIOR_STEPS_PER_S}, "rate_source": "uncalibrated",
            "device": device}


def with_overhead(view: Any, overhead_s: float | None, profile: Profile) -> Any:
    """The view with the measured launch overhead beyond the profile's start cost, as steps at
    its fastest count (a longer time at fewer GPUs: the plan errs late, not early)."""
    extra_s = (overhead_s or 0.0) - (profile.queue_wait_s + profile.start_s
                                     + profile.model_load_s)
    if extra_s <= 0:
        return view
    steps = extra_s * view.throughput.rate(max(view.allowed_gpus))
    return dataclasses.replace(view, remaining_iterations=view.remaining_iterations + steps)
