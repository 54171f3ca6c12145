"""One unreadable job record blocks nothing: it is named once and skipped, every other job is
served by ls, status, rebalance, submit and doctor."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pytest

from helpers import LOCAL, run_cli, tiny_spec
from ptctl.jobs.registry import Registry
from ptctl.jobs.spec import load_spec, resolved_spec_dict
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
    "progress not UTF-8": ("progress.json", lambda p: p.progress.write_bytes(b"\xff{")),
    "progress wrong type": ("progress.json", lambda p: p.progress.write_text('{"step": "x"}')),
}


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
