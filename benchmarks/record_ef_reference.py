"""Record one run of ElasticFlow's own simulator as reference data for ptctl's `elasticflow`.

Usage: python benchmarks/record_ef_reference.py LOG_PATH TRACE SPEC

LOG_PATH is the simulator's `--log_path` folder (`final_result.csv`, `job.csv`,
`scheduling_events.csv`) with its printed output saved there as `console.log`; TRACE is the
trace's name in data/elasticflow/ (its file must be the one the simulator read), SPEC the
cluster spec's. Writes data/elasticflow/reference/<TRACE>_<SPEC>/summary.json and admitted.csv
(see the README there). Without `scheduling_events.csv` the GPU-hours are left null; without
`console.log`, which jobs were late (`met`) is left empty: the counts still come from the ratio.

A run stopped before its end (no `final_result.csv`) is recorded up to its last complete round
(`cut_at_s`): the decisions on every job that had arrived by then, the jobs that had left, and
the GPU-hours so far. Up to that round the simulator has seen only those arrivals, so the record
is what the whole run would say about them.
"""

from __future__ import annotations

import argparse
import ast
import csv
import json
import re
from pathlib import Path

DATA = Path(__file__).resolve().parents[1] / "data" / "elasticflow"


def late_jobs(console: Path) -> dict[str, float]:
    """job id -> real end, for jobs that ended after their deadline: the simulator prints the
    job's record on the line after its `ends at` line."""
    late, previous = {}, ""
    with open(console, errors="replace") as f:
        for line in f:
            if previous.startswith("ends at") and line.startswith("{") and "'job_id'" in line:
                job_id = line.split("'job_id': ", 1)[1].split(",", 1)[0]
                real_end = line.split("'real_end_time': ", 1)[1].split(",", 1)[0]
                late[ast.literal_eval(job_id)] = float(real_end)
            previous = line
    return late


def gpu_seconds(scheduling_events: Path, until_s: float | None = None) -> tuple[float, int]:
    """GPU-seconds and rounds (up to the round at `until_s`): a row per round (time, a column
    per GPU naming the job placed on it, then the round's efficiency); a round's GPUs are held
    until the next round."""
    with open(scheduling_events, newline="") as f:
        rows = [r for r in list(csv.reader(f))[1:] if until_s is None or float(r[0]) <= until_s]
    held = sum(sum(cell != "" for cell in row[1:-1]) * (float(nxt[0]) - float(row[0]))
               for row, nxt in zip(rows, rows[1:]))
    return held, len(rows)


ROUND = re.compile(r"^(\d+)-\d+, \d+, \d+ ?$")  # the line that opens each round's output
DECLINED = re.compile(r"^----job\[(\d+)\]'s DDL request cannot be satisfied\. Declined\.$")


def cut_round(console: Path, scheduling_events: Path) -> float:
    """The last round of a stopped run whose output is complete everywhere: its console block
    is followed by another (stdout is buffered), and its row is in `scheduling_events.csv`."""
    with open(console, errors="replace") as f:
        opened = [float(m.group(1)) for line in f if (m := ROUND.match(line))]
    with open(scheduling_events, newline="") as f:
        rows = list(csv.reader(f))[1:]
    if len(opened) < 2 or not rows:
        raise ValueError(f"{console}: fewer than two rounds: nothing to record")
    return min(opened[-2], float(rows[-1][0]))


def declined_indexes(console: Path) -> set[int]:
    """Trace rows (0-based) the simulator declined at arrival."""
    with open(console, errors="replace") as f:
        return {int(m.group(1)) for line in f if (m := DECLINED.match(line.rstrip("\n")))}


