"""Does scoring in bfloat16 pick the same bank entries as float32?

    python benchmarks/bank_scoring_dtype.py [--samples 8,16]

`ptctl bank query` scores in bfloat16 where the CPU runs it natively (about twice as fast:
bank_query_cost.py). A query only uses the ranking of the candidates' scores, so this scores
every seed-bank entry on every held-out task of bank_convergence.py with both dtypes and
prints, per task and sample count, both exhaustive picks, the rank correlation (Spearman) of
the 12 scores, the largest score difference, and both two-layer picks (what a query returns).
Seconds are the whole matrix per dtype, model loaded (a ratio measured in this run). First it
times one matmul of the model's MLP shape in both dtypes, since the query is matmul-bound.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.argsort().argsort(), b.argsort().argsort())[0, 1])


def matmul_gflops(dtype, rows: int = 3072, hidden: int = 576, inner: int = 1536) -> float:
    """GFLOPS of [rows, hidden] x [hidden, inner]: SmolLM2-135M's MLP on 64 sequences x 48."""
    import torch

    x, w = torch.randn(rows, hidden, dtype=dtype), torch.randn(inner, hidden, dtype=dtype)
    torch.nn.functional.linear(x, w)
    t0, n = time.perf_counter(), 20
    for _ in range(n):
        torch.nn.functional.linear(x, w)
    return 2 * rows * hidden * inner * n / (time.perf_counter() - t0) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", default="8,16", help="sample counts to compare")
    parser.add_argument("--bank-dir", default=str(Path(__file__).resolve().parent.parent /
                                                  "ptctl" / "seed_bank"))
    args = parser.parse_args()

    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bank_convergence import HELD_OUT, make_spec

    from ptctl.bank.query import run_query, scored_matrix
    from ptctl.bank.store import Bank
    from ptctl.tuning.models import load_base_model

    fp32, bf16 = matmul_gflops(torch.float32), matmul_gflops(torch.bfloat16)
    print(f"matmul 3072x576 by 576x1536 on {torch.get_num_threads()} threads: float32 "
          f"{fp32:.0f} GFLOPS, bfloat16 {bf16:.0f} GFLOPS ({bf16 / fp32:.2f}x)")
    snap = Bank.for_model(args.bank_dir, "smollm2-135m").snapshot()
    ids = [e.id for e in snap.entries]
    names = list(HELD_OUT)
    tasks = [make_spec(t, "bank", 0).task for t in names]
    for samples in (int(n) for n in args.samples.split(",")):
        scores, seconds, two_layer = {}, {}, {}
        for dtype in ("float32", "bfloat16"):
            model, tokenizer = load_base_model("smollm2-135m", dtype=dtype)
            t0 = time.perf_counter()
            scores[dtype] = scored_matrix(snap, tasks, model, tokenizer, samples=samples)
            seconds[dtype] = time.perf_counter() - t0
            with torch.inference_mode():
                two_layer[dtype] = [run_query(snap, make_spec(t, "bank", 0), model, tokenizer,
                                              samples=samples).best_entry for t in names]
        print(f"\n{samples} samples: {len(ids)} entries x {len(names)} tasks in "
              f"{seconds['float32']:.1f} s float32, {seconds['bfloat16']:.1f} s bfloat16 "
              f"({seconds['bfloat16'] / seconds['float32']:.2f}x)\n")
        print("| task | float32 pick | bfloat16 pick | same | Spearman | max abs diff "
              "| two-layer pick, float32 | two-layer pick, bfloat16 |")
        print("|---|---|---|---|---|---|---|---|")
        for t, name in enumerate(names):
            a, b = scores["float32"][t], scores["bfloat16"][t]
            pa, pb = ids[int(a.argmin())], ids[int(b.argmin())]
            print(f"| {name} | {pa} | {pb} | {'yes' if pa == pb else 'no'} | "
                  f"{spearman(a, b):.3f} | {float(np.abs(a - b).max()):.3f} | "
                  f"{two_layer['float32'][t]} | {two_layer['bfloat16'][t]} |", flush=True)


if __name__ == "__main__":
    main()
