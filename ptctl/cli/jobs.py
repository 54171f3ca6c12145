"""Job commands: submit, cancel, resize, hold, release, logs, result."""

from __future__ import annotations

import dataclasses
import json as jsonlib
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from ptctl.backends import backend_for
from ptctl.cli import common
from ptctl.cli.output import JsonOpt, Output, QuietOpt, fmt_margin
from ptctl.config import Config, load_profile
from ptctl.errors import (EXIT_ERROR, EXIT_OK, EXIT_TARGET_NOT_REACHED, BadInputError,
                          NotFoundError)
from ptctl.jobs.lifecycle import Phase
from ptctl.jobs.progress import Progress
from ptctl.jobs.registry import JobState, Registry
from ptctl.jobs.spec import JobSpec, SlurmOverrides, SpecFieldError, load_spec, slurm_minutes

ProfileOpt = Annotated[str, typer.Option("--profile",
                                          help="Cluster profile name or YAML path.")]


def _registry(cfg: Config) -> Registry:
    return Registry(cfg.home)


# --- submit -----------------------------------------------------------------------------------

def submit(
    spec_file: Annotated[Path, typer.Argument(help="Job spec YAML.")],
    profile: ProfileOpt = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Validate and plan; register "
                                                            "nothing.")] = False,
    best_effort: Annotated[bool, typer.Option("--best-effort", help="Run even if the deadline "
                                                                    "cannot be met.")] = False,
    wait: Annotated[bool, typer.Option("--wait", help="Stay until the job ends, rebalancing "
                                                      "every few seconds.")] = False,
    parsable: Annotated[bool, typer.Option("--parsable", help="Print only the job id (as "
                                           "sbatch --parsable; -q does too).")] = False,
    partition: Annotated[str, typer.Option("--partition", "-p", help="Slurm partition for "
                                           "this job.")] = None,
    time_limit: Annotated[str, typer.Option("--time", "-t", help="Time limit of each Slurm "
                                            "job: minutes or [D-]HH:MM:SS.")] = None,
    mail_type: Annotated[str, typer.Option("--mail-type", help="sbatch --mail-type, e.g. "
                                           "END,FAIL.")] = None,
    mail_user: Annotated[str, typer.Option("--mail-user", help="sbatch --mail-user.")] = None,
    calibrate: Annotated[bool, typer.Option("--calibrate", help="First time a few steps of "
                                            "this shape (as `ptctl calibrate`) unless its "
                                            "speed is on record.")] = False,
    json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Validate a job spec, pick its initial prompt, plan its GPUs against the deadline, launch.

    --partition, --time and --mail-* override the spec's `slurm:` section and are stored in the
    job's spec, so every later attempt (resize, retry, requeue) keeps them."""
    from ptctl.scheduler import admission, control

    out = Output(json_mode=json, quiet=quiet)  # --parsable: warnings still on stderr
    spec = load_spec(spec_file)
    _apply_overrides(spec, {"partition": partition, "time_limit_min": _minutes(time_limit),
                            "mail_type": mail_type, "mail_user": mail_user})
    cfg = common.config(profile=profile)
    prof = load_profile(cfg).with_overrides(spec.slurm.as_dict())
    plan = admission.submit(cfg, prof, spec, origin=str(spec_file), best_effort=best_effort,
                            dry_run=dry_run, calibrate=calibrate, info=out.info, warn=out.warn)
    if dry_run:
        out.emit({"dry_run": True, "plan": plan},
                 human=f"plan: {plan['gpus']} GPU(s), {plan['action']} ({plan['reason']}); "
                       f"predicted finish {plan['predicted_finish']}, deadline "
                       f"{plan['deadline']}; {_rate_words(plan)}")
        return
    job_id, gpus = plan["job_id"], plan["launched_gpus"]
    if (parsable or quiet) and not json:
        typer.echo(job_id)
        out.quiet = True
    human = (f"{job_id}: " + (backend_for(prof).launched(plan["slurm_job_id"], gpus)
                              if gpus else "queued (rebalance starts it when GPUs free)") +
             f"; deadline {plan['deadline']}, predicted finish {plan['predicted_finish']}; "
             f"{_rate_words(plan)}")
    if wait:
        out.info(human)
        control.wait_until_ended(cfg, prof, job_id,
                                 lambda p: out.info(_progress_line(job_id, p)))
        raise typer.Exit(_report_end(out, plan, _registry(cfg), job_id))
    out.emit(plan, human=human)


