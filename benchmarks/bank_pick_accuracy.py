"""How good a start each bank entry is for a held-out task, against what the scorer says.

    python benchmarks/bank_pick_accuracy.py --tasks bbc-business-vs-politics --samples 4,8

For every entry of the seed bank: its accuracy at step 0 on the task's eval split (the number a
job's target is checked against), and its `ptctl bank query --exhaustive` score with each
--samples count (rank-classification loss; lower = better). Rows are sorted by the first
score, so the top row is the exhaustive pick.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="bbc-business-vs-politics")
    parser.add_argument("--samples", default="4,8")
    parser.add_argument("--bank-dir", default=str(Path(__file__).resolve().parent.parent /
                                                  "ptctl" / "seed_bank"))
    args = parser.parse_args()

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bank_convergence import make_spec

    from ptctl.bank.query import run_query
    from ptctl.bank.store import Bank
    from ptctl.tuning.data import label_scores, load_task
    from ptctl.tuning.models import load_base_model

    model, tokenizer = load_base_model("smollm2-135m")
    snap = Bank.for_model(args.bank_dir, "smollm2-135m").snapshot()
    counts = [int(n) for n in args.samples.split(",")]
    for task in args.tasks.split(","):
        spec = make_spec(task, "bank", 0)
        data = load_task(spec.task, tokenizer)
        gold = torch.tensor([ex.label for ex in data.eval])
        with torch.inference_mode():
            scores = {n: run_query(snap, spec, model, tokenizer, exhaustive=True,
                                   samples=n).scored for n in counts}
            accuracy = {e.id: (label_scores(model, snap.prompt(e), data.eval,
                                            data.label_token_ids, tokenizer.pad_token_id)
                               .argmax(1) == gold).float().mean().item()
                        for e in snap.entries}
        print(f"\n{task} (eval split {len(data.eval)}, majority {data.majority_accuracy():.3f})\n")
        print("| entry | accuracy at step 0 | " + " | ".join(f"score, {n} samples"
                                                         for n in counts) + " |")
        print("|---|---|" + "---|" * len(counts))
        for entry in sorted(accuracy, key=scores[counts[0]].get):
            print(f"| {entry} | {accuracy[entry]:.3f} | "
                  + " | ".join(f"{scores[n][entry]:.3f}" for n in counts) + " |")


if __name__ == "__main__":
    main()
