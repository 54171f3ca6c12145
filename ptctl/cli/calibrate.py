"""`ptctl calibrate`: time a few steps of a job's shape so its plans use a measured rate."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ptctl.cli import common
from ptctl.cli.output import JsonOpt, Output
from ptctl.config import load_profile
from ptctl.jobs.spec import load_spec


def calibrate(
    spec_file: Annotated[Path, typer.Argument(help="Job spec YAML whose shape to time.")],
    profile: Annotated[str, typer.Option("--profile", help="Cluster profile name or YAML "
                                         "path.")] = None,
    steps: Annotated[int, typer.Option("--steps", min=2, max=100,
                                       help="Training steps to time.")] = 5,
    json: JsonOpt = False,
) -> None:
    """Time a few steps of a spec's shape so that submit plans it at a measured rate.

    The steps run on one GPU of the spec's partition, through the profile's backend; their
    speed joins the state folder's speed record."""
    from ptctl.scheduler.calibration import calibrate as run_calibration

    out = Output(json_mode=json)
    spec = load_spec(spec_file)
    cfg = common.config(profile=profile)
    prof = load_profile(cfg).with_overrides(spec.slurm.as_dict())
    found = run_calibration(cfg, prof, spec, steps=steps, info=out.info)
    out.emit(found.as_dict(),
             human=f"{spec.name}: {found.train_s:.3g} s per training step, {found.eval_s:.3g} s "
                   f"per evaluation, {found.overhead_s:.3g} s to start, on {found.device} "
                   f"({found.steps} steps timed in {found.wall_s:.0f} s); recorded for later "
                   "plans of this shape")
