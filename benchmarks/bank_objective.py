"""Which training objective lets a bank start keep its head start on tweet tasks?

    python benchmarks/bank_objective.py run --out obj.jsonl [--part 0 --parts 2] \
        --reuse lr_0.jsonl lr_1.jsonl
    python benchmarks/bank_objective.py report obj.jsonl --reuse lr_0.jsonl lr_1.jsonl

Why ask: training minimises the label word's cross-entropy over the whole vocabulary, while
evaluation (and the bank's scorer) ranks the label words against each other. A bank prompt
tuned on other label words gives the new words little mass, so the first steps learn to say
the words and can undo a start that already ranks them well. `training.objective:
label_words` trains on the rank-classification cross-entropy instead.

The 8 tweet validation tasks of bank_search_choice.py (neither sources nor held out), with
bank_start_lr.py's settings (lr 0.05, schedule over 600 steps, stopped after 100, seed 0):
bank starts (from the prompt bank_start_lr.py's lr-0.05 run started from) with label_words,
and random init with both objectives. Bank starts with the vocabulary objective are
bank_start_lr.py's lr-0.05 records (`--reuse`).

Metric: AUC = mean eval accuracy over steps 10..100. The rules, fixed before any run:
A (rerun the held-out benchmark with label_words): for bank starts, mean AUC
gain >= 0.02 with label_words higher on >= 5 of 8 tasks, and the bank-minus-random AUC gap
under label_words at least the gap under vocabulary. B (make label_words the default
objective): mean AUC gain >= 0.02 for both bank and random starts.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bank_convergence import steps_to  # noqa: E402
from bank_search_choice import VALIDATION  # noqa: E402
from bank_start_lr import CURRENT, STOP, make_spec, tune_stopped  # noqa: E402

TASKS = [t for t in VALIDATION if t.startswith("tweets-")]
OBJECTIVES = ("vocabulary", "label_words")
# (init, objective) pairs this script runs; bank x vocabulary comes from bank_start_lr.py.
RUNS = (("bank", "label_words"), ("random", "vocabulary"), ("random", "label_words"))


def reused(paths: list[str]) -> dict[str, dict]:
    """bank_start_lr.py's lr-0.05 records of the tweet tasks, as bank x vocabulary runs."""
    rows = [json.loads(line) for p in paths for line in Path(p).read_text().splitlines()
            if line.strip()]
    return {r["task"]: dict(r, init="bank", objective="vocabulary") for r in rows
            if r["lr"] == CURRENT and r["task"] in TASKS}


def run(args) -> None:
    from ptctl.bank.store import Bank

    out = Path(args.out)
    done = set()
    if out.is_file():
        done = {(r["task"], r["init"], r["objective"])
                for r in map(json.loads, out.read_text().splitlines())}
    base = reused(args.reuse)
    snap = Bank.for_model(args.bank_dir, "smollm2-135m").snapshot(features=False)
    for task in TASKS[args.part::args.parts]:
        first = base[task]
        for init, objective in RUNS:
            if (task, init, objective) in done:
                continue
            spec = make_spec(task, CURRENT, first["target"])
            spec = dataclasses.replace(
                spec, prompt=dataclasses.replace(spec.prompt, init=init),
                training=dataclasses.replace(spec.training, objective=objective))
            prompt_id = first["prompt_id"] if init == "bank" else None
            tensor = snap.prompt(snap.entry(prompt_id)) if prompt_id else None
            reason, curve, seconds = tune_stopped(spec, tensor, prompt_id)
            record = {"task": task, "init": init, "objective": objective, "prompt_id": prompt_id,
                      "majority": first["majority"], "target": first["target"],
                      "steps_to_target": steps_to(curve, first["target"]), "eval_curve": curve,
                      "reason": reason, "seconds": seconds, "loadavg": os.getloadavg()[0]}
            with out.open("a") as f:
                f.write(json.dumps(record) + "\n")
            print(task, init, objective, record["steps_to_target"], record["seconds"], flush=True)


def auc(record: dict) -> float:
    """Mean eval accuracy over steps 10..STOP (step 0, the start, left out)."""
    return statistics.mean(a for step, a, _ in record["eval_curve"] if 0 < step <= STOP)


