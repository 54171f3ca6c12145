"""Glue shared by `ptctl sim` and the benchmarks: load a trace with the right throughput table
and cluster physics, run policies, generate traces, write per-job CSVs and comparison rows
(the figures are `plots.py`'s)."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from ptctl.errors import BadInputError
from ptctl.fsutil import atomic_write_text
from ptctl.planner.gpu_need import OVERHEAD_MODELS, ClusterModel, ResizeCost
from ptctl.planner.throughput import ThroughputTable
from ptctl.planner.policies import get_policy
from ptctl.sim.engine import simulate
from ptctl.sim.gen import GenSpec, generate, load_convergence, prompt_tuning_throughputs
from ptctl.sim.results import SimConfig, SimResult
from ptctl.sim.traces import (SimJob, check_trace_file, read_cluster_layout, read_trace,
                              write_ptctl_trace)


def is_ptctl_trace(path: str | Path) -> bool:
    with open(path, newline="") as f:
        return "arrival_s" in f.readline()


def prepare(trace: str | Path, *, gpus: int | None = None, cluster_spec: str | Path | None = None,
            throughputs: str | Path | None = None, slot_s: float = 60.0,
            overhead_model: str | None = None, seed: int = 0,
            estimate_rel_sd: float | None = None,
            resize_cost: ResizeCost | None = None) -> tuple[list[SimJob], SimConfig]:
    """Jobs and a SimConfig for one trace.

    ptctl traces default to the built-in prompt-tuning table, the `resize` overhead model and
    20% estimate noise; ElasticFlow traces need `throughputs` and default to ElasticFlow's own
    overhead model and exact estimates, as its simulator."""
    trace = Path(trace)
    if not trace.is_file():
        raise BadInputError(f"trace {trace}: no such file")
    check_trace_file(trace)
    if (gpus is None) == (cluster_spec is None):
        raise BadInputError("give exactly one of --gpus and --cluster-spec")
    ptctl_format = is_ptctl_trace(trace)
    if throughputs is not None:
        table = ThroughputTable.from_elasticflow_dir(throughputs)
    elif ptctl_format:
        table = prompt_tuning_throughputs()
    else:
        raise BadInputError(f"{trace.name} is an ElasticFlow trace: give --throughputs DIR "
                            "(e.g. data/elasticflow/throughputs_A100)")
    per_node, per_switch = 8, 0
    if cluster_spec is not None:
        switches, per_switch, per_node = read_cluster_layout(cluster_spec)
        gpus = switches * per_switch * per_node
    if gpus is None or gpus < 1:
        raise BadInputError(f"--gpus {gpus} must be >= 1")
    model = overhead_model or ("resize" if ptctl_format else "elasticflow")
    if model not in OVERHEAD_MODELS:
        raise BadInputError(f"--overhead-model {model!r} must be one of {', '.join(OVERHEAD_MODELS)}")
    cluster = ClusterModel(gpus, per_node, slot_s, resize_cost or ResizeCost(), model)
    noise = estimate_rel_sd if estimate_rel_sd is not None else (0.2 if ptctl_format else 0.0)
    jobs = read_trace(trace, table)
    return jobs, SimConfig(cluster, table, seed=seed, estimate_rel_sd=noise,
                           nodes_per_switch=per_switch)


def run_trace(trace: str | Path, policies: list[str], **options) -> dict[str, SimResult]:
    """Each policy over one trace (`options` as `prepare`'s)."""
    return run_policies(trace, policies, **options)[0]


def run_policies(trace: str | Path, policies: list[str],
                 **options) -> tuple[dict[str, SimResult], SimConfig]:
    """Each policy over one trace, and the config they ran under (plots name its cluster);
    unknown names fail before the trace is loaded."""
    for name in policies:
        get_policy(name)
    jobs, config = prepare(trace, **options)
    return {p: simulate(jobs, p, config) for p in policies}, config


def baseline_of(policies: list[str]) -> str:
    """The policy a comparison is against: `prompttuner` when it runs, else the first."""
    return "prompttuner" if "prompttuner" in policies else policies[0]


def generate_trace(path: str | Path, spec: GenSpec, convergence: str | Path | None) -> dict:
    """Write a generated prompt-tuning trace; returns what it holds, in short."""
    trace = generate(spec, load_convergence(convergence))
    write_ptctl_trace(path, trace)
    return {"path": str(path), "jobs": len(trace),
            "span_hours": (trace[-1].arrival_s - trace[0].arrival_s) / 3600,
            "mean_bank_over_random": sum(j.iterations_bank / j.iterations for j in trace) / len(trace)}


def write_job_csv(path: str | Path, result: SimResult) -> None:
    rows = result.job_rows()
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]) if rows else ["job_id"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def ratios_to(results: dict[str, SimResult], baseline: str) -> list[dict]:
    """Each policy's summary with violations and GPU-hours as ratios to `baseline`'s."""
    base = results[baseline].summary()
    rows = []
    for name, result in results.items():
        s = result.summary()
        rows.append({
            **s,
            "violations_vs_" + baseline: _ratio(s["slo_violation_rate"], base["slo_violation_rate"]),
            "gpu_hours_vs_" + baseline: _ratio(s["gpu_hours"], base["gpu_hours"]),
        })
    return rows


def _ratio(value: float, base: float) -> float | None:
    return None if base == 0 else value / base
