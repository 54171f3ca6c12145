"""The `ptctl` entry point: wires the command modules, turns known errors into one line."""

from __future__ import annotations

import os
import re
import sys

import typer

from ptctl import __version__
from ptctl.cli.common import GLOBAL_FLAGS
from ptctl.errors import PtctlError

app = typer.Typer(
    name="ptctl",
    help="SLO-aware elastic prompt tuning on Slurm.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

_debug = {"on": bool(os.environ.get("PTCTL_DEBUG"))}


def _version(value: bool) -> None:
    if value:
        print(f"ptctl {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks for known errors too."),
    home: str = typer.Option(None, "--home", help="State folder (config key `home`)."),
    profile: str = typer.Option(None, "--profile", help="Cluster profile name or YAML path."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    """SLO-aware elastic prompt tuning on Slurm."""
    if debug:
        _debug["on"] = True
    GLOBAL_FLAGS.update({"home": home, "profile": profile})


def _wire() -> None:
    from ptctl.cli import (bank, calibrate, config, doctor, jobs, predict, rebalance, run, sim,
                           status)

    jobs.register(app)
    status.register(app)
    predict.register(app)
    app.command("run")(run.run)
    app.command("calibrate")(calibrate.calibrate)
    app.command("rebalance")(rebalance.rebalance)
    app.add_typer(bank.app, name="bank")
    app.add_typer(config.app, name="config")
    app.add_typer(sim.app, name="sim")
    app.command("doctor")(doctor.doctor)


_wire()


def _usage_line(exc: Exception) -> str | None:
    """The one line for a usage error Typer raises (unknown option or command, missing or bad
    argument), found by duck typing: Typer bundles its own click from 0.26 on."""
    format_message = getattr(exc, "format_message", None)
    if not callable(format_message) or not isinstance(getattr(exc, "exit_code", None), int):
        return None
    # One line; a sentence said twice (Typer's and click's "Did you mean") said once.
    message = re.sub(r"(\S[^.?!]*[.?!])(?: \1)+", r"\1", " ".join(format_message().split()))
    message = message.removesuffix(".")
    ctx = getattr(exc, "ctx", None)
    path = getattr(ctx, "command_path", None) or "ptctl"
    hint = f" (see '{path} --help')" if exc.exit_code == 2 else ""
    return f"ptctl: error: {message}{hint}" if message else ""


def main() -> None:
    try:
        code = app(prog_name="ptctl", standalone_mode=False)
    except PtctlError as exc:
        if _debug["on"]:
            raise
        print(f"ptctl: error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        print("ptctl: interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as exc:
        line = _usage_line(exc)
        if line is None:
            raise
        if line:  # empty: a group called bare, whose help Typer has printed already
            print(line, file=sys.stderr)
        sys.exit(exc.exit_code)
    sys.exit(code if isinstance(code, int) else 0)
