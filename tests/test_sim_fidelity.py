"""ptctl's `elasticflow` replay against ElasticFlow's own simulator, run on the same inputs and
recorded in data/elasticflow/reference/ (see its README): the same jobs admitted, the same jobs
meeting their deadlines, the same GPU-hours. Reference files are part of the repository, so a
missing one fails."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from helpers import benchmark_module
from ptctl.sim.engine import simulate
from ptctl.sim.runner import prepare

DATA = Path(__file__).resolve().parents[1] / "data" / "elasticflow"


def reference(name: str) -> tuple[dict, dict[str, bool]]:
    """Summary and job id -> met deadline, of ElasticFlow's run `name` (<trace>_<spec>)."""
    folder = DATA / "reference" / name
    summary = json.loads((folder / "summary.json").read_text())
    with open(folder / "admitted.csv", newline="") as f:
        admitted = {row["job_id"]: row["met"] == "1" for row in csv.DictReader(f)}
    return summary, admitted


@pytest.mark.parametrize("name", ["195job_n16g8", "cluster01_first100_n64g8"])
def test_elasticflow_replay_matches_elasticflows_simulator_exactly(name):
    summary, admitted = reference(name)
    assert len(admitted) == summary["admitted"]
    assert sum(admitted.values()) == summary["met_deadline"]
    jobs, config = prepare(DATA / summary["trace"],
                           cluster_spec=DATA / "cluster_specs" / summary["cluster_spec"],
                           throughputs=DATA / "throughputs_A100")
    assert len(jobs) == summary["jobs"]
    result = simulate(jobs, "elasticflow", config)
    ours = {o.job_id: o for o in result.outcomes}
    assert {j for j, o in ours.items() if not o.declined} == set(admitted)
    assert {j for j, o in ours.items() if o.met_deadline} == {j for j, met in admitted.items() if met}
    s = result.summary()
    assert s["deadline_satisfactory_ratio"] == pytest.approx(summary["deadline_satisfactory_ratio"],
                                                             abs=1e-12)
    assert s["gpu_hours"] == pytest.approx(summary["gpu_hours"], abs=1e-5)


def test_elasticflow_replay_matches_a_stopped_run_on_its_first_arrivals():
    """cluster03's whole run was stopped at a cut (see the reference README). Any earlier moment
    is a cut too: the decisions on the jobs that had arrived by then, and which of them had
    left, meeting their deadline or not. The first 150 arrivals keep the test fast; the whole
    cut is compared by `benchmarks/sim_fidelity.py`."""
    fidelity = benchmark_module("sim_fidelity")
    summary, rows = fidelity.load_reference("cluster03_n64g8")
    assert len(rows) == summary["admitted"]
    assert sum(row["left_s"] != "" for row in rows.values()) == summary["left"]
    jobs, config = prepare(DATA / summary["trace"],
                           cluster_spec=DATA / "cluster_specs" / summary["cluster_spec"],
                           throughputs=DATA / "throughputs_A100")
    first = jobs[:150]
    until = first[-1].arrival_s
    assert until < summary["cut_at_s"]

    result = simulate(first, "elasticflow", config)
    outcomes = {o.job_id: fidelity.state_at(o, until) for o in result.outcomes}
    assert outcomes == {j.job_id: fidelity.reference_state_at(rows.get(j.job_id), until)
                        for j in first}
    assert {"declined", "running", "met"} <= set(outcomes.values())
