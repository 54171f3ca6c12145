"""Checkpoint save + load time of a SmolLM2-sized prompt-tuning record (goal: < 1 s).

The record is what train() saves: an 8 x 576 prompt (SmolLM2-135M's hidden size), AdamW state
after real steps, the LR scheduler, RNG state and a 1,000-step loss history. Save includes the
fsyncs and the rename; load includes both checksum checks.

    python benchmarks/tune_checkpoint.py [--tokens 8] [--hidden 576] [--repeat 20]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from ptctl.tuning.checkpoint import load_checkpoint, save_checkpoint
from ptctl.tuning.train import TrainState


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=576)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()

    prompt = torch.nn.Parameter(torch.randn(args.tokens, args.hidden))
    optimizer = torch.optim.AdamW([prompt], lr=0.01)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    for _ in range(3):
        prompt.grad = torch.randn_like(prompt)
        optimizer.step()
        scheduler.step()
    state = TrainState(step=1000, samples=8000,
                       losses=[[s, 1.0 / s] for s in range(1, 1001)],
                       evals=[[s, 0.5, 1.0] for s in range(0, 1001, 50)])
    record = state.state_dict(prompt, optimizer, scheduler)

    saves, loads = [], []
    with tempfile.TemporaryDirectory(dir=Path.cwd()) as root:
        folder = Path(root) / "checkpoints"
        for i in range(args.repeat):
            started = time.perf_counter()
            path = save_checkpoint(folder, i, record, keep=2)
            saves.append(time.perf_counter() - started)
            started = time.perf_counter()
            back = load_checkpoint(path)
            loads.append(time.perf_counter() - started)
            assert torch.equal(back["prompt"], prompt.detach())
        size = sum(p.stat().st_size for p in path.iterdir())
    print("| operation | median s | max s |")
    print("|---|---|---|")
    print(f"| save (write, fsync, rename, prune) | {statistics.median(saves):.4f} | "
          f"{max(saves):.4f} |")
    print(f"| load (read, verify checksums) | {statistics.median(loads):.4f} | {max(loads):.4f} |")
    print(f"| save + load | {statistics.median(s + l for s, l in zip(saves, loads)):.4f} | "
          f"{max(s + l for s, l in zip(saves, loads)):.4f} |")
    print(f"\ncheckpoint size {size / 1024:.1f} KiB ({args.tokens} x {args.hidden} prompt + AdamW "
          f"state + 1,000-step history), {args.repeat} repeats")


if __name__ == "__main__":
    main()
