"""`ptctl sim`: run scheduling policies over job traces (run, compare) and generate
prompt-tuning traces (gen). Heavy modules load inside the commands to keep start-up fast."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from ptctl.cli.output import JsonOpt, Output, QuietOpt, fmt_value
from ptctl.errors import BadInputError

app = typer.Typer(no_args_is_help=True, help="Simulate scheduling policies on job traces.")

TraceOpt = Annotated[Path, typer.Option("--trace", help="Job trace CSV (ElasticFlow or ptctl format).")]
GpusOpt = Annotated[Optional[int], typer.Option("--gpus", help="Cluster size in GPUs.")]
SpecOpt = Annotated[Optional[Path], typer.Option("--cluster-spec", help="ElasticFlow cluster spec CSV (nXgY.csv).")]
TputOpt = Annotated[Optional[Path], typer.Option("--throughputs", help="Folder of ElasticFlow-format throughput CSVs.")]
SlotOpt = Annotated[float, typer.Option("--slot", help="Scheduling slot in seconds.")]
OverheadOpt = Annotated[Optional[str], typer.Option(
    "--overhead-model", help="resize (Slurm resize cost) or elasticflow; default by trace format.")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed of the estimate noise.")]


DEFAULT_POLICIES = "prompttuner,elasticflow,infless,edf,fifo"
DEFAULT_MODELS = "gpt-base:0.4,gpt-large:0.35,vicuna-7b:0.25"


@app.command("run")
def run(trace: TraceOpt, policy: Annotated[str, typer.Option("--policy", help="Policy name.")],
        gpus: GpusOpt = None, cluster_spec: SpecOpt = None, throughputs: TputOpt = None,
        slot: SlotOpt = 60.0, overhead_model: OverheadOpt = None, seed: SeedOpt = 0,
        jobs_csv: Annotated[Optional[Path], typer.Option("--jobs-csv", help="Write the per-job CSV here.")] = None,
        json_out: JsonOpt = False, quiet: QuietOpt = False) -> None:
    """Simulate one policy over a trace and print its SLO and cost figures."""
    from ptctl.sim.runner import run_trace, write_job_csv

    out = Output(json_mode=json_out, quiet=quiet)
    if jobs_csv is not None:  # checked before the simulation, which can take minutes
        folder = jobs_csv.parent
        if jobs_csv.is_dir() or not folder.is_dir() or not os.access(folder, os.W_OK):
            raise BadInputError(f"--jobs-csv {jobs_csv}: not a file in an existing, writable "
                                "folder")
    result = run_trace(trace, [policy], gpus=gpus, cluster_spec=cluster_spec,
                       throughputs=throughputs, slot_s=slot, overhead_model=overhead_model,
                       seed=seed)[policy]
    summary = result.summary()
    if jobs_csv is not None:
        write_job_csv(jobs_csv, result)
        out.info(f"per-job results written to {jobs_csv}")
    out.table(["metric", "value"], [(k, fmt_value(k, summary[k])) for k in summary
                                    if k != "policy"],
              data=summary, title=f"{policy} on {trace.name}")


@app.command("compare")
def compare(trace: TraceOpt,
            policies: Annotated[str, typer.Option(
                "--policies", show_default=False,  # in the help text, where it wraps uncut
                help="Comma-separated policy names (default: "
                     f"{DEFAULT_POLICIES.replace(',', ', ')}).")] = DEFAULT_POLICIES,
            gpus: GpusOpt = None, cluster_spec: SpecOpt = None, throughputs: TputOpt = None,
            slot: SlotOpt = 60.0, overhead_model: OverheadOpt = None, seed: SeedOpt = 0,
            plots: Annotated[Path, typer.Option("--plots", help="Folder for the PNG plots.")] = Path("sim-plots"),
            json_out: JsonOpt = False, quiet: QuietOpt = False) -> None:
    """Run several policies on one trace; ratios are against `prompttuner` when it is listed."""
    from ptctl.sim.plots import PlotContext, plot_comparison
    from ptctl.sim.runner import baseline_of, ratios_to, run_policies

    out = Output(json_mode=json_out, quiet=quiet)
    names = [p.strip() for p in policies.split(",") if p.strip()]
    if not names:
        raise BadInputError("--policies is empty")
    results, config = run_policies(trace, names, gpus=gpus, cluster_spec=cluster_spec,
                                   throughputs=throughputs, slot_s=slot,
                                   overhead_model=overhead_model, seed=seed)
    baseline = baseline_of(names)
    rows = ratios_to(results, baseline)
    ctx = PlotContext(trace.name, config.cluster.total_gpus, config.cluster.slot_s, baseline)
    paths = plot_comparison(results, plots, ctx)
    out.info("plots: " + ", ".join(str(p) for p in paths))
    columns = ["policy", "met_deadline", "late", "unfinished", "declined", "slo_violation_rate",
               "gpu_hours", "mean_jct_s", "resizes", f"violations_vs_{baseline}",
               f"gpu_hours_vs_{baseline}"]
    out.table(columns, [[fmt_value(c, r[c]) for c in columns] for r in rows], data=rows,
              title=f"{ctx.subtitle(rows[0]['jobs'])}; ratios to {baseline}")


@app.command("gen")
def gen(out_path: Annotated[Path, typer.Option("--out", help="Trace CSV to write.")],
        jobs: Annotated[int, typer.Option("--jobs", help="Number of jobs.")] = 200,
        rate: Annotated[float, typer.Option("--rate", help="Poisson arrivals per hour.")] = 30.0,
        models: Annotated[str, typer.Option(
            "--models", show_default=False,
            help=f"model:weight,... mix (default: {DEFAULT_MODELS.replace(',', ', ')}).")]
        = DEFAULT_MODELS,
        k_range: Annotated[str, typer.Option("--k", help="Deadline factor range lo,hi.")] = "0.5,1.5",
        reference_gpus: Annotated[int, typer.Option("--reference-gpus", help="GPUs the deadline factor refers to.")] = 2,
        max_gpus: Annotated[int, typer.Option("--max-gpus", help="Per-job GPU cap.")] = 32,
        convergence: Annotated[Optional[Path], typer.Option(
            "--convergence", help="JSON overriding random-start iteration statistics, or "
                                  "replacing the measured bank starts by a log-normal ratio.")] = None,
        seed: SeedOpt = 0, json_out: JsonOpt = False, quiet: QuietOpt = False) -> None:
    """Write a prompt-tuning trace (ptctl format): Poisson arrivals, bank starts and predictions
    resampled from the measured held-out runs."""
    from ptctl.sim.gen import GenSpec
    from ptctl.sim.runner import generate_trace

    out = Output(json_mode=json_out, quiet=quiet)
    try:
        mix = [(m.split(":")[0].strip(), float(m.split(":")[1]) if ":" in m else 1.0)
               for m in models.split(",") if m.strip()]
        k_lo, k_hi = (float(x) for x in k_range.split(","))
    except ValueError:
        raise BadInputError(f"--models {models!r} / --k {k_range!r}: expected 'name:weight,...' "
                            "and 'lo,hi'") from None
    spec = GenSpec(jobs=jobs, rate_per_hour=rate, models=tuple(m for m, _ in mix),
                   model_weights=tuple(w for _, w in mix), k_min=k_lo, k_max=k_hi,
                   reference_gpus=reference_gpus, max_gpus=max_gpus, seed=seed)
    summary = generate_trace(out_path, spec, convergence)
    out.table(["key", "value"], [(k, fmt_value(k, v)) for k, v in summary.items()], data=summary,
              title="generated trace")
