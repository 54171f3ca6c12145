"""The bank's predicted steps against the steps measured, on the held-out tasks.

    python benchmarks/bank_prediction.py run --out benchmarks/records/heldout_prediction/runs.jsonl
    python benchmarks/bank_prediction.py report benchmarks/records/heldout_prediction/runs.jsonl
    python benchmarks/bank_prediction.py run --tasks T1,T2 --seeds 1 --out picks.jsonl

`run` queries the seed bank as `ptctl submit` does (SmolLM2-135M, two-layer search, the job's
random start and its text start scored against the entries) for every (task, seed) that
`bank_convergence.py` recorded, with the settings of those records (600 steps, evaluated every
10, label_words). No training: the measured steps are those of the recorded run that started
from the same prompt (a bank run from the same entry and seed, or the random or text run of
that seed). A pick with no recorded run is written with `measured_steps` null and
`recorded: false`, and `report` leaves it out. With `--tasks`, `run` queries those held-out
tasks instead (e.g. to see which starts need a `bank_convergence.py run`).

Steps are measured at evaluations, every 10 steps, so predicted and measured steps are compared
at that resolution: both count at least 10 (a start that already meets the target at step 0
costs its first evaluation window). A run that never reached the target ran its max_steps, and
that is what the planner must plan for: the comparison counts it as max_steps.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bank_convergence import HELD_OUT, make_spec  # noqa: E402

RECORDS = Path(__file__).resolve().parent / "records" / "heldout_convergence"
SETTINGS = {"max_steps": 600, "eval_every": 10, "eval_samples": 64, "objective": "label_words"}


def recorded_runs(folder: Path) -> list[dict]:
    """Every run record with SETTINGS; a later record of the same run replaces an earlier."""
    runs: dict[tuple, dict] = {}
    for path in sorted(folder.glob("*.jsonl")):
        for line in path.read_text().splitlines():
            if not line.strip():
                continue
            r = json.loads(line)
            s = r.get("settings") or {}
            if all(s.get(k) == v for k, v in SETTINGS.items() if k != "eval_samples"):
                init = "bank" if r["init"].startswith("bank") else r["init"]
                runs[(r["task"], init, r["seed"], r.get("prompt_id"))] = r
    return list(runs.values())


def measured(runs: list[dict], task: str, seed: int, init: str, prompt_id: str | None
             ) -> dict | None:
    for r in runs:
        kind = "bank" if r["init"].startswith("bank") else r["init"]
        if (r["task"], r["seed"], kind) == (task, seed, init) and (
                init != "bank" or r["prompt_id"] == prompt_id):
            return r
    return None


def run(args) -> None:
    import dataclasses

    import torch

    from ptctl.bank.query import run_query
    from ptctl.bank.store import Bank
    from ptctl.config import load_config
    from ptctl.tuning.models import load_base_model, scoring_dtype

    cfg = load_config({"bank_dir": args.bank_dir} if args.bank_dir else None)
    runs = recorded_runs(Path(args.records))
    pairs = sorted({(r["task"], r["seed"]) for r in runs if not args.tasks}
                   | {(t, seed) for t in (args.tasks.split(",") if args.tasks else [])
                      for seed in range(args.seeds)})
    snap = Bank.for_model(cfg.bank_dir, "smollm2-135m").snapshot()
    dtype = scoring_dtype("auto")
    model, tokenizer = load_base_model("smollm2-135m", dtype=dtype)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w") as f:
        for task, seed in pairs:
            spec = make_spec(task, "bank", seed, SETTINGS["max_steps"], SETTINGS["eval_every"],
                             SETTINGS["eval_samples"], SETTINGS["objective"])
            spec = dataclasses.replace(spec, prompt=dataclasses.replace(
                spec.prompt, init_text=HELD_OUT[task]["init_text"]))
            started = time.perf_counter()
            with torch.inference_mode():
                q = run_query(snap, spec, model, tokenizer)
            record = measured(runs, task, seed, q.init_picked, q.prompt_id)
            random_run = measured(runs, task, seed, "random", None)
            row = {"task": task, "seed": seed, "init_picked": q.init_picked,
                   "prompt_id": q.prompt_id, "predicted_steps": q.predicted_steps,
                   "interval_lo": q.interval_lo, "interval_hi": q.interval_hi,
                   "measured_steps": record["steps_to_target"] if record else None,
                   "max_steps": SETTINGS["max_steps"], "recorded": record is not None,
                   "random_measured_steps": random_run["steps_to_target"] if random_run
                   else None,
                   "target": HELD_OUT[task]["target"],
                   "predicted_steps_sd_log": q.predicted_steps_sd_log,
                   "interval_coverage": q.interval_coverage,
                   "query": q.as_dict(), "query_seconds": round(time.perf_counter() - started, 2)}
            f.write(json.dumps(row) + "\n")
            f.flush()
            print(json.dumps({k: row[k] for k in ("task", "seed", "init_picked", "prompt_id",
                                                  "predicted_steps", "interval_lo",
                                                  "interval_hi", "measured_steps")}), flush=True)


def planned_steps(steps: int | None, max_steps: int, every: int = SETTINGS["eval_every"]) -> int:
    """The steps a run costs at the measurement's resolution: at least one evaluation window,
    max_steps when the target was never reached."""
    return max(every, max_steps if steps is None else steps)


def censored(steps: int | None, max_steps: int, every: int = SETTINGS["eval_every"]) -> int:
    """Steps to target as bank_convergence.py reports them: a run that never reached the
    target counts max_steps + eval_every (so a median with one is a lower bound)."""
    return max_steps + every if steps is None else steps


def accuracy(rows: list[dict], key: str = "predicted_steps") -> dict:
    """Median |log(predicted / measured)|, the share within 2x and the share inside the
    interval, at the measurement's resolution (`planned_steps`)."""
    logs, within2, inside = [], 0, 0
    for r in rows:
        got = planned_steps(r["measured_steps"], r["max_steps"])
        want = planned_steps(r[key], r["max_steps"])
        logs.append(abs(math.log(want / got)))
        within2 += want <= 2 * got and got <= 2 * want
        inside += r["interval_lo"] <= got <= max(r["interval_hi"], SETTINGS["eval_every"])
    n = len(rows)
    return {"runs": n, "median_abs_log_ratio": statistics.median(logs) if logs else None,
            "within_2x": within2 / n if n else None, "inside_interval": inside / n if n else None}