def _rate_words(plan: dict[str, Any]) -> str:
    """The speed the plan assumed and where it came from (README: How predictions are made)."""
    words = {"record": "measured on earlier jobs of this shape", "profile":
             "the profile's steps_per_s_prior", "uncalibrated": "a guess: nothing measured yet"}
    return (f"assumed {plan['assumed_steps_per_s']:.3g} steps/s "
            f"({words.get(plan['rate_source'], plan['rate_source'])})")


_FLAGS = {"partition": "--partition", "time_limit_min": "--time", "mail_type": "--mail-type",
          "mail_user": "--mail-user"}


def _minutes(text: str | None) -> int | None:
    if text is None:
        return None
    minutes = slurm_minutes(text)
    if not minutes:
        raise BadInputError(f"--time: got {text!r}, expected minutes or [D-]HH:MM:SS (> 0)")
    return minutes


def _apply_overrides(spec: JobSpec, given: dict[str, Any]) -> None:
    """Command-line values over the spec's `slurm:` section, validated as the spec's are."""
    given = {k: v for k, v in given.items() if v is not None}
    try:
        spec.slurm = SlurmOverrides(**(dataclasses.asdict(spec.slurm) | given))
    except SpecFieldError as exc:
        raise BadInputError(f"{_FLAGS[exc.field_name]}: {exc.detail}") from None


def _report_end(out: Output, plan: dict[str, Any], registry: Registry, job_id: str) -> int:
    """Say how a waited-for job ended, in words; its exit code (README: Exit codes)."""
    from ptctl.scheduler.status import status_record
    from ptctl.scheduler.views import load_job

    row = status_record(load_job(registry, job_id), time.time())
    plan.update({k: row[k] for k in ("phase", "outcome", "ended_at", "deadline_met",
                                     "deadline_margin_s", "metrics")})
    out.emit(plan, human=f"{job_id}: {row['phase']}: {row['outcome']}; deadline "
                         f"{fmt_margin(row['deadline_margin_s'])}")
    return {"finished": EXIT_OK, "unmet": EXIT_TARGET_NOT_REACHED}.get(row["phase"], EXIT_ERROR)


def _progress_line(job_id: str, progress: Progress) -> str:
    accuracy = (progress.metrics or {}).get("accuracy")
    return (f"{job_id}: step {progress.step}/{progress.max_steps}"
            + (f" loss {progress.loss:.4f}" if progress.loss is not None else "")
            + (f" accuracy {accuracy:.3f}" if accuracy is not None else ""))


# --- cancel / resize / logs / result -----------------------------------------------------------

def cancel(job_id: Annotated[str, typer.Argument(help="The job to cancel.")],
           json: JsonOpt = False, quiet: QuietOpt = False) -> None:
    """Stop a job: its Slurm job is cancelled, its checkpoints are kept for `ptctl resume`."""
    from ptctl.scheduler import control

    out = Output(json_mode=json, quiet=quiet)
    cfg = common.config()
    registry = _registry(cfg)
    state = registry.load(job_id)
    if state.is_terminal:
        out.emit(_document(state), human=f"{job_id}: already {state.phase}")
        return
    state = control.cancel(registry, job_id, control.job_profile(cfg, state))
    out.emit(_document(state), human=f"{job_id}: cancelled")


def _document(state: JobState) -> dict[str, Any]:
    from ptctl.scheduler.status import state_document

    return state_document(state)


