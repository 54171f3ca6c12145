"""Job commands: submit, status, ls, cancel, logs, result, resize."""

from __future__ import annotations

import json as jsonlib
import signal
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any

import typer

from ptctl.cli import common
from ptctl.cli.output import JsonOpt, Output, QuietOpt
from ptctl.config import Config, Profile, load_profile
from ptctl.errors import BadInputError, NotFoundError, PtctlError
from ptctl.jobs.registry import JobState, Registry, utcnow
from ptctl.jobs.spec import JobSpec, load_spec, resolved_spec_dict

ProfileOpt = Annotated[str, typer.Option("--profile",
                                          help="Cluster profile name or YAML path.")]


def _registry(cfg: Config) -> Registry:
    return Registry(cfg.home)


def _job_profile(cfg: Config, state: JobState) -> Profile:
    return load_profile(cfg, state.profile or None)


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="seconds")


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
    from ptctl.slurm import orchestrate

    out = Output(json_mode=json, quiet=quiet)
    spec = load_spec(spec_file)
    cfg = common.config(profile=profile)
    prof = load_profile(cfg).with_overrides(spec.slurm.as_dict())
    now = datetime.now(timezone.utc)
    deadline = spec.deadline_at(now)
    if deadline <= now:
        raise BadInputError(f"{spec_file}: deadline: {deadline.isoformat()} is in the past")
    if prof.executor == "slurm":
        from ptctl.slurm import cluster

        cluster.ping()
    choice = _initial_prompt(cfg, spec, out)
    predicted = choice["predicted_steps"] if choice else spec.training.max_steps
    registry = _registry(cfg)
    spec_dict = resolved_spec_dict(spec, now)
    jobs = orchestrate.load_live_jobs(registry)
    orchestrate.poll_attempts(jobs, prof)
    draft = orchestrate.LiveJob(
        JobState(job_id="new-job-0000", name=spec.name, created_at=now.isoformat(),
                 estimates={"predicted_steps": predicted}), spec_dict, {})
    view = orchestrate.job_view(draft, prof)
    if view is None:
        raise BadInputError(f"{spec_file}: gpus: no GPU count in [{spec.gpus.min}, "
                            f"{spec.gpus.max}] fits profile {prof.name} (budget "
                            f"{prof.gpu_budget}, {prof.gpus_per_node} per node)")
    decision = orchestrate.plan(jobs, prof, cfg.policy, now.timestamp(), extra=[view])[-1]
    feasible = decision.action not in ("infeasible", "decline")
    plan = {"gpus": decision.gpus, "action": decision.action, "reason": decision.reason,
            "predicted_finish": _iso(decision.predicted_finish_s),
            "deadline": deadline.isoformat(timespec="seconds"), "predicted_steps": predicted,
            "init_prompt_id": choice["prompt_id"] if choice else None, "profile": prof.name,
            "policy": cfg.policy, "feasible": feasible}
    if not feasible and not best_effort:
        earliest = plan["predicted_finish"] or "never within the GPU budget"
        raise BadInputError(f"{spec_file}: deadline: {deadline.isoformat(timespec='seconds')} "
                            f"cannot be met (earliest finish {earliest}); use --best-effort to "
                            "run it anyway")
    if dry_run:
        out.emit({"dry_run": True, "plan": plan},
                 human=f"plan: {decision.gpus} GPU(s), {decision.action} ({decision.reason}); "
                       f"predicted finish {plan['predicted_finish']}, deadline "
                       f"{plan['deadline']}")
        return
    files = {"init_prompt.safetensors": choice["prompt_bytes"]} if choice else None
    state = registry.create(
        spec.name, spec_dict, files=files, deadline=spec_dict["deadline"], profile=prof.ref,
        best_effort=best_effort, init_prompt_id=plan["init_prompt_id"],
        estimates={"predicted_steps": predicted, "planned_gpus": decision.gpus})
    held = sum(j.state.gpus for j in jobs if j.state.phase in ("pending", "running", "resizing"))
    gpus = max((g for g in view.allowed_gpus if g <= min(decision.gpus,
                                                         prof.gpu_budget - held)), default=0)
    if gpus > 0:
        tick = orchestrate.Tick(now=now.timestamp())
        orchestrate.launch_or_record(registry, orchestrate.LiveJob(state, spec_dict, {}), gpus,
                                     prof, tick, "start")
        state = registry.load(state.job_id)
        if tick.actions[-1]["action"] == "launch-failed":
            plan["launch_error"] = tick.actions[-1]["error"]
            out.warn(f"{state.job_id}: registered, but {plan['launch_error']}; "
                     "rebalance retries it")
            gpus = 0
    plan["job_id"] = state.job_id
    plan["launched_gpus"] = gpus
    plan["slurm_job_id"] = state.current_attempt.slurm_job_id if state.current_attempt else None
    human = (f"{state.job_id}: " + (f"launched on {gpus} GPU(s) as {plan['slurm_job_id']}"
                                    if gpus else "queued (rebalance starts it when GPUs free)") +
             f"; deadline {plan['deadline']}, predicted finish {plan['predicted_finish']}")
    if wait:
        out.info(human)
        final = _wait(cfg, prof, state.job_id, out)
        plan["phase"] = final.phase
        out.emit(plan, human=f"{state.job_id}: {final.phase}")
        if final.phase != "finished":
            raise typer.Exit(1)
        return
    out.emit(plan, human=human)


