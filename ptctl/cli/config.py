"""`ptctl config`: the effective configuration and the cluster profiles."""

from __future__ import annotations

import dataclasses

import typer

from ptctl.cli import common
from ptctl.cli.output import JsonOpt, Output, QuietOpt
from ptctl.config import CONFIG_KEYS, list_profiles, load_profile

app = typer.Typer(no_args_is_help=True, help="Show the effective configuration and profiles.")


@app.command("show")
def show(json: JsonOpt = False, quiet: QuietOpt = False) -> None:
    """Every effective config value and the layer it came from."""
    cfg = common.config()
    out = Output(json_mode=json, quiet=quiet)
    rows = [(key, value, source, CONFIG_KEYS[key][2]) for key, value, source in cfg.as_rows()]
    out.table(["key", "value", "source", "meaning"], rows,
              data={k: {"value": v, "source": s} for k, v, s, _ in rows})


@app.command("profiles")
def profiles(json: JsonOpt = False, quiet: QuietOpt = False) -> None:
    """The cluster profiles ptctl can use, and which one is in effect."""
    cfg = common.config()
    out = Output(json_mode=json, quiet=quiet)
    rows, data = [], []
    for name, origin in list_profiles(cfg).items():
        prof = load_profile(cfg, name)
        active = "*" if name == cfg.profile else ""
        rows.append((active, name, prof.executor, prof.partition or "-", prof.gpu_budget, origin))
        data.append({"active": bool(active), "origin": origin, **dataclasses.asdict(prof)})
    out.table(["", "profile", "executor", "partition", "gpu_budget", "defined in"], rows,
              data=data)