def resize(job_id: Annotated[str, typer.Argument(help="A running job.")],
           gpus: Annotated[int, typer.Option("--gpus", help="The new GPU count.")] = None,
           pin: Annotated[bool, typer.Option("--pin/--unpin", help="Hold the count against "
                                             "rebalances (--pin), or give it back to the "
                                             "policy (--unpin).")] = None,
           wait_s: Annotated[float, typer.Option("--wait-s", help="How long to wait for the "
                                                 "checkpoint before leaving the relaunch to "
                                                 "rebalance.")] = 120.0,
           json: JsonOpt = False, quiet: QuietOpt = False) -> None:
    """Checkpoint a running job and resubmit it with another GPU count.

    --pin keeps a count (the current one, or --gpus N) through rebalances until --unpin."""
    from ptctl.scheduler import control

    if gpus is None and pin is None:
        raise BadInputError("resize: give --gpus N, --pin or --unpin")
    out = Output(json_mode=json, quiet=quiet)
    cfg = common.config()
    registry = _registry(cfg)
    prof = control.job_profile(cfg, registry.load(job_id))
    tick = control.resize(registry, job_id, gpus, prof, wait_s, pin=pin)
    state = registry.load(job_id)
    out.emit({"job_id": job_id, "actions": tick.actions, "gpus": state.gpus,
              "pinned_gpus": state.pinned_gpus, "phase": state.phase},
             human=f"{job_id}: " + ("; ".join(_action_text(a) for a in tick.actions)
                                    or "unchanged"))


def _action_text(action: dict[str, Any]) -> str:
    if action["action"] == "unpin":
        return "unpinned"
    return f"{action['action']} {action.get('gpus_to', action.get('gpus'))}"


def hold(job_id: Annotated[str, typer.Argument(help="The job to hold.")],
         json: JsonOpt = False, quiet: QuietOpt = False) -> None:
    """Keep rebalances from starting or resizing a job; a running attempt keeps running."""
    _set_held(job_id, True, json, quiet)


def release(job_id: Annotated[str, typer.Argument(help="A held job.")],
            json: JsonOpt = False, quiet: QuietOpt = False) -> None:
    """Give a held job back to rebalances (the next one may start or resize it)."""
    _set_held(job_id, False, json, quiet)


def _set_held(job_id: str, held: bool, json: bool, quiet: bool) -> None:
    from ptctl.scheduler import control

    state = control.set_held(_registry(common.config()), job_id, held)
    Output(json_mode=json, quiet=quiet).emit(
        _document(state), human=f"{job_id}: {'held' if held else 'released'} ({state.phase})")


def logs(job_id: Annotated[str, typer.Argument(help="The job.")],
         follow: Annotated[bool, typer.Option("-f", "--follow", help="Keep printing new "
                                              "lines.")] = False,
         task: Annotated[int, typer.Option("--task", help="Which rank's log.")] = 0,
         attempt: Annotated[int, typer.Option("--attempt", help="Which attempt (default: the "
                                              "latest).")] = -1) -> None:
    """Print a job's logs (stdout and stderr of one rank of one attempt)."""
    cfg = common.config()
    registry = _registry(cfg)
    state = registry.load(job_id)
    if not state.attempts:
        raise NotFoundError(f"job {job_id}: not launched yet, no logs")
    try:
        chosen = state.attempts[attempt]
    except IndexError:
        raise BadInputError(f"--attempt: got {attempt}, job {job_id} has "
                            f"{len(state.attempts)} attempts") from None
    paths = registry.paths(job_id)
    folder = paths.attempt_logs(chosen.slurm_job_id)
    files = (paths.log_files(chosen.slurm_job_id, task, "out")
             + paths.log_files(chosen.slurm_job_id, task, "err"))
    if not files:
        raise NotFoundError(f"{folder}: no log files for task {task} yet")
    offsets = {p: 0 for p in files}
    while True:
        for path in files:
            with path.open("r", errors="replace") as f:
                f.seek(offsets[path])
                chunk = f.read()
                offsets[path] = f.tell()
            if chunk:
                typer.echo(chunk, nl=False)
        if not follow or registry.load(job_id).is_terminal:
            return
        time.sleep(1.0)


