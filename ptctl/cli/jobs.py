"""Job commands: submit, status, ls, cancel, logs, result, resize."""

from __future__ import annotations

import json as jsonlib
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from ptctl.backends import backend_for
from ptctl.cli import common
from ptctl.cli.output import JsonOpt, Output, QuietOpt
from ptctl.config import Config, load_profile
from ptctl.errors import BadInputError, NotFoundError
from ptctl.jobs.progress import Progress
from ptctl.jobs.registry import Registry
from ptctl.jobs.spec import load_spec

ProfileOpt = Annotated[str, typer.Option("--profile",
                                          help="Cluster profile name or YAML path.")]


def _registry(cfg: Config) -> Registry:
    return Registry(cfg.home)


def _human_delta(seconds: float) -> str:
    sign = "-" if seconds < 0 else ""
    seconds = abs(int(seconds))
    if seconds >= 3600:
        return f"{sign}{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{sign}{seconds // 60}m{seconds % 60:02d}s"
    return f"{sign}{seconds}s"


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
    json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Validate a job spec, pick its initial prompt, plan its GPUs against the deadline, launch."""
    from ptctl.scheduler import admission, control

    out = Output(json_mode=json, quiet=quiet)
    spec = load_spec(spec_file)
    cfg = common.config(profile=profile)
    prof = load_profile(cfg).with_overrides(spec.slurm.as_dict())
    plan = admission.submit(cfg, prof, spec, origin=str(spec_file), best_effort=best_effort,
                            dry_run=dry_run, info=out.info, warn=out.warn)
    if dry_run:
        out.emit({"dry_run": True, "plan": plan},
                 human=f"plan: {plan['gpus']} GPU(s), {plan['action']} ({plan['reason']}); "
                       f"predicted finish {plan['predicted_finish']}, deadline "
                       f"{plan['deadline']}")
        return
    job_id, gpus = plan["job_id"], plan["launched_gpus"]
    human = (f"{job_id}: " + (backend_for(prof).launched(plan["slurm_job_id"], gpus)
                              if gpus else "queued (rebalance starts it when GPUs free)") +
             f"; deadline {plan['deadline']}, predicted finish {plan['predicted_finish']}")
    if wait:
        out.info(human)
        final = control.wait_until_ended(cfg, prof, job_id,
                                         lambda p: out.info(_progress_line(job_id, p)))
        plan["phase"] = final.phase
        out.emit(plan, human=f"{job_id}: {final.phase}")
        if final.phase != "finished":
            raise typer.Exit(1)
        return
    out.emit(plan, human=human)


def _progress_line(job_id: str, progress: Progress) -> str:
    accuracy = (progress.metrics or {}).get("accuracy")
    return (f"{job_id}: step {progress.step}/{progress.max_steps}"
            + (f" loss {progress.loss:.4f}" if progress.loss is not None else "")
            + (f" accuracy {accuracy:.3f}" if accuracy is not None else ""))


# --- status / ls ------------------------------------------------------------------------------

def _status_table(out: Output, rows: list[dict[str, Any]]) -> None:
    table = []
    for r in rows:
        acc = r["metrics"].get("accuracy") if r["metrics"] else None
        table.append((
            r["job_id"], r["phase"], r["slurm_state"] or "-", r["gpus"],
            f"{r['step']}/{r['max_steps']}",
            f"{acc:.3f} / {r['target']}" if acc is not None else f"- / {r['target']}",
            _human_delta(r["slack_s"]), r["eta"][11:19] if r["eta"] else "-",
            "LATE" if r["predicted_violation"] else "ok"))
    out.table(["job", "phase", "slurm", "gpus", "step", "metric / target", "slack", "eta",
               "risk"], table, data=rows)


def status(
    job_id: Annotated[str, typer.Argument(help="A job id (default: every live job).")] = None,
    all_jobs: Annotated[bool, typer.Option("--all", help="Include ended jobs.")] = False,
    watch: Annotated[float, typer.Option("--watch", help="Refresh every N seconds.")] = 0.0,
    json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Jobs with their Slurm state, GPUs, progress, deadline slack, ETA and predicted violation."""
    from ptctl.scheduler.status import status_rows

    out = Output(json_mode=json, quiet=quiet)
    cfg = common.config()
    while True:
        rows = status_rows(cfg, [job_id] if job_id else None, all_jobs)
        if job_id and not json and rows:
            _print_one(out, rows[0], cfg)
        else:
            _status_table(out, rows)
        if watch <= 0:
            return
        time.sleep(watch)


