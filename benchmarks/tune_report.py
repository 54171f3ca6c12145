"""Turn a finished job folder into a markdown section and a loss/accuracy figure.

    python benchmarks/tune_report.py JOB_DIR --wall-s SECONDS --png benchmarks/tuning_curve.png

Reads JOB_DIR/progress.json and JOB_DIR/result/ptctl_meta.json; prints markdown on stdout.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("job_dir", type=Path)
    parser.add_argument("--wall-s", type=float, required=True)
    parser.add_argument("--png", type=Path)
    parser.add_argument("--majority", type=float, help="majority-class accuracy on eval")
    args = parser.parse_args()
    progress = json.loads((args.job_dir / "progress.json").read_text())
    meta = json.loads((args.job_dir / "result" / "ptctl_meta.json").read_text())
    losses, evals = meta["loss_curve"], meta["eval_curve"]

    print(f"- finished: {meta['reason']} at step {meta['steps']} ({meta['samples']} samples), "
          f"wall time {args.wall_s:.0f} s ({args.wall_s / 60:.1f} min) including model load "
          f"and evaluations")
    print(f"- training speed at the end: {progress['steps_per_s']:.3f} steps/s "
          f"({progress['world_size']} rank(s))")
    if args.majority is not None:
        print(f"- majority-class accuracy on the same eval split: {args.majority:.3f}")
    print("\n| step | eval accuracy | eval loss | mean train loss since previous eval |")
    print("|---|---|---|---|")
    previous = 0
    for step, accuracy, loss in evals:
        window = [v for s, v in losses if previous < s <= step]
        train = f"{sum(window) / len(window):.3f}" if window else "-"
        print(f"| {step} | {accuracy:.3f} | {loss:.3f} | {train} |")
        previous = step
    if args.png:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, left = plt.subplots(figsize=(7, 3.5))
        left.plot([s for s, _ in losses], [v for _, v in losses], lw=0.8, label="train loss")
        left.plot([e[0] for e in evals], [e[2] for e in evals], "o-", label="eval loss")
        left.set_xlabel("step")
        left.set_ylabel("label-word loss")
        right = left.twinx()
        right.plot([e[0] for e in evals], [e[1] for e in evals], "s-", color="C2",
                   label="eval accuracy")
        if args.majority is not None:
            right.axhline(args.majority, color="C2", ls=":", lw=1, label="majority class")
        right.set_ylabel("accuracy")
        right.set_ylim(0, 1)
        handles = left.get_legend_handles_labels()[0] + right.get_legend_handles_labels()[0]
        labels = left.get_legend_handles_labels()[1] + right.get_legend_handles_labels()[1]
        left.legend(handles, labels, fontsize=8, loc="center right")
        left.set_title(f"{meta['model']} prompt tuning on {meta['task']}")
        fig.tight_layout()
        fig.savefig(args.png, dpi=110)
        print(f"\n![loss and accuracy]({args.png.name})")


if __name__ == "__main__":
    main()
