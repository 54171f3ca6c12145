"""`ptctl run SPEC.yaml`: train a job in the foreground on this machine.

The job folder (`--dir`, default ./runs/<name>) follows ptctl.jobs.paths; running the same
spec again resumes from its latest checkpoint, at any `--gpus`. SIGUSR2 / SIGTERM / Ctrl-C
save a checkpoint and exit 0 with status "stopped"; a run that ends at max_steps without
reaching its target exits 3.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Optional

import typer
import yaml

from ptctl.cli import common
from ptctl.cli.output import JsonOpt, Output, QuietOpt
from ptctl.errors import EXIT_TARGET_NOT_REACHED, BadInputError, CorruptFileError
from ptctl.fsutil import atomic_write_text
from ptctl.jobs.paths import JobPaths
from ptctl.jobs.spec import load_spec, resolved_spec_dict
from ptctl.safeload import load_yaml

# Fields that must match to resume a job folder (deadline, GPU bounds and Slurm may change).
_RESUME_KEYS = ("model", "task", "prompt", "training", "target")


def run(
    spec_file: Annotated[Path, typer.Argument(help="Job spec (YAML).", metavar="SPEC.yaml")],
    gpus: Annotated[Optional[int], typer.Option(
        "--gpus", help="Ranks (GPUs; CPU processes without GPUs). Default: the spec's gpus.min.")
    ] = None,
    job_dir: Annotated[Optional[Path], typer.Option(
        "--dir", help="Job folder for checkpoints, progress and result. Default: runs/<name>.")
    ] = None,
    json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Run a prompt-tuning job here, resuming from its latest checkpoint if there is one."""
    out = Output(json_mode=json, quiet=quiet)
    spec = load_spec(spec_file)
    world = gpus if gpus is not None else spec.gpus.min
    if world < 1:
        raise BadInputError(f"--gpus: got {world}, expected an integer >= 1")
    run_dir = JobPaths(job_dir if job_dir is not None else Path("runs") / spec.name)
    normalised = resolved_spec_dict(spec, datetime.now(timezone.utc))
    if run_dir.spec.is_file():
        before = load_yaml(run_dir.spec, str(run_dir.spec), error=CorruptFileError)
        if not isinstance(before, dict):
            raise CorruptFileError(f"{run_dir.spec}: not a job spec (a YAML mapping)")
        changed = [k for k in _RESUME_KEYS if before.get(k) != normalised.get(k)]
        if changed:
            raise BadInputError(f"{run_dir.root}: holds a job with a different "
                                f"{', '.join(changed)}; use another --dir")

    from ptctl.tuning.data import task_rows
    from ptctl.tuning.launch import default_device, launch  # torch loads only here
    from ptctl.tuning.report import ranks

    task_rows(spec.task)  # bad data fails here, before the folder records this task
    if not run_dir.spec.is_file():
        atomic_write_text(run_dir.spec, yaml.safe_dump(normalised, sort_keys=False))

    init_prompt = init_prompt_id = None
    if spec.prompt.init == "bank" and not any(run_dir.checkpoints.glob("step_*")):
        from safetensors.torch import load as load_tensors

        from ptctl.bank.query import choose_initial_prompt

        choice = choose_initial_prompt(common.config().bank_dir, spec, info=out.info,
                                       warn=out.warn)
        if choice is not None and choice["prompt_bytes"]:
            init_prompt = load_tensors(choice["prompt_bytes"])["prompt"]
            init_prompt_id = choice["prompt_id"]
    out.info(f"ptctl: running {spec.name} on {ranks(world, default_device(0, world))} in "
             f"{run_dir.root}")
    outcome = launch(spec, run_dir.root, world, init_prompt=init_prompt,
                     init_prompt_id=init_prompt_id,
                     display="off" if quiet or json else "auto")
    ended = outcome.status == "finished"
    reached = outcome.reason == "target_reached" if ended else None
    data = {"job": spec.name, "dir": str(run_dir.root), "status": outcome.status,
            "reason": outcome.reason, "target_reached": reached, "step": outcome.step,
            "samples": outcome.samples, "metrics": outcome.metrics,
            "checkpoint": str(outcome.checkpoint) if outcome.checkpoint else None,
            "result": str(outcome.result) if outcome.result else None}
    metric = ", ".join(f"{k} {v:.4f}" for k, v in (outcome.metrics or {}).items()) or "-"
    if reached:
        words = f"finished, target {spec.target} reached at step {outcome.step}"
    elif ended:
        words = f"stopped at max_steps ({outcome.step}), target {spec.target} not reached"
    else:
        words = f"stopped ({outcome.reason}) at step {outcome.step}; run again to resume"
    where = outcome.result if ended else outcome.checkpoint
    out.emit(data, human=f"{spec.name}: {words}; {metric}; {where}")
    if ended and not reached:
        raise typer.Exit(EXIT_TARGET_NOT_REACHED)
