"""One unreadable job record blocks nothing: it is named once and skipped, every other job is
served by ls, status, rebalance, submit and doctor."""

from __future__ import annotations

import json
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import pytest
import yaml

from helpers import LOCAL, run_cli, tiny_spec
from ptctl.config import Profile
from ptctl.jobs.registry import Registry, SlurmAttempt
from ptctl.jobs.spec import load_spec, resolved_spec_dict
from ptctl.scheduler.round import rebalance_once
from ptctl.scheduler.views import load_live_jobs

# what to break -> (the file named in the report, how to break it)
BREAKS = {
    "state bad JSON": ("state.json", lambda p: p.state.write_text("{not json")),
    "state not an object": ("state.json", lambda p: p.state.write_text("[1, 2]")),
    "state wrong type": ("state.json", lambda p: p.state.write_text(json.dumps(
        json.loads(p.state.read_text()) | {"gpus": "two"}))),
    "state attempt wrong type": ("state.json", lambda p: p.state.write_text(json.dumps(
        json.loads(p.state.read_text()) | {"attempts": [{"slurm_job_id": 1}]}))),
    "state not UTF-8": ("state.json", lambda p: p.state.write_bytes(b'{"name": "\xff"}')),
    "spec not UTF-8": ("spec.yaml", lambda p: p.spec.write_bytes(b"name: \xff\xfe\n")),
    "spec bad YAML": ("spec.yaml", lambda p: p.spec.write_text("name: [unclosed\n")),
    "spec wrong type": ("spec.yaml", lambda p: p.spec.write_text(
        p.spec.read_text().replace("max_steps: 12", "max_steps: many"))),
    "spec gpus wrong type": ("spec.yaml", lambda p: _spec_change(p, gpus={"min": "x"})),
    "spec training not a mapping": ("spec.yaml", lambda p: _spec_change(p, training=3)),
    "spec deadline a list": ("spec.yaml", lambda p: _spec_change(p, deadline=[1])),
    "spec slurm wrong type": ("spec.yaml", lambda p: _spec_change(p, slurm={"setup": "x"})),
    "spec field missing": ("spec.yaml", lambda p: _spec_change(p, target=None)),
    "progress not UTF-8": ("progress.json", lambda p: p.progress.write_bytes(b"\xff{")),
    "progress wrong type": ("progress.json", lambda p: p.progress.write_text('{"step": "x"}')),
}


def _spec_change(paths, **changes) -> None:
    """Give the stored spec these top-level values (None: drop the field)."""
    spec = yaml.safe_load(paths.spec.read_text())
    spec.update(changes)
    paths.spec.write_text(yaml.safe_dump({k: v for k, v in spec.items() if v is not None}))


def _jobs(tmp_path: Path, n: int, **state) -> tuple[Registry, list[str]]:
    data = resolved_spec_dict(load_spec(tiny_spec(tmp_path)), datetime.now(timezone.utc))
    registry = Registry(tmp_path / "ptctl-home")
    return registry, [registry.create("tiny", data, **state).job_id for _ in range(n)]


@pytest.mark.parametrize("case", sorted(BREAKS))
def test_a_bad_record_is_named_and_the_rest_served(tmp_path: Path, case):
    registry, ids = _jobs(tmp_path, 3)
    name, damage = BREAKS[case]
    damage(registry.paths(ids[1]))
    jobs = load_live_jobs(registry, include_terminal=True)
    assert len(jobs.unreadable) == 1 and f"{ids[1]}/{name}" in jobs.unreadable[0]
    served = {j.job_id for j in jobs}
    # A job whose progress cannot be read is kept without it: its GPUs stay counted.
    assert served == (set(ids) if name == "progress.json" else {ids[0], ids[2]})


def test_stray_entries_are_named_and_skipped(tmp_path: Path):
    registry, ids = _jobs(tmp_path, 1)
    (registry.jobs_dir / "backup").mkdir()
    (registry.jobs_dir / "tiny-zzzz").mkdir()  # a job id, but no state.json
    (registry.jobs_dir / "notes.txt").write_text("x")
    jobs = load_live_jobs(registry)
    assert [j.job_id for j in jobs] == ids
    assert sorted(line.split(":")[0].rsplit("/", 1)[1] for line in jobs.unreadable) == [
        "backup", "notes.txt", "tiny-zzzz"]


