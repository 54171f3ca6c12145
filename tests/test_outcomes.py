"""Honest outcomes on the local executor: bad data stops a submit before anything is written,
bad data met at run time fails the job at once, a job short of its target says so."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import LOCAL, run_cli, tiny_spec

ROWS = [json.dumps({"text": f"text number {i}", "label": "ab"[i % 2]}) for i in range(40)]


def _data(tmp_path: Path, lines: list[str]) -> Path:
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def _file_spec(tmp_path: Path, data: Path, **task) -> Path:
    return tiny_spec(tmp_path, name="filejob", task={
        "source": str(data), "label_words": {"a": "yes", "b": "no"}, "eval_samples": 8,
        "max_length": 32, **task})


# (case, data lines, task overrides, what the one error line must say)
BAD_DATA = [
    ("cut line", ROWS[:5] + ['{"text": "cut in ha'] + ROWS[5:], {}, "data.jsonl:6: not valid JSON"),
    ("no label", ROWS[:7] + ['{"text": "no label here"}'], {},
     "data.jsonl:8: missing or empty column 'label'"),
    ("word for no label", ROWS, {"label_words": {"a": "yes", "b": "no", "c": "maybe"}},
     "label_words.c: no row has the label 'c'"),
    ("label without word", ROWS + [json.dumps({"text": "odd", "label": "c"})], {},
     "data.jsonl:41: label 'c' has no word in label_words"),
    ("too few rows", ROWS[:10], {}, "leave 2 for training after eval_samples=8"),
]


@pytest.mark.parametrize("case,lines,task,expected", BAD_DATA, ids=[c[0] for c in BAD_DATA])
def test_bad_data_fails_submit_exit_2_and_nothing_written(tmp_path: Path, case, lines, task,
                                                          expected):
    spec = _file_spec(tmp_path, _data(tmp_path, lines), **task)
    # The real submit checks exactly as the dry run: two cases are enough to show it.
    runs = [["--dry-run"]] + ([[]] if case in ("cut line", "label without word") else [])
    for args in runs:
        result = run_cli("submit", str(spec), *args, env=LOCAL)
        assert result.returncode == 2, result.stderr
        lines_out = result.stderr.strip().splitlines()
        assert len(lines_out) == 1 and lines_out[0].startswith("ptctl: error: "), result.stderr
        assert expected in lines_out[0]
        assert not (tmp_path / "ptctl-home").exists()


def test_data_corrupted_after_submit_fails_the_job_after_one_attempt(tmp_path: Path):
    """The attempt waits (in its setup) until the test has cut a line of its data in half."""
    data = _data(tmp_path, ROWS)
    go = tmp_path / "go"
    spec = _file_spec(tmp_path, data)
    text = spec.read_text() + f"slurm:\n  setup: ['while [ ! -e {go} ]; do sleep 0.2; done']\n"
    spec.write_text(text)
    proc = subprocess.Popen([sys.executable, "-m", "ptctl", "submit", str(spec), "--wait"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **LOCAL})
    jobs = tmp_path / "ptctl-home" / "jobs"
    deadline = time.monotonic() + 120
    while not (jobs.is_dir() and any(p.name.startswith("filejob-") for p in jobs.iterdir())):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.2)
    data.write_text("\n".join(ROWS[:2] + ['{"text": "cut'] + ROWS[2:]) + "\n")
    go.touch()
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 1, err
    assert "failed: failed on bad input (not retried): " in out and "data.jsonl:3:" in out

    job_id = next(p.name for p in jobs.iterdir() if p.name.startswith("filejob-"))
    status = json.loads(run_cli("status", job_id, "--json", env=LOCAL).stdout)[0]
    assert status["phase"] == "failed" and status["failures"] == 1
    assert [a["state"] for a in status["attempts"]] == ["FAILED"]
    assert status["slurm_state"] == "FAILED"
    assert any("data.jsonl:3: not valid JSON" in e for e in status["errors"])
    assert "data.jsonl:3" in status["outcome"]


def test_run_exits_3_when_the_target_is_not_reached(tmp_path: Path):
    result = run_cli("run", str(tiny_spec(tmp_path)), "--dir", str(tmp_path / "run"), "--json",
                     timeout=600)
    assert result.returncode == 3, result.stderr
    data = json.loads(result.stdout)
    assert data["status"] == "finished" and data["reason"] == "max_steps"
    assert data["target_reached"] is False
    human = run_cli("run", str(tiny_spec(tmp_path)), "--dir", str(tmp_path / "run"), timeout=600)
    assert human.returncode == 3 and "target accuracy >= 0.99 not reached" in human.stdout
