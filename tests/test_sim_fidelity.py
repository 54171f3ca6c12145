"""ptctl's `elasticflow` replay against ElasticFlow's own simulator, run on the same inputs and
recorded in data/elasticflow/reference/ (see its README): the same jobs admitted, the same jobs
meeting their deadlines, the same GPU-hours. Reference files are part of the repository, so a
missing one fails."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

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
