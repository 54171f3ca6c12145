"""What a person sees of training: `ptctl run`'s lines, a local job's log, its launch line."""

from __future__ import annotations

import json
import re
import types
from pathlib import Path

from helpers import LOCAL, run_cli, tiny_spec
from ptctl.jobs.spec import load_spec
from ptctl.tuning import report as report_module
from ptctl.tuning.report import Report, clock

STEP = re.compile(r"^step \d+/12  loss \d+\.\d{3}  [\d.]+ s/step  elapsed \d+:\d\d  eta \d+:\d\d$")
EVAL = re.compile(r"^eval at step \d+/12  accuracy [\d.]+  loss [\d.]+  \([\d.]+ s\)$")
FINAL = re.compile(r"^stopped at step 12/12 \(max_steps\) in \d+:\d\d: accuracy [\d.]+, "
                   r"loss [\d.]+; target accuracy >= 0.99 not reached$")


def check_training_lines(text: str) -> None:
    lines = text.splitlines()
    assert any(STEP.match(line) for line in lines), text
    assert "evaluating (16 samples)" in lines, text
    assert sum(bool(EVAL.match(line)) for line in lines) == 4, text  # steps 0, 4, 8, 12
    assert FINAL.match([line for line in lines if line.startswith("stopped at step")][-1]), text
    assert "Warning" not in text and "%|" not in text, text  # no library warning, no tqdm bar


def test_step_lines_are_rate_bounded(tmp_path, capsys, monkeypatch):
    """A fast job's log gets a line every ~10 s and one before each evaluation, not per step."""
    now = [0.0]
    monkeypatch.setattr(report_module, "time", types.SimpleNamespace(monotonic=lambda: now[0]))
    spec = load_spec(tiny_spec(tmp_path, training={"max_steps": 1000, "eval_every": 100}))
    report = Report(spec, "lines", 1, "cpu")
    for step in range(1, 1001):
        now[0] += 0.5  # 2 steps a second: 500 s in all
        report.step(step, 0.5, 2.0)
    lines = capsys.readouterr().err.splitlines()
    assert 50 <= len(lines) <= 60  # 500 s / 10 s, plus the 10 steps before an evaluation
    assert lines[-1] == "step 1000/1000  loss 0.500  0.5 s/step  elapsed 8:20  eta 0:00"
    assert clock(3723) == "1:02:03" and clock(42) == "0:42"


def test_run_shows_steps_evaluations_and_outcome_without_warnings(tmp_path):
    spec = tiny_spec(tmp_path)
    proc = run_cli("run", str(spec), "--dir", str(tmp_path / "run"),
                   env={"OMP_NUM_THREADS": "1"})
    assert proc.returncode == 3, proc.stderr  # all 12 steps, short of its 0.99 target
    assert proc.stderr.startswith("ptctl: running tiny on 1 ")
    check_training_lines(proc.stderr)
    assert "Warning" not in proc.stdout
    quiet = run_cli("run", str(spec), "--dir", str(tmp_path / "run"), "--quiet",
                    env={"OMP_NUM_THREADS": "1"})
    assert quiet.returncode == 3 and quiet.stderr == "" and quiet.stdout == ""


def test_local_job_log_holds_training_lines(tmp_path):
    spec = tiny_spec(tmp_path)
    proc = run_cli("submit", str(spec), "--wait", env=LOCAL, timeout=600)
    assert proc.returncode == 3, proc.stderr  # all its steps, short of its 0.99 target
    job_id = proc.stdout.strip().split(":")[0]
    assert proc.stdout.strip().startswith(f"{job_id}: unmet: ")
    assert re.search(rf"^{job_id}: launched (1 rank \(CPU\)|on 1 GPU) as local process \d+;",
                     proc.stderr, re.MULTILINE), proc.stderr
    assert "Warning" not in proc.stderr
    logs = run_cli("logs", job_id, env=LOCAL)
    assert logs.returncode == 0, logs.stderr
    check_training_lines(logs.stdout)
    status = json.loads(run_cli("status", job_id, "--json", env=LOCAL).stdout)[0]
    folder = Path("ptctl-home") / "jobs" / job_id / "logs"
    assert sorted(p.name for p in folder.iterdir()) == [status["attempts"][0]["slurm_job_id"]]