def previous_rule(row: dict, bank_dir: str | None) -> int:
    """What the bank predicted before this rule, for the same query: the median steps to
    target of the 3 best-scored entries' own jobs (the steps run when they never reached it)."""
    from ptctl.bank.store import Bank
    from ptctl.config import load_config

    cfg = load_config({"bank_dir": bank_dir} if bank_dir else None)
    snap = Bank.for_model(cfg.bank_dir, "smollm2-135m").snapshot(features=False)
    scored = row["query"]["scored"]
    steps = [e.steps_to_target if e.steps_to_target is not None else e.steps
             for e in map(snap.entry, sorted(scored, key=scored.get)[:3])]
    return int(min(row["max_steps"], max(1, round(statistics.median(steps)))))


def summarise(rows: list[dict], bank_dir: str | None = None) -> dict:
    rows = [r for r in rows if r["recorded"]]
    tasks = {}
    for task in sorted({r["task"] for r in rows}):
        mine = [r for r in rows if r["task"] == task]
        picked = statistics.median(censored(r["measured_steps"], r["max_steps"]) for r in mine)
        rand = statistics.median(censored(r["random_measured_steps"], r["max_steps"])
                                 for r in mine)
        tasks[task] = {"picks": [f"{r['seed']}:{r['prompt_id'] or r['init_picked']}"
                                 for r in mine],
                       "picked_median": picked, "random_median": rand,
                       "ratio": picked / rand if rand else (1.0 if picked == 0 else math.inf),
                       "predicted": [r["predicted_steps"] for r in mine],
                       "interval": [[r["interval_lo"], r["interval_hi"]] for r in mine],
                       "measured": [r["measured_steps"] for r in mine]}
    before = [dict(r, previous_steps=previous_rule(r, bank_dir)) for r in rows]
    return {**accuracy(rows),
            "by_corpus": {c: accuracy([r for r in rows if r["task"].startswith(c)])
                          for c in ("bbc-", "tweets-")},
            "previous_rule": {k: v for k, v in accuracy(before, "previous_steps").items()
                              if k != "inside_interval"},
            "worst_task_ratio": max(t["ratio"] for t in tasks.values()) if tasks else None,
            "tasks": tasks}