def result(job_id: Annotated[str, typer.Argument(help="An ended job with a result.")],
           json: JsonOpt = False, quiet: QuietOpt = False) -> None:
    """The tuned prompt of an ended job: where it is, how well it did, deadline met or not."""
    out = Output(json_mode=json, quiet=quiet)
    registry = _registry(common.config())
    state = registry.load(job_id)
    folder = registry.paths(job_id).result
    meta_path = folder / "ptctl_meta.json"
    if not meta_path.is_file():
        raise NotFoundError(f"job {job_id} is {state.phase}: no result yet ({meta_path})"
                            + _resume_hint(registry, state))
    from ptctl.scheduler.status import deadline_margin_s, outcome_words

    meta = jsonlib.loads(meta_path.read_text())
    spec = registry.load_spec(job_id)
    margin = deadline_margin_s(state, spec) if state.is_terminal else None
    # A bank spec whose query found no entry better than the job's own start says which.
    picked = state.estimates.get("init_picked")
    init = meta.get("init_prompt_id") or (picked if picked in ("random", "text") else (
        "text" if spec["prompt"]["init"] == "text" else "random"))
    data = {"job_id": job_id, "phase": state.phase, "outcome": outcome_words(state, spec),
            "target_reached": meta.get("reason") == "target_reached", "adapter": str(folder),
            **{k: meta.get(k) for k in ("task", "model", "steps", "samples", "final_metric",
                                        "target", "reason", "init_prompt_id")},
            "init_prompt": init, "deadline": spec["deadline"], "deadline_margin_s": margin,
            "deadline_met": None if margin is None else margin >= 0}
    metric = ", ".join(f"{k} {v:.4f}" for k, v in (data["final_metric"] or {}).items()) or "-"
    rows = [("job", job_id), ("outcome", data["outcome"]), ("adapter", data["adapter"]),
            ("task", data["task"]), ("model", data["model"]),
            ("steps", f"{data['steps']} ({data['samples']} samples)"),
            ("final metric", metric), ("target", data["target"]),
            ("initial prompt", f"bank entry {init}" if data["init_prompt_id"] else init),
            ("deadline", spec["deadline"] + ("" if margin is None
                                             else f" ({fmt_margin(margin)})"))]
    out.table(["field", "value"], rows, data=data)


def _resume_hint(registry: Registry, state: JobState) -> str:
    """For a cancelled or failed job: the checkpoint it keeps and how to continue from it."""
    if state.phase not in (Phase.CANCELLED, Phase.FAILED):
        return ""
    from ptctl.tuning.checkpoint import latest_checkpoint

    kept = latest_checkpoint(registry.paths(state.job_id).checkpoints)
    where = f"its checkpoint {kept} is kept" if kept else "it has no checkpoint (it starts over)"
    return f"; {where}: ptctl resume {state.job_id}"


def resume(job_id: Annotated[str, typer.Argument(help="A cancelled or failed job.")],
           best_effort: Annotated[bool, typer.Option("--best-effort", help="Run even if the "
                                                     "deadline cannot be met (or has "
                                                     "passed).")] = False,
           deadline: Annotated[str, typer.Option("--deadline", help="A new deadline: an "
                                                 "ISO-8601 time or a duration from now "
                                                 "(90m, 2h).")] = None,
           json: JsonOpt = False, quiet: QuietOpt = False) -> None:
    """Relaunch a cancelled or faulted job from its kept checkpoint, planned like a submit."""
    from ptctl.scheduler import admission, control

    out = Output(json_mode=json, quiet=quiet)
    cfg = common.config()
    registry = _registry(cfg)
    prof = control.job_profile(cfg, registry.load(job_id))
    plan = admission.resume(cfg, prof, job_id, best_effort=best_effort, deadline=deadline,
                            warn=out.warn)
    gpus = plan["launched_gpus"]
    started = (backend_for(prof).launched(plan["slurm_job_id"], gpus) if gpus
               else "queued (rebalance starts it when GPUs free)")
    out.emit(plan, human=f"{job_id}: resumes from step {plan['from_step']}, {started}; "
                         f"deadline {plan['deadline']}, predicted finish "
                         f"{plan['predicted_finish']}")


def register(app: typer.Typer) -> None:
    app.command("submit")(submit)
    app.command("cancel")(cancel)
    app.command("resize")(resize)
    app.command("hold")(hold)
    app.command("release")(release)
    app.command("logs")(logs)
    app.command("result")(result)
    app.command("resume")(resume)