def _print_one(out: Output, row: dict[str, Any], cfg: Config) -> None:
    _status_table(out, [row])
    out.table(["attempt", "slurm job", "gpus", "state", "submitted", "ended", "reason"],
              [(i, a["slurm_job_id"], a["gpus"], a["state"], a["submitted_at"],
                a["ended_at"] or "-", a["reason"] or "") for i, a in enumerate(row["attempts"])])
    if row["errors"]:
        from ptctl.scheduler.round import log_tail

        out.emit(None, human="errors:\n" + "\n".join(row["errors"]))
        tail = log_tail(_registry(cfg), row["job_id"])
        if tail:
            out.emit(None, human="log tail:\n" + tail)


def ls(all_jobs: Annotated[bool, typer.Option("--all", help="Include ended jobs.")] = True,
       json: JsonOpt = False, quiet: QuietOpt = False) -> None:
    """Every registered job, one line each."""
    out = Output(json_mode=json, quiet=quiet)
    cfg = common.config()
    registry = _registry(cfg)
    states = [s for s in registry.all() if all_jobs or not s.is_terminal]
    deadlines = [registry.load_spec(s.job_id)["deadline"] for s in states]
    out.table(["job", "name", "phase", "gpus", "attempts", "deadline", "created"],
              [(s.job_id, s.name, s.phase, s.gpus, len(s.attempts), deadline, s.created_at)
               for s, deadline in zip(states, deadlines)],
              data=[s.to_dict() | {"deadline": deadline} for s, deadline in zip(states, deadlines)])


# --- cancel / resize / logs / result -----------------------------------------------------------

def cancel(job_id: Annotated[str, typer.Argument(help="The job to cancel.")],
           json: JsonOpt = False, quiet: QuietOpt = False) -> None:
    """Stop a job for good: its Slurm job is cancelled, its checkpoints are kept."""
    from ptctl.scheduler import control

    out = Output(json_mode=json, quiet=quiet)
    cfg = common.config()
    registry = _registry(cfg)
    state = registry.load(job_id)
    if state.is_terminal:
        out.emit(state.to_dict(), human=f"{job_id}: already {state.phase}")
        return
    state = control.cancel(registry, job_id, control.job_profile(cfg, state))
    out.emit(state.to_dict(), human=f"{job_id}: cancelled")


def resize(job_id: Annotated[str, typer.Argument(help="A running job.")],
           gpus: Annotated[int, typer.Option("--gpus", help="The new GPU count.")],
           wait_s: Annotated[float, typer.Option("--wait-s", help="How long to wait for the "
                                                 "checkpoint before leaving the relaunch to "
                                                 "rebalance.")] = 120.0,
           json: JsonOpt = False, quiet: QuietOpt = False) -> None:
    """Checkpoint a running job and resubmit it with another GPU count."""
    from ptctl.scheduler import control

    out = Output(json_mode=json, quiet=quiet)
    cfg = common.config()
    registry = _registry(cfg)
    prof = control.job_profile(cfg, registry.load(job_id))
    tick = control.resize(registry, job_id, gpus, prof, wait_s)
    state = registry.load(job_id)
    out.emit({"job_id": job_id, "actions": tick.actions, "gpus": state.gpus,
              "phase": state.phase},
             human=f"{job_id}: " + ("; ".join(f"{a['action']} {a.get('gpus_to', a.get('gpus'))}"
                                              for a in tick.actions) or "unchanged"))


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


def result(job_id: Annotated[str, typer.Argument(help="A finished job.")],
           json: JsonOpt = False, quiet: QuietOpt = False) -> None:
    """The tuned prompt of a finished job: where the adapter is and how well it did."""
    out = Output(json_mode=json, quiet=quiet)
    registry = _registry(common.config())
    state = registry.load(job_id)
    folder = registry.paths(job_id).result
    meta_path = folder / "ptctl_meta.json"
    if not meta_path.is_file():
        raise NotFoundError(f"job {job_id} is {state.phase}: no result yet ({meta_path})")
    meta = jsonlib.loads(meta_path.read_text())
    data = {"job_id": job_id, "phase": state.phase, "adapter": str(folder),
            **{k: meta.get(k) for k in ("task", "model", "steps", "samples", "final_metric",
                                        "target", "reason", "init_prompt_id")}}
    out.table(["field", "value"], [(k, v) for k, v in data.items()], data=data)


def register(app: typer.Typer) -> None:
    app.command("submit")(submit)
    app.command("status")(status)
    app.command("ls")(ls)
    app.command("cancel")(cancel)
    app.command("resize")(resize)
    app.command("logs")(logs)
    app.command("result")(result)