def decide(runs: dict[tuple[str, str], dict[str, dict]]) -> dict:
    """The two rules on {(init, objective): {task: record}}; every cell needs all 8 tasks."""
    if any(set(runs.get((i, o), {})) != set(TASKS) for i in ("bank", "random")
           for o in OBJECTIVES):
        return {"complete": False}
    mean = {k: statistics.mean(auc(runs[k][t]) for t in TASKS) for k in runs}
    gain = {i: mean[(i, "label_words")] - mean[(i, "vocabulary")] for i in ("bank", "random")}
    higher = sum(auc(runs[("bank", "label_words")][t]) > auc(runs[("bank", "vocabulary")][t])
                 for t in TASKS)
    gap = {o: mean[("bank", o)] - mean[("random", o)] for o in OBJECTIVES}
    return {"complete": True, "mean_auc": {f"{i} {o}": v for (i, o), v in mean.items()},
            "gain": gain, "bank_higher_on": higher, "gap": gap,
            "rule_a": gain["bank"] >= 0.02 and higher >= 5 and gap["label_words"] >= gap["vocabulary"],
            "rule_b": gain["bank"] >= 0.02 and gain["random"] >= 0.02}


def report(args) -> None:
    rows = list(reused(args.reuse).values()) + [
        json.loads(line) for p in args.results for line in Path(p).read_text().splitlines()
        if line.strip()]
    runs: dict[tuple[str, str], dict[str, dict]] = {}
    for r in rows:
        runs.setdefault((r["init"], r["objective"]), {})[r["task"]] = r
    cells = [(i, o) for i in ("bank", "random") for o in OBJECTIVES]
    print("| task | bank start | target | start accuracy (bank / random) | "
          + " | ".join(f"{i} {o}: AUC, steps, acc@{STOP}" for i, o in cells) + " |")
    print("|---|---|---|---|" + "---|" * len(cells))
    for task in TASKS:
        out = []
        for key in cells:
            r = runs.get(key, {}).get(task)
            steps = None if r is None else r["steps_to_target"]
            out.append("-" if r is None else f"{auc(r):.3f}, "
                       f"{steps if steps is not None else f'>{STOP}'}, {r['eval_curve'][-1][1]:.2f}")
        bank = runs[("bank", "vocabulary")][task]
        rand = runs.get(("random", "vocabulary"), {}).get(task)
        start = f"{bank['eval_curve'][0][1]:.2f} / " + (
            f"{rand['eval_curve'][0][1]:.2f}" if rand else "-")
        print(f"| {task} | {bank['prompt_id']} | {bank['target']} | {start} | "
              + " | ".join(out) + " |")
    print()
    result = decide(runs)
    if not result["complete"]:
        print("- incomplete: the rules need all 8 tasks in every cell")
        return
    for name, value in result["mean_auc"].items():
        print(f"- mean AUC {name}: {value:.3f}")
    print(f"- label_words gain: bank {result['gain']['bank']:+.3f}, random "
          f"{result['gain']['random']:+.3f}; bank higher on {result['bank_higher_on']} of 8")
    print(f"- bank-minus-random gap: vocabulary {result['gap']['vocabulary']:+.3f}, "
          f"label_words {result['gap']['label_words']:+.3f}")
    print(f"- rule A (rerun held-out with label_words): {'yes' if result['rule_a'] else 'no'}; "
          f"rule B (label_words the default): {'yes' if result['rule_b'] else 'no'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="tune the tweet validation tasks")
    r.add_argument("--out", required=True)
    r.add_argument("--part", type=int, default=0)
    r.add_argument("--parts", type=int, default=1)
    r.add_argument("--bank-dir", default=str(Path(__file__).resolve().parent.parent /
                                             "ptctl" / "seed_bank"))
    p = sub.add_parser("report", help="the table and the rules' outcome")
    p.add_argument("results", nargs="+")
    for sp in (r, p):
        sp.add_argument("--reuse", nargs="+", required=True,
                        help="bank_start_lr.py's records (bank starts, vocabulary objective)")
    args = parser.parse_args()
    run(args) if args.command == "run" else report(args)


if __name__ == "__main__":
    main()
