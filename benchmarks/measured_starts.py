"""Build the measured starts `ptctl sim gen` resamples (ptctl/sim/measured_starts.json) from the
committed held-out records: per task, one entry per seed with the step ratio of the start the
Prompt Bank query picked over a random start, and its predicted steps over its measured ones.

    python benchmarks/measured_starts.py [--records benchmarks/records]
                                         [--out ptctl/sim/measured_starts.json]

Sources, the first present wins:
  1. `heldout_prediction/runs.jsonl`: one row per (task, seed) with the start the query picked
     (bank, random or text), its `predicted_steps` and `measured_steps` (a row marked
     `"recorded": false` has no run of its start and is left out);
  2. `heldout_convergence/*.jsonl`: the `bank` rows (`query.predicted_steps` vs
     `steps_to_target`); files are read in name order and a later row of the same task, init
     and seed replaces an earlier one.
Random-start steps always come from heldout_convergence's `random` rows of the same task and
seed; a seed without one is left out.

It also prints the RMS of measured/predicted - 1 over the runs, the relative spread the planner
gives a prediction (`ptctl.planner.convergence.PREDICTION_RELATIVE_SD`).

Two counting rules, both stated in the output's `rules`:
  - a run that never reaches its target counts max_steps + eval_every steps (as
    `bank_convergence.py report`), so a ratio with a censored run is a bound;
  - steps are counted at the evaluation resolution, predicted and measured alike: a start that
    meets the target at step 0 was measured to need at most one evaluation interval, and a
    prediction under one interval means the same; both count as one interval.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_EVERY = 10


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def counted(steps: int | None, max_steps: int, every: int) -> int:
    """Steps to target, a censored run counted as max_steps + eval_every."""
    return int(steps) if steps is not None else int(max_steps) + every


def latest_rows(folder: Path) -> dict[tuple[str, str, int], dict]:
    """(task, init, seed) -> the last row of heldout_convergence, files in name order."""
    rows: dict[tuple[str, str, int], dict] = {}
    for path in sorted(folder.glob("*.jsonl")):
        for row in read_jsonl(path):
            rows[(row["task"], row["init"], int(row["seed"]))] = row
    return rows


def every_of(row: dict) -> int:
    return int((row.get("settings") or {}).get("eval_every", DEFAULT_EVERY))


def picked_starts(records: Path, convergence: dict) -> tuple[str, list[dict]]:
    """The source named, and per (task, seed) the picked start's predicted and measured steps."""
    runs_file = records / "heldout_prediction" / "runs.jsonl"
    if runs_file.is_file():
        starts = []
        for row in read_jsonl(runs_file):
            if row.get("recorded") is False:  # no run of the picked start: nothing measured
                continue
            random = convergence.get((row["task"], "random", int(row["seed"])))
            every = every_of(random) if random else DEFAULT_EVERY
            starts.append({"task": row["task"], "seed": int(row["seed"]),
                           "init": row["init_picked"], "predicted": row["predicted_steps"],
                           "measured": counted(row["measured_steps"], row["max_steps"], every),
                           "every": every, "sd_log": row.get("predicted_steps_sd_log")})
        return "benchmarks/records/heldout_prediction/runs.jsonl", starts
    starts = []
    for (task, init, seed), row in sorted(convergence.items()):
        if init != "bank" or not row.get("query"):
            continue
        every = every_of(row)
        starts.append({"task": task, "seed": seed, "init": "bank",
                       "predicted": row["query"]["predicted_steps"],
                       "measured": counted(row["steps_to_target"], row["max_steps"], every),
                       "every": every})
    return "benchmarks/records/heldout_convergence (bank rows)", starts


def build(records: Path) -> dict:
    convergence = latest_rows(records / "heldout_convergence")
    source, starts = picked_starts(records, convergence)
    tasks: dict[str, list[dict]] = {}
    for start in starts:
        random = convergence.get((start["task"], "random", start["seed"]))
        if random is None:
            continue
        random_steps = counted(random["steps_to_target"], random["max_steps"], every_of(random))
        sd_log = {"predicted_sd_log": start["sd_log"]} if start.get("sd_log") is not None else {}
        tasks.setdefault(start["task"], []).append({
            "seed": start["seed"], "init": start["init"], **sd_log,
            "start_over_random": round(max(start["measured"], start["every"])
                                       / max(random_steps, start["every"]), 4),
            "predicted_over_measured": round(max(start["predicted"], start["every"])
                                             / max(start["measured"], start["every"]), 4)})
    if not tasks:
        raise SystemExit(f"{records}: no (task, seed) with both a picked start and a random run")
    errors = [1 / run["predicted_over_measured"] - 1 for runs in tasks.values() for run in runs]
    return {
        "source": source,
        "rules": ["a run that never reaches its target counts max_steps + eval_every steps",
                  "steps count at least one evaluation interval (the measurement's resolution)"],
        # What ptctl.planner.convergence.PREDICTION_RELATIVE_SD should be.
        "prediction_rms_relative_error": round(math.sqrt(sum(e * e for e in errors) / len(errors)), 2),
        "tasks": {task: sorted(runs, key=lambda r: r["seed"]) for task, runs in sorted(tasks.items())},
    }


def to_json(table: dict) -> str:
    """The table as JSON, one run per line (a diff shows which run changed)."""
    tasks = ",\n".join(f"  {json.dumps(task)}: [\n" + ",\n".join(f"   {json.dumps(run)}" for run in runs)
                       + "\n  ]" for task, runs in table["tasks"].items())
    return (f'{{\n "source": {json.dumps(table["source"])},\n "rules": {json.dumps(table["rules"])},'
            f'\n "prediction_rms_relative_error": {table["prediction_rms_relative_error"]},'
            f'\n "tasks": {{\n{tasks}\n }}\n}}\n')


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=Path, default=ROOT / "benchmarks" / "records")
    parser.add_argument("--out", type=Path, default=ROOT / "ptctl" / "sim" / "measured_starts.json")
    args = parser.parse_args()
    table = build(args.records)
    args.out.write_text(to_json(table))
    for task, runs in table["tasks"].items():
        print(f"{task}: start/random {[r['start_over_random'] for r in runs]}, "
              f"predicted/measured {[r['predicted_over_measured'] for r in runs]}")
    print(f"RMS of measured/predicted - 1: {table['prediction_rms_relative_error']}")
    print(f"source: {table['source']}; written to {args.out.name}")


if __name__ == "__main__":
    main()