def report(args) -> None:
    rows = [json.loads(line) for line in Path(args.runs).read_text().splitlines()
            if line.strip()]
    summary = summarise(rows, args.bank_dir)
    missing = [f"{r['task']} seed {r['seed']} ({r['init_picked']})" for r in rows
               if not r["recorded"]]
    if args.json:
        print(json.dumps(dict(summary, unrecorded=missing), indent=1))
        return
    print("| task | picks (seed:start) | predicted (interval) | measured | picked median | "
          "random median | ratio |")
    print("|---|---|---|---|---|---|---|")
    for task, t in summary["tasks"].items():
        shown = ", ".join(f"{p} ({lo}-{hi})" for p, (lo, hi) in zip(t["predicted"],
                                                                   t["interval"]))
        got = ", ".join(">600" if m is None else str(m) for m in t["measured"])
        print(f"| {task} | {', '.join(t['picks'])} | {shown} | {got} | "
              f"{t['picked_median']:g} | {t['random_median']:g} | {t['ratio']:.2f} |")
    print(f"\nPer-task medians count a censored run as {SETTINGS['max_steps']} + "
          f"{SETTINGS['eval_every']}.\n{summary['runs']} runs: median |log(predicted/measured)| "
          f"{summary['median_abs_log_ratio']:.3f}; within 2x {summary['within_2x']:.0%}; "
          f"inside the interval {summary['inside_interval']:.0%}; worst per-task picked/random "
          f"{summary['worst_task_ratio']:.2f}")
    for corpus, a in summary["by_corpus"].items():
        print(f"- {corpus}* ({a['runs']} runs): median |log ratio| "
              f"{a['median_abs_log_ratio']:.3f}, within 2x {a['within_2x']:.0%}, inside the "
              f"interval {a['inside_interval']:.0%}")
    prev = summary["previous_rule"]
    print(f"- the previous rule (median steps of the 3 best-scored entries' own jobs) on the "
          f"same queries: median |log ratio| {prev['median_abs_log_ratio']:.3f}, within 2x "
          f"{prev['within_2x']:.0%}")
    if missing:
        print(f"unmeasured (no recorded run from the pick): {', '.join(missing)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="query the bank for every recorded (task, seed)")
    r.add_argument("--out", required=True)
    r.add_argument("--records", default=str(RECORDS))
    r.add_argument("--bank-dir", default=None, help="default: the bank_dir config key")
    r.add_argument("--tasks", default=None, help="query these held-out tasks (seeds 0 to "
                   "--seeds - 1) instead of every recorded (task, seed)")
    r.add_argument("--seeds", type=int, default=3)
    p = sub.add_parser("report", help="prediction against outcome")
    p.add_argument("runs")
    p.add_argument("--json", action="store_true")
    p.add_argument("--bank-dir", default=None, help="the bank queried (for the previous rule)")
    args = parser.parse_args()
    run(args) if args.cmd == "run" else report(args)


if __name__ == "__main__":
    main()