def _initial_prompt(cfg: Config, spec: JobSpec, out: Output) -> dict[str, Any] | None:
    """The Prompt Bank's best starting prompt for this task, when the spec asks for one."""
    if spec.prompt.init != "bank":
        return None
    try:
        from ptctl.bank.query import choose_initial_prompt
    except ImportError:
        out.warn("no Prompt Bank support installed: starting from a random prompt")
        return None
    return choose_initial_prompt(cfg.bank_dir, spec, info=out.info, warn=out.warn)


def _wait(cfg: Config, prof: Profile, job_id: str, out: Output, every_s: float = 5.0) -> JobState:
    """Rebalance until the job ends (the embedded default has no cron to do it)."""
    from ptctl.slurm import orchestrate

    registry = _registry(cfg)
    last_step = None
    while True:
        orchestrate.rebalance_once(registry, prof, cfg.policy, resize_wait_s=every_s,
                                   bank_dir=cfg.bank_dir)
        state = registry.load(job_id)
        banking = state.phase == "finished" and "bank_entry" not in state.estimates and \
            registry.load_spec(job_id)["prompt"].get("add_to_bank")
        if state.is_terminal and not banking:
            return state
        progress = registry.read_progress(job_id)
        if progress.get("step") != last_step and progress:
            last_step = progress.get("step")
            metric = progress.get("metric") or {}
            loss = progress.get("loss")
            accuracy = metric.get("accuracy")
            out.info(f"{job_id}: step {last_step}/{progress.get('max_steps')}"
                     + (f" loss {loss:.4f}" if loss is not None else "")
                     + (f" accuracy {accuracy:.3f}" if accuracy is not None else ""))
        time.sleep(every_s)


# --- status / ls ------------------------------------------------------------------------------

def _status_rows(cfg: Config, job_ids: list[str] | None, include_terminal: bool):
    """Registry joined with ONE batched squeue call (per profile in use)."""
    from ptctl.slurm import orchestrate

    registry = _registry(cfg)
    if job_ids:
        jobs = [orchestrate.load_job(registry, job_id) for job_id in job_ids]
    else:
        jobs = orchestrate.load_live_jobs(registry, include_terminal=include_terminal)
    by_profile: dict[str, list] = {}
    for job in jobs:
        by_profile.setdefault(job.state.profile or cfg.profile, []).append(job)
    for name, group in by_profile.items():
        orchestrate.poll_attempts(group, load_profile(cfg, name))
    now = time.time()
    return [_status_record(job, now) for job in jobs]


def _status_record(job, now: float) -> dict[str, Any]:
    from ptctl.slurm import orchestrate

    state, progress = job.state, job.progress
    step = progress.get("step", state.progress.get("step", 0)) or 0
    metric = progress.get("metric") or state.progress.get("metrics") or {}
    deadline = orchestrate.epoch(job.spec["deadline"])
    eta = None
    if not state.is_terminal:
        left, _ = orchestrate.remaining_steps(job)
        rate = progress.get("steps_per_s")
        if rate and state.gpus:
            eta = now + left / rate
    elif state.phase == "finished":
        eta = orchestrate.epoch(state.updated_at)
    attempt = state.current_attempt
    return {
        "job_id": state.job_id, "name": state.name, "phase": state.phase,
        "slurm_job_id": attempt.slurm_job_id if attempt else None,
        "slurm_state": (job.slurm.state if job.slurm is not None
                        else (attempt.state if attempt else None)),
        "gpus": state.gpus, "world_size": progress.get("world_size"), "step": step,
        "max_steps": job.spec["training"]["max_steps"],
        "target": job.spec["target"], "metrics": metric, "deadline": job.spec["deadline"],
        "slack_s": deadline - now, "eta": _iso(eta),
        "predicted_violation": bool(eta and eta > deadline) or bool(
            state.estimates.get("infeasible")),
        "pending_resize": state.pending_resize, "failures": state.failures,
        "errors": state.errors[-3:],
        "attempts": [a.__dict__ for a in state.attempts],
    }


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
    out = Output(json_mode=json, quiet=quiet)
    cfg = common.config()
    while True:
        rows = _status_rows(cfg, [job_id] if job_id else None, all_jobs)
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
        from ptctl.slurm import orchestrate

        out.emit(None, human="errors:\n" + "\n".join(row["errors"]))
        tail = orchestrate.log_tail(_registry(cfg), row["job_id"])
        if tail:
            out.emit(None, human="log tail:\n" + tail)


