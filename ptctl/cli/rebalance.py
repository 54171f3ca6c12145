"""`ptctl rebalance`: one scheduling round, for cron (or scrontrab)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from ptctl.cli import common
from ptctl.cli.output import JsonOpt, Output, QuietOpt
from ptctl.config import load_profile
from ptctl.jobs.registry import Registry
from ptctl.planner.interface import Decision


def rebalance(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show the decisions; change "
                                                            "nothing.")] = False,
    wait_s: Annotated[float, typer.Option("--wait-s", help="How long to wait for resizing jobs "
                                                           "to checkpoint.")] = 60.0,
    json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Start queued jobs, grow or shrink running ones, record finished and failed ones.

    Holds a lock so that overlapping cron runs never act twice; a second run right after
    changes nothing.
    """
    from ptctl.scheduler.round import rebalance_once

    out = Output(json_mode=json, quiet=quiet)
    cfg = common.config()
    profile = load_profile(cfg)
    tick = rebalance_once(Registry(cfg.home), profile, cfg.policy, dry_run=dry_run,
                          resize_wait_s=wait_s, bank_dir=cfg.bank_dir, wait_for_lock=False)
    if tick is None:
        out.emit({"skipped": "another rebalance holds the lock"},
                 human="another rebalance is running; nothing done")
        return
    rows = [(d.job_id, d.action, d.gpus, d.reason) for d in tick.decisions]
    out.table(["job", "decision", "gpus", "reason"], rows, data={
        "dry_run": dry_run, "policy": cfg.policy, "profile": profile.name,
        "decisions": [_decision_document(d) for d in tick.decisions], "actions": tick.actions,
        "unreadable": tick.unreadable, "fenced": [f.to_dict() for f in tick.fenced]})
    for line in tick.unreadable:
        out.warn(f"skipped: {line}")
    for fence in tick.fenced:
        out.warn(fence.line())
    if not json:
        for action in tick.actions:
            out.info(" ".join(f"{k}={v}" for k, v in action.items()))


def _decision_document(decision: Decision) -> dict[str, Any]:
    """A decision as `--json` shows it: times ISO-8601 UTC, as everywhere in `--json`; the
    policy's private memory left out."""
    from ptctl.scheduler.views import iso

    return {"job_id": decision.job_id, "action": decision.action, "gpus": decision.gpus,
            "reason": decision.reason, "predicted_finish": iso(decision.predicted_finish_s),
            "review_at": iso(decision.review_at_s)}
