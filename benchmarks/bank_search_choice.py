"""Which two-layer search to ship: regret against the exhaustive pick on tasks not held out.

    python benchmarks/bank_search_choice.py [--bank-dir ptctl/seed_bank] [--json FILE]

Query tasks: the seed bank's 12 sources, leave-one-out (a source's own entry is not eligible),
and 18 validation tasks made from the packaged corpora that are neither sources nor held-out
tasks of bank_convergence.py (VALIDATION below). Every entry is scored once on every query task
as a query scores (`scored_matrix`: 8 samples, bfloat16 where native); then each variant runs
on those losses at the same candidate budget (`Budget()`: 8 of the 11-12 eligible entries).
Regret = loss of the variant's pick - loss of the exhaustive pick (lower is better).

Variants: `Budget(nearest=0)` (the earlier search: medoids first), `nearest=1`,
`nearest=2` (the entries nearest the task by task embedding scored before the medoids), and
the budget's nearest entries alone (a reference, not a two-layer search). The rule, fixed with
the task list before any validation task was scored: ship the better of nearest=1
and nearest=2 if its mean regret over all 30 tasks is at most 0.8x nearest=0's and its mean
over the 18 validation tasks is not above nearest=0's; otherwise keep nearest=0.

The held-out tasks' regrets are printed last, for information only: they took no part.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

BBC = ("business", "entertainment", "politics", "sport", "tech")
TWEETS = ("negative", "neutral", "positive")


def _only(labels: tuple[str, ...]) -> dict[str, str]:
    return {label: label for label in labels}


def _vs_rest(labels: tuple[str, ...], one: str) -> dict[str, str]:
    return {label: "yes" if label == one else "no" for label in labels}


# No BBC topic pair: all ten are sources or held-out tasks.
VALIDATION = {
    "bbc-bus-ent-pol": ("bbc-topics", _only(("business", "entertainment", "politics"))),
    "bbc-bus-spo-tec": ("bbc-topics", _only(("business", "sport", "tech"))),
    "bbc-ent-pol-tec": ("bbc-topics", _only(("entertainment", "politics", "tech"))),
    "bbc-pol-spo-tec": ("bbc-topics", _only(("politics", "sport", "tech"))),
    "bbc-bus-ent-spo": ("bbc-topics", _only(("business", "entertainment", "sport"))),
    "bbc-business-vs-rest": ("bbc-topics", _vs_rest(BBC, "business")),
    "bbc-politics-vs-rest": ("bbc-topics", _vs_rest(BBC, "politics")),
    "bbc-tech-vs-rest": ("bbc-topics", _vs_rest(BBC, "tech")),
    "bbc-entertainment-vs-rest": ("bbc-topics", _vs_rest(BBC, "entertainment")),
    "bbc-4-alt-words": ("bbc-topics", {"business": "money", "entertainment": "film",
                                       "politics": "election", "tech": "internet"}),
    "tweets-pos-vs-neutral": ("tweet-sentiment", _only(("positive", "neutral"))),
    "tweets-positive-vs-rest": ("tweet-sentiment", _vs_rest(TWEETS, "positive")),
    "tweets-negative-vs-rest": ("tweet-sentiment", _vs_rest(TWEETS, "negative")),
    "tweets-3-good-bad": ("tweet-sentiment", {"negative": "bad", "neutral": "neutral",
                                               "positive": "good"}),
    "tweets-3-yes-no": ("tweet-sentiment", {"negative": "no", "neutral": "maybe",
                                             "positive": "yes"}),
    "tweets-happy-vs-okay": ("tweet-sentiment", {"positive": "happy", "neutral": "okay"}),
    "tweets-love-vs-hate": ("tweet-sentiment", {"positive": "love", "negative": "hate"}),
    "tweets-3-mood": ("tweet-sentiment", {"negative": "upset", "neutral": "indifferent",
                                           "positive": "pleased"}),
}


def score_queries(snap) -> tuple[list[tuple[str, object, str]], np.ndarray, list[np.ndarray]]:
    """The query tasks as (name, TaskSpec, kind: source / validation / held-out), every entry's
    loss on each as a query scores it [tasks, entries], and each task's embedding."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bank_convergence import HELD_OUT, make_spec

    from ptctl.bank.features import TaskEncoder, scoring_examples
    from ptctl.bank.query import SAMPLES, scored_matrix
    from ptctl.jobs.spec import TaskSpec
    from ptctl.tuning.models import load_base_model, scoring_dtype

    sources = [(e.id, TaskSpec(**e.task_spec), "source") for e in snap.entries]
    settings = {"max_length": 32, "eval_samples": 64, "max_train_samples": 1000}
    validation = [(name, TaskSpec(source=src, label_map=labels, **settings), "validation")
                  for name, (src, labels) in VALIDATION.items()]
    held = [(name, make_spec(name, "bank", 0).task, "held-out") for name in HELD_OUT]
    queries = sources + validation + held
    model, tokenizer = load_base_model("smollm2-135m", dtype=scoring_dtype())
    losses = scored_matrix(snap, [task for _, task, _ in queries], model, tokenizer)
    encoder = TaskEncoder.shared()
    vectors = []
    for _, task, _ in queries:
        _, texts, words, _ = scoring_examples(task, tokenizer, SAMPLES)
        vectors.append(encoder.task_embedding(texts, words))
    return queries, losses, vectors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bank-dir", default=str(Path(__file__).resolve().parent.parent /
                                                  "ptctl" / "seed_bank"))
    parser.add_argument("--json", metavar="FILE", help="also write every task's regrets here")
    args = parser.parse_args()

    from ptctl.bank.search import Budget, two_layer_search
    from ptctl.bank.store import Bank

    # The search as it was when this choice was made: layer 1 ranks medoids by similarity.
    budget_then = Budget(distinct_nearest=False, medoid_order="medoid")

    snap = Bank.for_model(args.bank_dir, "smollm2-135m").snapshot()
    ids = [e.id for e in snap.entries]
    column = {eid: j for j, eid in enumerate(ids)}
    queries, losses, vectors = score_queries(snap)
    features = snap.features["task"]

    def nearest_only(row, similarity, eligible, budget):
        pool = [eid for eid in ids if eid in eligible]
        top = [pool[int(i)] for i in np.argsort(-similarity(pool), kind="stable")
               [:budget.total(len(pool))]]
        return min(top, key=lambda eid: row[column[eid]]), len(top)

    def two_layer(nearest):
        def search(row, similarity, eligible, budget):
            result = two_layer_search(
                snap.clusters, lambda c: np.array([row[column[x]] for x in c]),
                replace(budget, nearest=nearest), similarity, eligible)
            return result.best, len(result.scored)
        return search

    variants = {"nearest=0 (previous)": two_layer(0), "nearest=1": two_layer(1),
                "nearest=2": two_layer(2), "nearest entries only (reference)": nearest_only}
    results: dict[str, list[dict]] = {}
    for name, search in variants.items():
        rows = []
        for (task, _, kind), row, vector in zip(queries, losses, vectors):
            eligible = {eid for eid in ids if eid != task}
            pick, scored = search(row, lambda c, v=vector: features[[column[x] for x in c]] @ v,
                                  eligible, budget_then)
            best = min(row[column[eid]] for eid in eligible)
            rows.append({"task": task, "kind": kind, "pick": pick, "scored": scored,
                         "regret": round(float(row[column[pick]] - best), 4)})
        results[name] = rows

    def mean(rows, kinds):
        return float(np.mean([r["regret"] for r in rows if r["kind"] in kinds]))

    print(f"{len(ids)} entries; clusters on {snap.clusters.features} features: "
          f"{len(snap.clusters.medoids)}; budget {Budget().total(len(ids) - 1)} candidates\n")
    print("| variant | mean regret, 30 tasks | sources (LOO, 12) | validation (18) "
          "| tasks with regret > 0.25 | max scored | held-out (11; not used) |")
    print("|---|---|---|---|---|---|---|")
    for name, rows in results.items():
        kept = [r for r in rows if r["kind"] != "held-out"]
        print(f"| {name} | {mean(rows, ('source', 'validation')):.3f} | "
              f"{mean(rows, ('source',)):.3f} | {mean(rows, ('validation',)):.3f} | "
              f"{sum(r['regret'] > 0.25 for r in kept)} | {max(r['scored'] for r in rows)} | "
              f"{mean(rows, ('held-out',)):.3f} |")
    base = results["nearest=0 (previous)"]
    better = min(("nearest=1", "nearest=2"),
                 key=lambda n: mean(results[n], ("source", "validation")))
    ship = (mean(results[better], ("source", "validation"))
            <= 0.8 * mean(base, ("source", "validation"))
            and mean(results[better], ("validation",)) <= mean(base, ("validation",)))
    print(f"\nrule: {'ship ' + better if ship else 'keep nearest=0'}\n")
    print("| task | kind | nearest=0 pick (regret) | nearest=2 pick (regret) |")
    print("|---|---|---|---|")
    for a, b in zip(base, results["nearest=2"]):
        if a["regret"] > 0 or b["regret"] > 0 or a["kind"] == "held-out":
            print(f"| {a['task']} | {a['kind']} | {a['pick']} ({a['regret']:.3f}) | "
                  f"{b['pick']} ({b['regret']:.3f}) |")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