def test_commands_serve_every_other_job(tmp_path: Path):
    registry, ids = _jobs(tmp_path, 3, held=True)  # held: the round starts nothing
    BREAKS["state not UTF-8"][1](registry.paths(ids[0]))
    BREAKS["spec not UTF-8"][1](registry.paths(ids[1]))
    (registry.jobs_dir / "backup").mkdir()
    bad = [str(registry.paths(ids[0]).state), str(registry.paths(ids[1]).spec),
           str(registry.jobs_dir / "backup")]

    for args in (["ls"], ["status", "--all"]):
        result = run_cli(*args, "--json", env=LOCAL)
        assert result.returncode == 0, result.stderr
        assert [r["job_id"] for r in json.loads(result.stdout)] == [ids[2]]
        warnings = result.stderr.splitlines()
        assert len(warnings) == 3 and all(w.startswith("ptctl: warning: skipped: ")
                                          for w in warnings), result.stderr
        assert all(any(b in w for w in warnings) for b in bad)
        assert "Traceback" not in result.stderr

    result = run_cli("rebalance", "--json", env=LOCAL)
    assert result.returncode == 0, result.stderr
    unreadable = json.loads(result.stdout)["unreadable"]
    assert len(unreadable) == 3 and all(any(b in u for u in unreadable) for b in bad)

    result = run_cli("doctor", "--json", env=LOCAL)
    warned = [c["detail"] for c in json.loads(result.stdout)["checks"]
              if c["name"] == "job record" and c["status"] == "warn"]
    assert len(warned) == 3 and all(any(b in w for w in warned) for b in bad)


def test_a_damaged_spec_is_one_line_for_every_command(tmp_path: Path):
    """Every command that reads a named job's spec says which file is damaged, in one line
    with exit 1; listings skip the job."""
    damages = [{"gpus": {"min": "x"}}, {"training": 3}, {"deadline": [1]}]
    registry, ids = _jobs(tmp_path, len(damages) + 1, held=True)
    for job_id, change in zip(ids, damages):
        _spec_change(registry.paths(job_id), **change)
    for job_id in ids[:-1]:
        for args in (["status", job_id], ["resize", job_id, "--gpus", "1"],
                     ["result", job_id]):
            result = run_cli(*args, env=LOCAL)
            assert result.returncode == 1, (args, result.stderr)
            assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
            if args[0] != "result":  # result first says there is no result yet
                assert f"{registry.paths(job_id).spec}: corrupt job spec" in result.stderr
    result = run_cli("status", "--all", "--json", env=LOCAL)
    assert result.returncode == 0, result.stderr
    assert [r["job_id"] for r in json.loads(result.stdout)] == [ids[-1]]
    assert result.stderr.count("skipped: ") == len(damages)


LOCAL_ONE_GPU = Profile(name="local", executor="local", gpus_per_node=1, gpu_budget=1,
                        queue_wait_s=0.0)


@pytest.mark.parametrize("damaged", ["state.json", "spec.yaml"])
def test_an_unreadable_job_keeps_the_gpus_its_attempt_holds(tmp_path: Path, damaged):
    """A round cannot read a running job's record: while the attempt lives its GPU stays off
    the budget (a queued job is not started on it), and is freed once the attempt ends."""
    attempt = subprocess.Popen(["sleep", "120"])  # the running attempt's process
    try:
        registry, (running,) = _jobs(tmp_path, 1, phase="running", gpus=1, attempts=[
            SlurmAttempt(str(attempt.pid), 1, "2026-12-01T00:00:00+00:00", state="RUNNING")])
        _, (queued,) = _jobs(tmp_path, 1)
        paths = registry.paths(running)
        paths.attempt_logs(str(attempt.pid)).mkdir(parents=True)  # as submitit makes it
        BREAKS["state not UTF-8" if damaged == "state.json" else "spec deadline a list"][1](
            paths)
        tick = rebalance_once(registry, LOCAL_ONE_GPU, "prompttuner", dry_run=True)
        assert [f.to_dict() for f in tick.fenced] == [
            {"job": running, "attempts": [str(attempt.pid)], "gpus": 1}]
        assert [(d.job_id, d.gpus) for d in tick.decisions] == [(queued, 0)]

        result = run_cli("rebalance", "--dry-run", "--json", env=LOCAL)
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["fenced"] == [f.to_dict() for f in tick.fenced]
        assert f"job {running}: its record does not read" in result.stderr
        result = run_cli("doctor", "--json", env=LOCAL)
        assert any(c["name"] == "fenced GPUs" and running in c["detail"]
                   for c in json.loads(result.stdout)["checks"])
    finally:
        attempt.kill()
        attempt.wait()
    tick = rebalance_once(registry, LOCAL_ONE_GPU, "prompttuner", dry_run=True)
    assert tick.fenced == [] and [(d.job_id, d.gpus) for d in tick.decisions] == [(queued, 1)]
