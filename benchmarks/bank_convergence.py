"""Steps to the target accuracy on tasks held out of the seed bank: bank vs random vs text init.

    python benchmarks/bank_convergence.py run --out /tmp/conv.jsonl
    python benchmarks/bank_convergence.py report /tmp/conv.jsonl [more.jsonl ...]

Each (task, init, seed) is a fresh `ptctl.tuning.launch.launch` run of SmolLM2-135M in its own
folder; 'bank' starts from `ptctl bank query`'s two-layer pick, 'bank-exhaustive' from the
exhaustive pick (the quality reference; when both pick the same prompt the run would be
identical, so it is recorded once and reused). Steps to target = the first evaluated step
whose accuracy meets the target; a run that never meets it is censored at max_steps (">N").
Sizes are small on purpose: these 2 CPU cores are shared (see benchmarks/RESULTS.md).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

HELD_OUT = {
    # New label-word variants of the packaged corpora; none is a source of the seed bank.
    "tweets-great-vs-awful": {
        "task": {"source": "tweet-sentiment", "label_map": {"negative": "awful",
                                                            "positive": "great"}},
        "init_text": "Is the feeling of this tweet great or awful?",
        "target": 0.75,
    },
    "bbc-tech-vs-sport": {
        "task": {"source": "bbc-topics", "label_map": {"tech": "technology",
                                                       "sport": "sports"}},
        "init_text": "Is this news article about technology or sports?",
        "target": 0.75,
    },
    "tweets-angry-vs-calm": {
        "task": {"source": "tweet-sentiment", "label_map": {"negative": "angry",
                                                            "neutral": "calm"}},
        "init_text": "Is the writer of this tweet angry or calm?",
        "target": 0.75,
    },
}
MAX_STEPS = 10
EVAL_EVERY = 2
EVAL_SAMPLES = 24


def make_spec(task: str, init: str, seed: int, max_steps: int):
    from ptctl.jobs.spec import spec_from_dict

    held = HELD_OUT[task]
    prompt = {"virtual_tokens": 8, "init": "bank" if init.startswith("bank") else init}
    if init == "text":
        prompt["init_text"] = held["init_text"]
    return spec_from_dict({
        "name": f"{task}-{init}-{seed}", "model": "smollm2-135m",
        "target": f"accuracy >= {held['target']}",
        "deadline": "24h", "prompt": prompt,
        "task": {**held["task"], "max_length": 24, "eval_samples": EVAL_SAMPLES,
                 "max_train_samples": 1000},
        "training": {"global_batch_size": 2, "micro_batch_size": 2, "learning_rate": 0.05,
                     "max_steps": max_steps, "eval_every": EVAL_EVERY,
                     "checkpoint_every": 1000, "seed": seed},
    }, origin=f"held-out {task}")


def steps_to(curve: list[list[float]], target: float) -> int | None:
    for step, accuracy, *_ in curve:
        if accuracy >= target:
            return int(step)
    return None


def run(args) -> None:
    from ptctl.bank.query import query
    from ptctl.config import load_config
    from ptctl.tuning.launch import launch

    cfg = load_config({"bank_dir": args.bank_dir} if args.bank_dir else None)
    inits = args.inits.split(",")
    picks: dict[tuple[str, str], tuple] = {}
    done: dict[tuple[str, str, int], dict] = {}
    out = Path(args.out)
    for task in args.tasks.split(","):
        for init in inits:
            for seed in range(args.seeds):
                spec = make_spec(task, init, seed, args.max_steps)
                tensor, prompt_id, pick = None, None, None
                if init.startswith("bank"):
                    key = (task, init)
                    if key not in picks:
                        result, snap = query(cfg.bank_dir, spec,
                                             exhaustive=(init == "bank-exhaustive"))
                        picks[key] = (snap.prompt(snap.entry(result.prompt_id)),
                                      result.prompt_id, result.as_dict())
                    tensor, prompt_id, pick = picks[key]
                    same = done.get((task, "bank", seed))
                    if init == "bank-exhaustive" and same and same["prompt_id"] == prompt_id:
                        # The same prompt, seed and data: the run would be identical.
                        record = dict(same, init=init, query=pick, reused_from="bank")
                        _write(out, record)
                        continue
                started = time.perf_counter()
                with tempfile.TemporaryDirectory(prefix="bankconv-") as folder:
                    outcome = launch(spec, Path(folder), 1, init_prompt=tensor,
                                     init_prompt_id=prompt_id)
                    meta = json.loads((Path(folder) / "result" / "ptctl_meta.json").read_text())
                record = {"task": task, "init": init, "seed": seed, "prompt_id": prompt_id,
                          "query": pick, "eval_curve": meta["eval_curve"],
                          "target": HELD_OUT[task]["target"],
                          "steps_to_target": steps_to(meta["eval_curve"],
                                                      HELD_OUT[task]["target"]),
                          "reason": outcome.reason, "max_steps": args.max_steps,
                          "seconds": round(time.perf_counter() - started, 1)}
                done[(task, init, seed)] = record
                _write(out, record)


def _write(out: Path, record: dict) -> None:
    with out.open("a") as f:
        f.write(json.dumps(record) + "\n")
    print(json.dumps({k: record.get(k) for k in ("task", "init", "seed", "prompt_id",
                                                 "steps_to_target", "seconds")}), flush=True)


def report(args) -> None:
    rows = [json.loads(line) for path in args.results
            for line in Path(path).read_text().splitlines() if line]
    latest = {(r["task"], r["init"], r["seed"]): r for r in rows}  # a rerun replaces a run
    groups: dict[tuple[str, str], list[dict]] = {}
    for key in sorted(latest):
        groups.setdefault(key[:2], []).append(latest[key])
    print("| task | target accuracy | init | prompt | steps to target per seed | median | "
          "accuracy at step 0 |")
    print("|---|---|---|---|---|---|---|")
    medians: dict[str, list[float]] = {}
    pooled: dict[str, list[float]] = {}
    for (task, init), rs in sorted(groups.items()):
        cap = rs[0]["max_steps"]
        steps = [r["steps_to_target"] if r["steps_to_target"] is not None else None for r in rs]
        shown = [str(s) if s is not None else f">{cap}" for s in steps]
        # Censored runs count as cap + EVAL_EVERY: the earliest step they could have reached it.
        med = statistics.median([s if s is not None else cap + EVAL_EVERY for s in steps])
        medians.setdefault(init, []).append(med)
        pooled.setdefault(init, []).extend(s if s is not None else cap + EVAL_EVERY
                                           for s in steps)
        start = statistics.mean(r["eval_curve"][0][1] for r in rs)
        print(f"| {task} | {HELD_OUT[task]['target']} | {init} | {rs[0]['prompt_id'] or '-'} | "
              f"{', '.join(shown)} | "
              f"{med:g}{'+' if med > cap else ''} | {start:.3f} |")
    print()
    for init, meds in sorted(medians.items()):
        print(f"- {init}: per-task medians {', '.join(f'{m:g}' for m in meds)}; median of all "
              f"{len(pooled[init])} runs = {statistics.median(pooled[init]):g}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--inits", default="bank,bank-exhaustive,random,text",
                   help="comma list of bank, bank-exhaustive, random, text")
    r.add_argument("--tasks", default=",".join(HELD_OUT))
    r.add_argument("--seeds", type=int, default=3)
    r.add_argument("--max-steps", type=int, default=MAX_STEPS)
    r.add_argument("--bank-dir", default=None)
    r.add_argument("--out", required=True)
    p = sub.add_parser("report")
    p.add_argument("results", nargs="+", help="JSONL files written by run")
    args = parser.parse_args()
    (run if args.cmd == "run" else report)(args)


if __name__ == "__main__":
    sys.exit(main())
