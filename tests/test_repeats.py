"""A job that repeats an ended one of the same task is predicted to take that one's steps."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import yaml

from helpers import LOCAL, run_cli, tiny_spec
from ptctl.jobs.lifecycle import Phase
from ptctl.jobs.registry import Registry
from ptctl.jobs.spec import resolved_spec_dict, spec_from_dict
from ptctl.scheduler.repeats import earlier_run


def _spec(**training) -> dict:
    """A spec as submit stores it (every field: the registry reads no less), these training
    values set."""
    return resolved_spec_dict(spec_from_dict({
        "name": "a", "model": "tiny-random", "task": {"source": "tweet-sentiment"},
        "target": "accuracy >= 0.9", "deadline": "24h", "gpus": {"min": 1, "max": 2},
        "training": {"learning_rate": 0.3, "max_steps": 60, **training}}),
        datetime(2026, 1, 1, tzinfo=timezone.utc))


def _ended(registry: Registry, spec: dict, phase: Phase, step: int, ended_at: str,
           init: str | None = "entry-a") -> str:
    state = registry.create(spec["name"], spec, init_prompt_id=init)

    def end(st):
        st.phase, st.ended_at, st.progress = phase, ended_at, {"step": step}
    registry.update(state.job_id, end)
    return state.job_id


def test_the_latest_ended_job_of_the_same_task_and_start_predicts(tmp_path: Path):
    registry = Registry(tmp_path)
    _ended(registry, _spec(), Phase.FINISHED, 12, "2026-01-01T00:00:00+00:00")
    latest = _ended(registry, _spec(), Phase.FINISHED, 10, "2026-01-02T00:00:00+00:00")
    _ended(registry, _spec(), Phase.CANCELLED, 3, "2026-01-03T00:00:00+00:00")
    _ended(registry, _spec(), Phase.FINISHED, 7, "2026-01-04T00:00:00+00:00", init="entry-b")
    _ended(registry, _spec(learning_rate=0.1), Phase.FINISHED, 5, "2026-01-05T00:00:00+00:00")
    # Another name, deadline, GPU bounds and Slurm settings are the same task.
    other = dict(_spec(), name="b", deadline="2027-01-01T00:00:00+00:00",
                 gpus={"min": 1, "max": 8}, slurm={"partition": "gpu"})
    found = earlier_run(registry, other, "entry-a")
    assert found is not None and (found.steps, found.job_id) == (10, latest)
    assert earlier_run(registry, _spec(max_steps=80), "entry-a") is None
    assert earlier_run(registry, _spec(), None) is None


def test_a_second_submit_of_an_unmet_task_predicts_all_its_steps(tmp_path: Path):
    spec = tiny_spec(tmp_path, training={"global_batch_size": 4, "micro_batch_size": 2,
                                         "max_steps": 8, "eval_every": 4,
                                         "checkpoint_every": 50})
    first = run_cli("submit", str(spec), "--wait", "--json", env=LOCAL, timeout=600)
    assert first.returncode == 3, first.stderr
    assert json.loads(first.stdout)["predicted_steps_from"] == "max_steps"
    data = yaml.safe_load(spec.read_text())
    data.update(name="renamed", deadline="2h")
    spec.write_text(yaml.safe_dump(data))
    again = run_cli("submit", str(spec), "--dry-run", "--json", env=LOCAL)
    assert again.returncode == 0, again.stderr
    plan = json.loads(again.stdout)["plan"]
    job_id = json.loads(first.stdout)["job_id"]
    assert plan["predicted_steps"] == 8 and plan["predicted_steps_from"] == f"job {job_id}"
    # The repeat is what the job plans with (its estimates), not only what submit prints.
    assert plan["predicted_steps_sd_log"] == 0.0 and plan["predicted_interval"] == [8, 8]
