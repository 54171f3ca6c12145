"""Output conventions through the real CLI: piped tables are plain text, `--json` is one
document, usage errors are one line with exit 2, help is never cut, `sim compare` writes
readable figures and counts declined/late/unfinished jobs."""

from __future__ import annotations

import json
import os
import pty
import re
import struct
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest

from helpers import run_cli, tiny_spec
from ptctl.cli.output import fmt_duration, fmt_gpu_hours, fmt_ratio
from ptctl.errors import bounded
from ptctl.jobs.registry import Registry
from ptctl.jobs.spec import load_spec, resolved_spec_dict

BOX = set("┏┓┗┛━┃│─╭╮╰╯┡┩╇┳┻╋┼├┤┬┴═║")
LOCAL = {"PTCTL_PROFILE": "local", "COLUMNS": "80"}


@pytest.fixture
def queued_job(tmp_path: Path) -> str:
    """One registered, never launched job: enough for `ls` and `status` to print a row."""
    spec = load_spec(tiny_spec(tmp_path))
    state = Registry(tmp_path / "ptctl-home").create(
        spec.name, resolved_spec_dict(spec, datetime.now(timezone.utc)), profile="local",
        estimates={"predicted_steps": 20})
    return state.job_id


@pytest.fixture(scope="module")
def trace(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("trace")
    proc = run_cli("sim", "gen", "--out", "t.csv", "--jobs", "20", "--seed", "3", cwd=folder)
    assert proc.returncode == 0, proc.stderr
    return folder / "t.csv"


def _listings(trace: Path) -> list[list[str]]:
    return [["ls"], ["status", "--all"], ["config", "show"],
            ["sim", "compare", "--trace", str(trace), "--gpus", "16", "--policies",
             "prompttuner,edf", "--plots", "plots"]]


def test_piped_tables_are_plain_aligned_text(queued_job, trace):
    for args in _listings(trace):
        proc = run_cli(*args, env=LOCAL)
        assert proc.returncode == 0, (args, proc.stderr)
        assert not BOX & set(proc.stdout), (args, proc.stdout)
        assert "\x1b[" not in proc.stdout
    lines = run_cli("ls", env=LOCAL).stdout.splitlines()
    assert lines[0].split() == ["job", "name", "phase", "outcome", "gpus", "attempts",
                                "deadline", "created"]
    assert lines[1].startswith(queued_job)
    assert lines[1].index("queued") == lines[0].index("phase")  # columns line up


def test_json_is_exactly_one_document(queued_job, trace):
    for args in _listings(trace):
        proc = run_cli(*args, "--json", env=LOCAL)
        assert proc.returncode == 0, (args, proc.stderr)
        json.loads(proc.stdout)  # raises on a second document or on any human text
    assert json.loads(run_cli("ls", "--json", env=LOCAL).stdout)[0]["job_id"] == queued_job


def test_terminal_gets_a_rich_table_without_colour_under_no_color(queued_job):
    leader, follower = pty.openpty()
    env = {**os.environ, **LOCAL, "NO_COLOR": "1"}
    proc = subprocess.run([sys.executable, "-m", "ptctl", "ls"], stdout=follower,
                          stderr=subprocess.PIPE, env=env, timeout=120)
    os.close(follower)
    shown = os.read(leader, 65536).decode()
    os.close(leader)
    assert proc.returncode == 0, proc.stderr
    assert BOX & set(shown) and queued_job in shown
    assert not re.search(r"\x1b\[[0-9;]*3[0-9]", shown)  # no foreground colour codes


@pytest.mark.parametrize("args, where", [
    (["--bogus"], "ptctl --help"),
    (["bogus"], "ptctl --help"),
    (["submit"], "ptctl submit --help"),
    (["status", "--watch", "soon"], "ptctl status --help"),
    (["config", "show", "extra"], "ptctl config show --help"),
    (["sim", "compare", "--bogus"], "ptctl sim compare --help"),
    (["sim", "gen", "--out", "x.csv", "--jobs", "many"], "ptctl sim gen --help"),
    (["bank", "nosuch"], "ptctl bank --help"),
])
def test_usage_errors_are_one_line_exit_2(args, where):
    proc = run_cli(*args, env=LOCAL)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("ptctl: error: ")
    assert f"(see '{where}')" in proc.stderr
    assert not BOX & set(proc.stderr)


def test_help_shows_defaults_whole():
    for args in (["sim", "compare"], ["sim", "gen"], ["sim", "run"], ["submit"], ["status"],
                 ["bank", "build"], ["bank", "query"], []):
        proc = run_cli(*args, "--help", env=LOCAL)
        assert proc.returncode == 0, (args, proc.stderr)
        assert "…" not in proc.stdout, (args, proc.stdout)
    flat = " ".join(re.sub(r"[│╭╮╰╯─]", " ", run_cli("sim", "compare", "--help",
                                                     env=LOCAL).stdout).split())
    assert "(default: prompttuner, elasticflow, infless, edf, fifo)" in flat


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", path
    return struct.unpack(">II", data[16:24])


def test_compare_counts_outcomes_and_writes_figures(trace):
    folder = trace.parent
    proc = run_cli("sim", "compare", "--trace", str(trace), "--gpus", "8", "--policies",
                   "prompttuner,elasticflow,fifo", "--plots", "figs", "--json", cwd=folder)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    for row in rows:
        assert row["met_deadline"] + row["late"] + row["unfinished"] + row["declined"] == \
            row["jobs"] == 20
    for name in ("violations_cost.png", "deadline_cdf.png", "gpu_use.png"):
        path = folder / "figs" / name
        assert 15_000 < path.stat().st_size < 2_000_000, name
        width, height = _png_size(path)
        assert 800 <= width <= 2500 and 400 <= height <= 2500, (name, width, height)
    human = run_cli("sim", "compare", "--trace", str(trace), "--gpus", "8", "--policies",
                    "prompttuner,fifo", "--plots", "figs", cwd=folder).stdout.splitlines()
    header = human[0].split()
    assert header[:5] == ["policy", "met_deadline", "late", "unfinished", "declined"]
    first = dict(zip(header, human[1].split()))
    assert re.fullmatch(r"\d+\.\d", first["gpu_hours"])
    assert re.fullmatch(r"(\d+d)?(\d+h)?\d+[ms](\d\d[ms])?|-", first["mean_jct_s"])
    assert first["violations_vs_prompttuner"] in ("1.00", "-")


def test_people_read_rounded_values():
    assert [fmt_duration(s) for s in (12, 245, 3720, -190, 2 * 86400 + 3600)] == \
        ["12s", "4m05s", "1h02m", "-3m10s", "2d01h"]
    assert fmt_gpu_hours(7088.4827) == "7088.5"
    assert [fmt_ratio(v) for v in (0.082051, 1.0, 1.4412, 11.83, 0.0, 250.2)] == \
        ["0.0821", "1.00", "1.44", "11.8", "0", "250"]


def test_quoted_library_errors_are_bounded_not_cut_short():
    short = "Error while deserializing header: invalid JSON in header: EOF while parsing " \
            "an object at line 1 column 5912"
    assert bounded(short) == short
    long = "expected value at line 1 column 3 " * 40
    cut = bounded(long, 120)
    assert len(cut) <= 120 and cut.endswith("...") and "\n" not in cut
    assert long.startswith(cut[:-3])
    assert bounded("first line\n  second line") == "first line second line"
