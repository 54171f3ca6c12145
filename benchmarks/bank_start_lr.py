"""Should a job that starts from a Prompt Bank prompt use a smaller learning rate?

    python benchmarks/bank_start_lr.py run --out lr.jsonl [--part 0 --parts 2]
    python benchmarks/bank_start_lr.py report lr.jsonl [more.jsonl ...]

Why ask: Adam moves every coordinate by up to the learning rate a step. At the seed bank's lr
(0.05) ten steps can move a bank prompt (coordinate std about 0.38) by more than its own
spread, and a held-out bank start (tweets-great-vs-awful: 0.80 at step 0) is at the majority
class by step 20.

Each of the 18 validation tasks of bank_search_choice.py (neither sources nor held out) starts
from the committed bank's two-layer pick and is tuned with each learning rate in LRS, with the
held-out runs' settings (bank_convergence.SETTINGS: batch 4, 32 tokens; eval every 10 on 64
samples, max_steps 600 so the schedule matches theirs), seed 0, stopped after STOP steps.
Targets: the seed bank's rule (majority of the eval split + half the rest, to 0.05). Runs go
lr 0.05 and 0.015 for every task first, then 0.005; `run` appends and skips runs recorded.

The rule, fixed before any run: adopt the lower-lr variant with the lowest mean
censored steps to target (censored = STOP + 10) over the 18 tasks if that mean is at most 0.8x
lr 0.05's and it reaches the target on at least as many tasks; otherwise keep 0.05. Only a
variant with all 18 tasks takes part.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bank_convergence import (EVAL_SAMPLES, SETTINGS, steps_to,  # noqa: E402
                               target_from_majority)
from bank_search_choice import VALIDATION  # noqa: E402

LRS = (0.05, 0.015, 0.005)
CURRENT = 0.05
STOP = 100
EVAL_EVERY = 10
HORIZON = 600


def make_spec(task: str, learning_rate: float, target: float):
    from ptctl.jobs.spec import spec_from_dict

    source, label_map = VALIDATION[task]
    batch = SETTINGS["global_batch_size"]
    return spec_from_dict({
        "name": f"val-{task}", "model": "smollm2-135m", "target": f"accuracy >= {target}",
        "deadline": "24h", "prompt": {"virtual_tokens": 8, "init": "bank"},
        "task": {"source": source, "label_map": label_map, "max_length": SETTINGS["max_length"],
                 "eval_samples": EVAL_SAMPLES, "max_train_samples": 1000},
        "training": {"global_batch_size": batch, "micro_batch_size": batch,
                     "learning_rate": learning_rate, "max_steps": HORIZON,
                     "eval_every": EVAL_EVERY, "checkpoint_every": 1000, "seed": 0,
                     "objective": "vocabulary"},  # as these runs were made
    }, origin=f"validation task {task}")


def tune_stopped(spec, tensor, prompt_id: str | None) -> tuple[str, list, float]:
    """Tune `spec` for STOP steps in a temp folder, from `tensor` (None: the spec's own init):
    (how the run ended, its eval curve, seconds)."""
    from ptctl.tuning.launch import launch

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bank-val-") as folder:
        outcome = launch(spec, Path(folder), 1, init_prompt=tensor, init_prompt_id=prompt_id,
                         stop_after=STOP)
        curve = json.loads((Path(folder) / "progress.json").read_text())["eval_curve"]
    return outcome.reason, curve, round(time.perf_counter() - started, 1)


def run(args) -> None:
    from ptctl.bank.query import query
    from ptctl.tuning.data import load_task
    from ptctl.tuning.models import load_base_model

    out = Path(args.out)
    done = set()
    if out.is_file():
        done = {(r["task"], r["lr"]) for r in map(json.loads, out.read_text().splitlines())}
    _, tokenizer = load_base_model("smollm2-135m")
    tasks = list(VALIDATION)[args.part::args.parts]
    picks: dict[str, tuple] = {}
    for group in (LRS[:2], LRS[2:]):
        for task in tasks:
            for lr in group:
                if (task, lr) in done:
                    continue
                if task not in picks:  # one pick per task: every lr starts from it
                    probe = make_spec(task, CURRENT, 0.5)
                    majority = load_task(probe.task, tokenizer).majority_accuracy()
                    target = target_from_majority(majority)
                    result, snap = query(args.bank_dir, probe)
                    picks[task] = (majority, target, result.best_entry,
                                   snap.prompt(snap.entry(result.best_entry)))
                majority, target, prompt_id, tensor = picks[task]
                reason, curve, seconds = tune_stopped(make_spec(task, lr, target), tensor,
                                                      prompt_id)
                steps = steps_to(curve, target)
                record = {"task": task, "lr": lr, "prompt_id": prompt_id, "majority": majority,
                          "target": target, "steps_to_target": steps, "eval_curve": curve,
                          "reason": reason, "seconds": seconds, "loadavg": os.getloadavg()[0]}
                with out.open("a") as f:
                    f.write(json.dumps(record) + "\n")
                print(task, lr, prompt_id, target, steps, record["seconds"], flush=True)


def censored(record: dict) -> int:
    steps = record["steps_to_target"]
    return STOP + EVAL_EVERY if steps is None else int(steps)


def by_learning_rate(rows: list[dict]) -> tuple[dict[float, dict[str, dict]], list[str]]:
    """Records as {lr: {task: record}}, and the tasks the current lr has run."""
    by_lr: dict[float, dict[str, dict]] = {}
    for r in rows:
        by_lr.setdefault(r["lr"], {})[r["task"]] = r
    return by_lr, [t for t in VALIDATION if t in by_lr.get(CURRENT, {})]


def decide(rows: list[dict]) -> tuple[float | None, dict[float, dict], float | None]:
    """The rule: (the adopted lr or None to keep CURRENT, per-lr summary, the best complete
    lower lr or None)."""
    by_lr, tasks = by_learning_rate(rows)
    summary = {}
    for lr in LRS:
        have = [t for t in tasks if t in by_lr.get(lr, {})]
        if have:
            summary[lr] = {
                "tasks": len(have),
                "mean": statistics.mean(censored(by_lr[lr][t]) for t in have),
                "median": statistics.median(censored(by_lr[lr][t]) for t in have),
                "reached": sum(by_lr[lr][t]["steps_to_target"] is not None for t in have),
                "mean_of_current_on_these": statistics.mean(censored(by_lr[CURRENT][t])
                                                            for t in have)}
    current = summary.get(CURRENT)
    complete = [lr for lr in LRS if lr != CURRENT and current
                and summary.get(lr, {}).get("tasks") == current["tasks"] == len(VALIDATION)]
    best = min(complete, key=lambda lr: summary[lr]["mean"], default=None)
    if (best is not None and summary[best]["mean"] <= 0.8 * current["mean"]
            and summary[best]["reached"] >= current["reached"]):
        return best, summary, best
    return None, summary, best


def report(args) -> None:
    rows = [json.loads(line) for path in args.results
            for line in Path(path).read_text().splitlines() if line.strip()]
    by_lr, tasks = by_learning_rate(rows)
    print("| task | start | target | start accuracy | "
          + " | ".join(f"lr {lr:g}: steps (accuracy at the last eval)" for lr in LRS) + " |")
    print("|---|---|---|---|" + "---|" * len(LRS))
    for task in tasks:
        first = by_lr[CURRENT][task]
        cells = []
        for lr in LRS:
            r = by_lr.get(lr, {}).get(task)
            if r is None:
                cells.append("-")
                continue
            steps = r["steps_to_target"]
            other = r["prompt_id"] != first["prompt_id"]
            cells.append(f"{steps if steps is not None else f'>{STOP}'} "
                         f"({r['eval_curve'][-1][1]:.2f})"
                         + (f" from {r['prompt_id']}" if other else ""))
        print(f"| {task} | {first['prompt_id']} | {first['target']} | "
              f"{first['eval_curve'][0][1]:.2f} | " + " | ".join(cells) + " |")
    print()
    adopted, summary, best = decide(rows)
    for lr, s in summary.items():
        print(f"- lr {lr:g}: {s['tasks']} tasks, mean {s['mean']:.2f} (lr {CURRENT:g} on the same "
              f"tasks {s['mean_of_current_on_these']:.2f}), median {s['median']:g}, "
              f"target reached on {s['reached']}")
    print(f"- rule: {f'adopt lr {adopted:g}' if adopted else f'keep lr {CURRENT:g}'}"
          + (f" (best complete variant lr {best:g}: {summary[best]['mean']:.2f} vs "
             f"{summary[CURRENT]['mean']:.2f}, ratio "
             f"{summary[best]['mean'] / summary[CURRENT]['mean']:.3f})"
             if best is not None else " (no complete lower-lr variant)"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="tune the validation tasks from their bank picks")
    r.add_argument("--out", required=True)
    r.add_argument("--part", type=int, default=0, help="this process's share of the tasks")
    r.add_argument("--parts", type=int, default=1, help="processes sharing the tasks")
    r.add_argument("--bank-dir", default=str(Path(__file__).resolve().parent.parent /
                                             "ptctl" / "seed_bank"))
    p = sub.add_parser("report", help="the table and the rule's outcome")
    p.add_argument("results", nargs="+")
    args = parser.parse_args()
    run(args) if args.command == "run" else report(args)


if __name__ == "__main__":
    main()
