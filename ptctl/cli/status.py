"""Listing commands: status (jobs as squeue users read them) and ls (every registered job)."""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer

from ptctl.cli import common
from ptctl.cli.output import (JsonOpt, Output, QuietOpt, fmt_duration, fmt_margin, fmt_ratio,
                              fmt_time)
from ptctl.config import Config, load_profile
from ptctl.errors import EXIT_SLURM_UNREACHABLE
from ptctl.jobs.registry import Registry

# What a cell shows for a Slurm field that Slurm could not be asked about.
UNKNOWN = "?"


def _status_table(out: Output, rows: list[dict[str, Any]]) -> None:
    """Live jobs show their Slurm job, slack, ETA and risk; ended ones when they ended and
    whether they met their deadline."""
    table = []
    for r in rows:
        acc = r["metrics"].get("accuracy") if r["metrics"] else None
        if r["slack_s"] is None:
            deadline, when, risk = fmt_margin(r["deadline_margin_s"]), r["ended_at"], "-"
        else:
            deadline = (f"{fmt_duration(r['slack_s'])} left" if r["slack_s"] >= 0
                        else f"passed {fmt_duration(-r['slack_s'])} ago")
            when = r["eta"]
            risk = "LATE" if r["predicted_violation"] else "ok" if r["eta"] else "-"
        table.append((
            r["job_id"], r["phase"] + ("(held)" if r.get("held") else ""),
            r["slurm_job_id"] or "-", _slurm_cell(r, r["partition"]), _state_cell(r),
            _gpus_cell(r["gpus"], r.get("pinned_gpus")), f"{r['step']}/{r['max_steps']}",
            f"{acc:.3f} / {r['target']}" if acc is not None else f"- / {r['target']}",
            deadline, fmt_time(when), risk))
    out.table(["job", "phase", "jobid", "partition", "state", "gpus", "step",
               "metric / target", "deadline", "eta / ended", "risk"], table, data=rows)


def _slurm_cell(row: dict[str, Any], value: str | None) -> str:
    if not row["slurm_known"]:
        return UNKNOWN
    return value or "-"


def _state_cell(row: dict[str, Any]) -> str:
    """squeue's state, with its reason while pending: `PENDING (Resources)`."""
    state = _slurm_cell(row, row["slurm_state"])
    return f"{state} ({row['slurm_reason']})" if state == "PENDING" and row["slurm_reason"] \
        else state


def _gpus_cell(gpus: int, pinned: int | None) -> str:
    if pinned is None:
        return str(gpus)
    return f"{gpus}(pinned)" if gpus == pinned else f"{gpus}(pinned:{pinned})"


def status(
    job_id: Annotated[str, typer.Argument(help="A job id (default: every live job).")] = None,
    all_jobs: Annotated[bool, typer.Option("--all", help="Include ended jobs.")] = False,
    watch: Annotated[float, typer.Option("--watch", help="Refresh every N seconds.")] = 0.0,
    json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Jobs with their Slurm job, state, GPUs, progress, slack, ETA and risk.

    Slurm job id, partition and state (with the pending reason) come from one squeue call.
    While Slurm does not answer: ptctl's own records with the Slurm columns unknown, then
    exit 75."""
    from ptctl.scheduler.status import status_rows, usage

    out = Output(json_mode=json, quiet=quiet)
    cfg = common.config()
    while True:
        report = status_rows(cfg, [job_id] if job_id else None, all_jobs)
        for line in report.unreadable:
            out.warn(f"skipped: {line}")
        if job_id and report.rows:
            row = report.rows[0]
            state = Registry(cfg.home).load(job_id)
            row["usage"] = usage(state, load_profile(cfg, state.profile or None), time.time())
            if json:
                out.emit(report.rows)
            else:
                _print_one(out, row, cfg)
        else:
            _status_table(out, report.rows)
        if not report.rows and not job_id and not all_jobs:
            registry = Registry(cfg.home)
            ended = sum(s.is_terminal for s in registry.all())
            out.info(f"no live jobs in {registry.jobs_dir}"
                     + (f"; {ended} ended job(s): ptctl status --all" if ended else ""))
        if report.unreachable:
            out.error(f"{report.unreachable}; shown: ptctl's own records, Slurm fields unknown "
                      f"({UNKNOWN}); retry later")
        if watch <= 0:
            if report.unreachable:
                raise typer.Exit(EXIT_SLURM_UNREACHABLE)
            return
        time.sleep(watch)


def _print_one(out: Output, row: dict[str, Any], cfg: Config) -> None:
    _status_table(out, [row])
    if row["ended_at"]:
        out.emit(None, human=f"outcome: {row['outcome']}; ended {row['ended_at']}, deadline "
                             f"{fmt_margin(row['deadline_margin_s'])}")
    used = row["usage"]
    out.emit(None, human=f"usage: {used['attempts']} attempt(s), "
                         f"{fmt_duration(used['elapsed_s'])} elapsed, "
                         f"{fmt_ratio(used['gpu_hours'])} GPU-hours"
                         + (f" (from {used['source']})" if used["source"] else ""))
    out.table(["attempt", "slurm job", "gpus", "state", "submitted", "ended", "reason"],
              [(i, a["slurm_job_id"], a["gpus"], a["state"], a["submitted_at"],
                a["ended_at"] or "-", a["reason"] or "") for i, a in enumerate(row["attempts"])])
    if row["errors"]:
        from ptctl.scheduler.round import log_tail

        out.emit(None, human="errors:\n" + "\n".join(row["errors"]))
        tail = log_tail(Registry(cfg.home), row["job_id"])
        if tail:
            out.emit(None, human="log tail:\n" + tail)


def ls(all_jobs: Annotated[bool, typer.Option("--all", help="Include ended jobs.")] = True,
       json: JsonOpt = False, quiet: QuietOpt = False) -> None:
    """Every registered job, one line each."""
    from ptctl.scheduler.status import ENDED_WORDS, deadline_margin_s, state_document
    from ptctl.scheduler.views import load_live_jobs

    out = Output(json_mode=json, quiet=quiet)
    registry = Registry(common.config().home)
    jobs = load_live_jobs(registry, include_terminal=all_jobs)
    for line in jobs.unreadable:
        out.warn(f"skipped: {line}")
    states, specs = [j.state for j in jobs], [j.spec for j in jobs]
    ended = [{"outcome": ENDED_WORDS.get(s.phase),
              "deadline_met": deadline_margin_s(s, spec) >= 0 if s.is_terminal else None}
             for s, spec in zip(states, specs)]
    out.table(["job", "name", "phase", "outcome", "gpus", "attempts", "deadline", "created"],
              [(s.job_id, s.name, s.phase, _ls_outcome(e), s.gpus, len(s.attempts),
                spec["deadline"], s.created_at) for s, spec, e in zip(states, specs, ended)],
              data=[state_document(s) | {"deadline": spec["deadline"]} | e
                    for s, spec, e in zip(states, specs, ended)])
    if not states:
        out.info(f"no jobs in {registry.jobs_dir}")


def _ls_outcome(ended: dict[str, Any]) -> str:
    if ended["outcome"] is None:
        return "-"
    return f"{ended['outcome']}, deadline {'met' if ended['deadline_met'] else 'missed'}"


def register(app: typer.Typer) -> None:
    app.command("status")(status)
    app.command("ls")(ls)