def whole(value: str) -> int:
    number = float(value)
    if number != int(number):
        raise ValueError(f"{value} is not a whole number of seconds")
    return int(number)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("log_path", type=Path)
    parser.add_argument("trace")
    parser.add_argument("spec")
    args = parser.parse_args()
    out = args.log_path
    if not (out / "final_result.csv").exists():
        record_cut(out, args.trace, args.spec)
        return

    with open(out / "final_result.csv", newline="") as f:
        (final,) = list(csv.DictReader(f))
    ratio = float(final["ddl_satis_ratio"])
    with open(DATA / f"{args.trace}.csv", newline="") as f:
        jobs = sum(1 for _ in csv.DictReader(f))
    with open(out / "job.csv", newline="") as f:
        admitted = list(csv.DictReader(f))
    met = round(ratio * jobs)
    if abs(met / jobs - ratio) > 1e-12:
        raise ValueError(f"ratio {ratio} is not a whole number of the {jobs} jobs")
    late = late_jobs(out / "console.log") if (out / "console.log").exists() else None
    if late is not None and len(admitted) - len(late) != met:
        raise ValueError(f"{len(admitted)} admitted, {len(late)} late: not {met} met")
    events = out / "scheduling_events.csv"
    held, rounds = gpu_seconds(events) if events.exists() else (None, None)

    dest = DATA / "reference" / f"{args.trace}_{args.spec}"
    dest.mkdir(parents=True, exist_ok=True)
    with open(dest / "admitted.csv", "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["job_id", "left_s", "end_s", "deadline_s", "met"])
        for row in sorted(admitted, key=lambda r: (float(r["time"]), r["job_id"])):
            w.writerow([row["job_id"], whole(row["time"]), whole(row["end_time"]), whole(row["ddl"]),
                        "" if late is None else int(row["job_id"] not in late)])
    summary = {
        "trace": f"{args.trace}.csv", "cluster_spec": f"{args.spec}.csv",
        "jobs": jobs, "admitted": len(admitted), "declined": jobs - len(admitted),
        "met_deadline": met, "late": len(admitted) - met, "deadline_satisfactory_ratio": ratio,
        "gpu_hours": None if held is None else round(held / 3600, 6), "rounds": rounds,
    }
    (dest / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps(summary))


def record_cut(out: Path, trace: str, spec: str) -> None:
    """Record a stopped run up to its last complete round (see the module's docstring)."""
    until = cut_round(out / "console.log", out / "scheduling_events.csv")
    with open(DATA / f"{trace}.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    arrived = [r for r in rows if float(r["submission_time"]) <= until]
    if arrived != rows[:len(arrived)]:
        raise ValueError(f"{trace}.csv: rows are not in arrival order")
    declined = declined_indexes(out / "console.log")
    if declined and max(declined) >= len(arrived):
        raise ValueError(f"job[{max(declined)}] declined after the cut at {until:.0f} s")
    with open(out / "job.csv", newline="") as f:
        left = {r["job_id"]: r for r in csv.DictReader(f) if float(r["time"]) <= until}
    admitted = [r["job_id"] for i, r in enumerate(arrived) if i not in declined]
    if not set(left) <= set(admitted):
        raise ValueError("job.csv has jobs that were not admitted before the cut")
    late = late_jobs(out / "console.log")
    held, rounds = gpu_seconds(out / "scheduling_events.csv", until)

    dest = DATA / "reference" / f"{trace}_{spec}"
    dest.mkdir(parents=True, exist_ok=True)
    with open(dest / "admitted.csv", "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["job_id", "left_s", "end_s", "deadline_s", "met"])
        ended = sorted(left.values(), key=lambda r: (float(r["time"]), r["job_id"]))
        for row in ended:
            w.writerow([row["job_id"], whole(row["time"]), whole(row["end_time"]),
                        whole(row["ddl"]), int(row["job_id"] not in late)])
        deadlines = {r["job_id"]: r["deadline"] for r in arrived}
        for job_id in admitted:  # still running at the cut: no outcome yet
            if job_id not in left:
                w.writerow([job_id, "", "", whole(deadlines[job_id]), ""])
    late_left = sum(j in late for j in left)
    summary = {
        "trace": f"{trace}.csv", "cluster_spec": f"{spec}.csv", "jobs": len(rows),
        "cut_at_s": whole(str(until)), "arrived": len(arrived), "admitted": len(admitted),
        "declined": len(arrived) - len(admitted), "left": len(left),
        "met_deadline": len(left) - late_left, "late": late_left,
        "deadline_satisfactory_ratio": None,
        "gpu_hours": round(held / 3600, 6), "rounds": rounds,
    }
    (dest / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
