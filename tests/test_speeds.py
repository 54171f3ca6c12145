"""Measured speed everywhere: the rate a job reports counts all its time, the speed record
learns it, and submit plans from it (or says it is guessing and never refuses on the guess)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers import LOCAL, run_cli, tiny_spec
from ptctl.jobs.progress import Progress
from ptctl.planner import speeds


def _spec(batch: int = 4, eval_every: int = 10) -> dict:
    return {"model": "tiny-random", "task": {"max_length": 32}, "prompt": {"virtual_tokens": 4},
            "training": {"global_batch_size": batch, "micro_batch_size": 2,
                         "eval_every": eval_every, "checkpoint_every": 50}}


def test_record_prices_eval_frequency_and_scales_to_the_nearest_batch(tmp_path: Path):
    # 100 steps at 2 steps/s with an evaluation of 1 s every 10 steps: 0.4 s per training step.
    progress = Progress(status="finished", step=100, world_size=1, steps_per_s=2.0, eval_s=1.0,
                        checkpoint_s=0.0, updated=1000.0, resumed_from_step=0)
    speeds.record_session(tmp_path, _spec(), "local/-", progress, created_at=1000.0 - 62.0)
    same = speeds.estimate(tmp_path, _spec(), "local/-")
    assert same.exact and abs(same.rates[1] - 2.0) < 1e-9
    assert abs(same.overhead_s - 12.0) < 1e-9
    assert speeds.estimate(tmp_path, _spec(eval_every=1), "local/-").rates[1] < 1.0
    doubled = speeds.estimate(tmp_path, _spec(batch=8), "local/-")
    assert not doubled.exact and abs(doubled.rates[1] - 1 / 0.9) < 1e-9
    assert speeds.estimate(tmp_path, _spec(), "slurm/gpu") is None
    assert speeds.estimate(tmp_path / "none", _spec(), "local/-") is None


def test_uncalibrated_short_job_with_tight_deadline_is_accepted(tmp_path: Path):
    """2000 steps in 6 minutes is 4000 s at the 0.5 steps/s guess: still not refused."""
    spec = tiny_spec(tmp_path, deadline="6m", training={
        "global_batch_size": 4, "micro_batch_size": 2, "max_steps": 2000})
    result = run_cli("submit", str(spec), "--dry-run", "--json", env=LOCAL)
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)["plan"]
    assert plan["rate_source"] == "uncalibrated" and plan["assumed_steps_per_s"] == 0.5
    assert plan["reason"].startswith("uncalibrated")
    human = run_cli("submit", str(spec), "--dry-run", env=LOCAL)
    assert human.returncode == 0 and "assumed 0.5 steps/s (a guess" in human.stdout


def test_finished_job_teaches_the_next_submit_of_its_shape(tmp_path: Path):
    spec = tiny_spec(tmp_path, training={"global_batch_size": 4, "micro_batch_size": 2,
                                         "max_steps": 30, "eval_every": 10,
                                         "checkpoint_every": 50})
    first = run_cli("submit", str(spec), "--wait", "--json", env=LOCAL, timeout=600)
    assert first.returncode == 3, first.stderr
    plan = json.loads(first.stdout)
    assert plan["rate_source"] == "uncalibrated"
    home = tmp_path / "ptctl-home"
    entry, = json.loads((home / "speeds.json").read_text()).values()
    assert entry["model"] == "tiny-random" and entry["world_size"] == 1 and entry["runs"] == 1
    again = run_cli("submit", str(spec), "--dry-run", "--json", env=LOCAL)
    assert again.returncode == 0, again.stderr
    second = json.loads(again.stdout)["plan"]
    assert second["rate_source"] == "record"
    # The plan runs at the speed the first job recorded, priced at this spec's evaluation and
    # checkpoint periods (how close that comes to the wall clock: benchmarks/predict_duration.py).
    training = {"eval_every": 10, "checkpoint_every": 50}
    assert second["assumed_steps_per_s"] == pytest.approx(speeds.rate_of(entry, training))
    assert second["assumed_steps_per_s"] != 0.5


def test_reported_rate_includes_evaluation_time(tmp_path: Path):
    rates = {}
    for every in (1, 100):
        folder = tmp_path / f"every{every}"
        folder.mkdir()
        spec = tiny_spec(folder, task={
            "source": "tweet-sentiment", "max_train_samples": 64, "eval_samples": 64,
            "max_length": 32,
            "label_words": {"negative": "bad", "neutral": "okay", "positive": "good"}},
            training={"global_batch_size": 4, "micro_batch_size": 4, "max_steps": 20,
                      "eval_every": every, "checkpoint_every": 100})
        result = run_cli("run", str(spec), "--dir", str(folder / "run"), "--json", timeout=600)
        assert result.returncode in (0, 3), result.stderr
        progress = json.loads((folder / "run" / "progress.json").read_text())
        rates[every] = progress["steps_per_s"]
        if every == 1:
            assert progress["eval_s"] > 0
    assert rates[1] < 0.8 * rates[100], rates


def test_calibration_records_the_shape_and_submit_plans_from_it(tmp_path: Path):
    """`ptctl calibrate` times a few steps through the backend and leaves only the record;
    `submit --calibrate` then finds the shape measured and plans from it."""
    spec = tiny_spec(tmp_path, training={"global_batch_size": 4, "micro_batch_size": 2,
                                         "max_steps": 400, "eval_every": 20,
                                         "checkpoint_every": 50})
    home = tmp_path / "ptctl-home"
    cal = run_cli("calibrate", str(spec), "--steps", "3", "--json", env=LOCAL, timeout=600)
    assert cal.returncode == 0, cal.stderr
    found = json.loads(cal.stdout)
    assert found["steps"] == 3 and found["train_s"] > 0 and found["device"] == "local/-"
    entry, = json.loads((home / "speeds.json").read_text()).values()
    assert entry["model"] == "tiny-random" and entry["world_size"] == 1
    assert entry["global_batch"] == 4 and entry["eval_s"] > 0
    assert not any((home / "calibration").iterdir())  # the run folder is gone
    assert not (home / "jobs").exists() or not any((home / "jobs").iterdir())
    plan = run_cli("submit", str(spec), "--calibrate", "--dry-run", "--json", env=LOCAL)
    assert plan.returncode == 0, plan.stderr
    assert json.loads(plan.stdout)["plan"]["rate_source"] == "record"
    human = run_cli("submit", str(spec), "--calibrate", "--dry-run", env=LOCAL)
    assert "on record already" in human.stdout + human.stderr
    assert "measured on earlier jobs of this shape" in human.stdout


def test_calibration_of_bad_data_fails_before_launching(tmp_path: Path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine", "label": "positive"}\n{"text": "cut in ha\n')
    spec = tiny_spec(tmp_path, task={"source": str(bad), "label_words": {"positive": "good"}})
    result = run_cli("submit", str(spec), "--calibrate", env=LOCAL)
    assert result.returncode == 2 and "bad.jsonl" in result.stderr
    assert not (tmp_path / "ptctl-home" / "calibration").exists()