def ls(all_jobs: Annotated[bool, typer.Option("--all", help="Include ended jobs.")] = True,
       json: JsonOpt = False, quiet: QuietOpt = False) -> None:
    """Every registered job, one line each."""
    out = Output(json_mode=json, quiet=quiet)
    cfg = common.config()
    registry = _registry(cfg)
    states = [s for s in registry.all() if all_jobs or not s.is_terminal]
    out.table(["job", "name", "phase", "gpus", "attempts", "deadline", "created"],
              [(s.job_id, s.name, s.phase, s.gpus, len(s.attempts), s.deadline, s.created_at)
               for s in states], data=[s.to_dict() for s in states])


# --- cancel / resize / logs / result -----------------------------------------------------------

def cancel(job_id: Annotated[str, typer.Argument(help="The job to cancel.")],
           json: JsonOpt = False, quiet: QuietOpt = False) -> None:
    """Stop a job for good: its Slurm job is cancelled, its checkpoints are kept."""
    from ptctl.slurm import orchestrate

    out = Output(json_mode=json, quiet=quiet)
    cfg = common.config()
    registry = _registry(cfg)
    state = registry.load(job_id)
    if state.is_terminal:
        out.emit(state.to_dict(), human=f"{job_id}: already {state.phase}")
        return
    prof = _job_profile(cfg, state)

    def mark(st: JobState) -> None:
        st.phase, st.pending_resize = "cancelled", None
        if st.current_attempt and st.current_attempt.state not in \
                orchestrate.ENDED_ATTEMPT_STATES:
            st.current_attempt.state = "CANCELLED"
            st.current_attempt.ended_at = utcnow()

    state = registry.update(job_id, mark)
    if state.current_attempt:
        _kill_attempt(prof, state.current_attempt.slurm_job_id)
    out.emit(state.to_dict(), human=f"{job_id}: cancelled")


def _kill_attempt(prof: Profile, slurm_id: str) -> None:
    import os
    import subprocess

    if prof.executor == "slurm":
        subprocess.run(["scancel", slurm_id], capture_output=True, timeout=30, check=False)
        return
    try:
        os.kill(int(slurm_id), signal.SIGTERM)
    except (ProcessLookupError, ValueError):
        pass


def resize(job_id: Annotated[str, typer.Argument(help="A running job.")],
           gpus: Annotated[int, typer.Option("--gpus", help="The new GPU count.")],
           wait_s: Annotated[float, typer.Option("--wait-s", help="How long to wait for the "
                                                 "checkpoint before leaving the relaunch to "
                                                 "rebalance.")] = 120.0,
           json: JsonOpt = False, quiet: QuietOpt = False) -> None:
    """Checkpoint a running job and resubmit it with another GPU count."""
    from ptctl.slurm import orchestrate

    out = Output(json_mode=json, quiet=quiet)
    cfg = common.config()
    registry = _registry(cfg)
    state = registry.load(job_id)
    prof = _job_profile(cfg, state)
    allowed = orchestrate.allowed_gpus(registry.load_spec(job_id), prof)
    if gpus not in allowed:
        raise BadInputError(f"--gpus: got {gpus}, expected one of {', '.join(map(str, allowed))}"
                            f" for job {job_id}")
    if state.phase not in ("pending", "running") or state.pending_resize:
        raise PtctlError(f"job {job_id} is {state.phase}: only a pending or running job without "
                         "a resize under way can be resized")
    tick = orchestrate.Tick(now=time.time())
    if gpus != state.gpus:
        job = orchestrate.LiveJob(state, registry.load_spec(job_id), {})
        orchestrate.request_resize(registry, job, gpus, prof, tick)
        orchestrate.complete_resizes(registry, [job], prof, tick, wait_s=wait_s)
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
    folder = registry.paths(job_id).logs / chosen.slurm_job_id
    files = sorted(folder.glob(f"*_{task}_log.out")) + sorted(folder.glob(f"*_{task}_log.err"))
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
