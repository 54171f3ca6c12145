"""Query cost of the two-layer search: seconds and LM-scored candidates vs bank size.

    python benchmarks/bank_query_cost.py --sizes 100,1000,10000

Banks larger than the seed bank are made of perturbed copies of its real SmolLM2 prompts
(prompt + 2% Gaussian noise; their features perturbed the same way): for timing only, since
their tensors are not tuned prompts. Each is written through the normal publish path
(Writer.publish + faiss k-means clustering) into a temp folder, then queried with one held-out
task spec, the model loaded once (its load time is reported apart: a warm pool has it).
"search s" is QueryResult.seconds (task samples, pre-filter, LM scoring); "open s" reads the
manifest and the faiss indexes under the shared lock. "pick from" is the real prompt the
picked copy was made from; on a bank of copies the best pick is (a copy of) the seed bank's
exhaustive pick, so "same as exhaustive" says whether the search found it without scoring all.
"load" is the 1-minute load average when the query started (os.getloadavg).
Each query runs once per scoring dtype (--dtypes: float32, then what `ptctl bank query` uses
here), one after the other on the same bank; the ratio column is against the first.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def synthetic_copies(snap, n: int, rng):
    """Yield n perturbed copies of `snap`'s entries, round-robin: (entry id, index of the entry
    copied, prompt + 2% Gaussian noise, {feature kind: row perturbed the same way})."""
    import torch

    tensors = [snap.prompt(e) for e in snap.entries]
    for i in range(n):
        j = i % len(tensors)
        tensor = tensors[j]
        noisy = tensor + 0.02 * tensor.std() * torch.from_numpy(
            rng.standard_normal(tensor.shape).astype(np.float32))
        rows = {}
        for kind, mat in snap.features.items():
            row = mat[j] + 0.02 * mat[j].std() * rng.standard_normal(mat.shape[1])
            if kind == "task":
                row = row / np.linalg.norm(row)
            rows[kind] = row.astype(np.float32)
        yield f"{snap.entries[j].id}-copy{i}", j, noisy, rows


def synthetic_bank(seed_bank, root: Path, n: int, rng) -> float:
    """Publish an n-entry bank of perturbed copies of `seed_bank`'s entries; build seconds."""
    import dataclasses

    from ptctl.bank.cluster import cluster
    from ptctl.bank.store import Bank, encode_prompt, sha256_bytes

    snap = seed_bank.snapshot()
    started = time.perf_counter()
    entries, tensors = [], {}
    feats = {k: [] for k in snap.features}
    for eid, j, noisy, rows in synthetic_copies(snap, n, rng):
        data = encode_prompt(noisy)
        entries.append(dataclasses.replace(snap.entries[j], id=eid, sha256=sha256_bytes(data)))
        tensors[eid] = data
        for kind, row in rows.items():
            feats[kind].append(row)
    feats = {k: np.stack(v) for k, v in feats.items()}
    kind = (snap.manifest.get("selection") or {}).get("chosen", "behaviour")
    bank = Bank(root)
    with bank.writing() as writer:
        writer.publish(snap.manifest["model"], entries, tensors, feats,
                       cluster([e.id for e in entries], feats[kind], kind),
                       {"probe_version": snap.manifest.get("probe_version"),
                        "selection": snap.manifest.get("selection")})
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,1000,10000")
    parser.add_argument("--bank-dir", default=str(Path(__file__).resolve().parent.parent /
                                                  "ptctl" / "seed_bank"))
    parser.add_argument("--task", default="tweets-great-vs-awful")
    parser.add_argument("--samples", type=int, default=None,
                        help="task samples per candidate (default: ptctl bank query's)")
    parser.add_argument("--dtypes", default="float32,auto",
                        help="scoring dtypes to time, the first is the baseline of the ratio "
                             "(auto: what ptctl bank query uses on this machine)")
    args = parser.parse_args()

    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bank_convergence import make_spec

    from ptctl.bank.features import TaskEncoder
    from ptctl.bank.query import SAMPLES, run_query
    from ptctl.bank.store import Bank
    from ptctl.tuning.models import load_base_model, scoring_dtype

    seed = Bank.for_model(args.bank_dir, "smollm2-135m")
    spec = make_spec(args.task, "bank", 0, 10)
    dtypes = [scoring_dtype(d) for d in args.dtypes.split(",")]
    models = {}
    t0 = time.perf_counter()
    for dtype in dtypes:
        models[dtype] = load_base_model(spec.model, dtype=dtype)
        with torch.inference_mode():  # one-off kernel set-up, paid once by any process
            models[dtype][0](torch.zeros((4, 32), dtype=torch.long))
    TaskEncoder.shared()
    load_s = time.perf_counter() - t0
    samples = args.samples or SAMPLES
    base = dtypes[0]
    print(f"models ({', '.join(dtypes)}) + encoder load: {load_s:.1f} s; torch threads "
          f"{torch.get_num_threads()}; {samples} samples per candidate")
    print("| entries | clusters | mode | LM-scored candidates | sqrt(N) | "
          + " | ".join(f"search s, {d}" for d in dtypes)
          + "".join(f" | {d} / {base}" for d in dtypes[1:])
          + " | open s | build s | pick from | same as exhaustive | load |")
    print("|---|---|---|---|---|" + "---|" * (2 * len(dtypes) - 1) + "---|---|---|---|---|")
    rng = np.random.default_rng(0)
    results = []
    sizes = ["seed"] + [int(s) for s in args.sizes.split(",")]
    reference = None  # the seed bank's exhaustive pick (baseline dtype)
    with tempfile.TemporaryDirectory(prefix="bankcost-") as tmp:
        for size in sizes:
            build_s = 0.0
            bank = seed
            if size != "seed":
                bank = Bank(Path(tmp) / f"n{size}")
                build_s = synthetic_bank(seed, bank.root, size, rng)
            t0 = time.perf_counter()
            snap = bank.snapshot()
            open_s = time.perf_counter() - t0
            modes = [True, False] if size == "seed" else [False]
            for exhaustive in modes:
                load = os.getloadavg()[0]
                runs = {}
                for dtype in dtypes:
                    model, tokenizer = models[dtype]
                    with torch.inference_mode():
                        runs[dtype] = run_query(snap, spec, model, tokenizer,
                                                exhaustive=exhaustive, samples=samples)
                n = len(snap.entries)
                picks = {d: r.best_entry.split("-copy")[0] for d, r in runs.items()}
                if reference is None:
                    reference = picks[base]
                r = runs[base]
                row = {"entries": n, "clusters": len(snap.clusters.medoids),
                       "exhaustive": exhaustive, "samples": samples,
                       "candidates_scored": r.candidates_scored,
                       "seconds": {d: round(x.seconds, 2) for d, x in runs.items()},
                       "open_seconds": round(open_s, 2), "build_seconds": round(build_s, 1),
                       "prompt_id": {d: x.best_entry for d, x in runs.items()},
                       "score": {d: round(x.best_entry_score, 4) for d, x in runs.items()},
                       "pick_from": picks,
                       "same_as_exhaustive": {d: p == reference for d, p in picks.items()},
                       "loadavg_1min": round(load, 2)}
                results.append(row)
                same = " / ".join("yes" if p == reference else "no" for p in picks.values())
                pick = " / ".join(dict.fromkeys(picks.values()))
                print(f"| {n} | {row['clusters']} | {'exhaustive' if exhaustive else 'two-layer'}"
                      f" | {r.candidates_scored} | {math.sqrt(n):.1f} | "
                      + " | ".join(f"{x.seconds:.2f}" for x in runs.values())
                      + "".join(f" | {runs[d].seconds / r.seconds:.2f}" for d in dtypes[1:])
                      + f" | {open_s:.2f} | {build_s:.1f} | {pick} | {same} | {load:.2f} |",
                      flush=True)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
