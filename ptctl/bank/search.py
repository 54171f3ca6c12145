"""The two-layer search: cluster medoids first, then the members of the best clusters.

The search is written against a `score(ids) -> losses` callable so that the same code runs a
real query (LM forward passes) and the build-time comparison of feature kinds (a precomputed
loss matrix, `selection_regret`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ptctl.bank.store import Clusters


@dataclass(frozen=True)
class Budget:
    """How many candidates a query may score: max(minimum, scale * sqrt(N)).

    The `nearest` entries by task embedding are scored first (the faiss pre-filter's best
    guesses; at least one candidate is left for layer 1), then half of the rest goes to
    medoids and the remainder to members. The nearest entries guard against a cluster whose
    medoid scores badly on the new task while one of its members is the best start
    (benchmarks/bank_search_choice.py chose 2). They come from different clusters
    (`distinct_nearest`), and layer 1 spreads its medoids over the clustering features
    (`medoid_order="spread"`: the medoid most similar to the new task, then farthest points),
    so that one bad similarity guess cannot leave a whole region of the bank unscored. Both
    were chosen by benchmarks/bank_search_scale.py on the label_words seed bank and banks of
    its copies up to 10,000 entries; "medoid" and "member" are the measured alternatives.
    """

    scale: float = 0.6
    minimum: int = 8
    nearest: int = 2
    distinct_nearest: bool = True    # the nearest entries come from different clusters
    medoid_order: str = "spread"     # layer 1's medoids: spread over the clustering features
    #  ("spread"), or ranked by the medoid's similarity ("medoid") or by their most similar
    #  member ("member")

    def __post_init__(self) -> None:
        if not self.scale > 0:
            raise ValueError(f"scale: got {self.scale!r}, expected > 0")
        if not isinstance(self.minimum, int) or self.minimum < 2:
            raise ValueError(f"minimum: got {self.minimum!r}, expected an integer >= 2")
        if not isinstance(self.nearest, int) or self.nearest < 0:
            raise ValueError(f"nearest: got {self.nearest!r}, expected an integer >= 0")
        if self.medoid_order not in ("medoid", "member", "spread"):
            raise ValueError(f"medoid_order: got {self.medoid_order!r}, expected medoid, member "
                             "or spread")

    def total(self, n: int) -> int:
        return min(n, max(self.minimum, math.ceil(self.scale * math.sqrt(n))))


@dataclass
class SearchResult:
    best: str
    loss: float
    scored: dict[str, float]       # every candidate the LM scored, in order
    clusters_expanded: int


def two_layer_search(clusters: Clusters, score: Callable[[list[str]], np.ndarray],
                     budget: Budget = Budget(),
                     similarity: Callable[[list[str]], np.ndarray] | None = None,
                     eligible: set[str] | None = None,
                     placement: Callable[[list[str]], np.ndarray] | None = None
                     ) -> SearchResult:
    """Layer 1 scores cluster medoids, layer 2 the members of the best clusters.

    `similarity(ids)` (task embedding similarity to the new task, higher = closer; the cheap
    faiss pre-filter) picks the `budget.nearest` entries scored before layer 1, and which
    medoids (or members) are scored when there are more than the budget allows. `eligible`
    limits the search to some entries (e.g. a prompt length). `placement(ids)` gives entries'
    clustering features (`prepared_features` rows), which `Budget.medoid_order="spread"` needs.
    """
    groups = [[m for m in g if eligible is None or m in eligible] for g in clusters.members]
    reps = []
    for medoid, group in zip(clusters.medoids, groups):
        if group:
            reps.append(medoid if medoid in group else group[0])
    groups = [g for g in groups if g]
    n = sum(len(g) for g in groups)
    if n == 0:
        raise ValueError("no eligible entries to search")
    total = budget.total(n)
    scored: dict[str, float] = {}
    pool = [m for g in groups for m in g]
    pool_sims = similarity(pool) if similarity else None
    if pool_sims is not None and budget.nearest and total > 1:
        k = min(budget.nearest, total - 1)
        group_of = [c for c, g in enumerate(groups) for _ in g]
        nearest, taken = [], set()
        for i in np.argsort(-pool_sims, kind="stable"):
            if budget.distinct_nearest and group_of[int(i)] in taken:
                continue
            nearest.append(pool[int(i)])
            taken.add(group_of[int(i)])
            if len(nearest) == k:
                break
        scored.update(zip(nearest, map(float, score(nearest))))
    layer1 = min(len(reps), max(1, (total - len(scored)) // 2))
    order = list(range(len(reps)))
    if layer1 < len(reps):
        if pool_sims is None:
            sims = np.zeros(len(reps))
        elif budget.medoid_order == "spread":
            if placement is None:
                raise ValueError("medoid_order 'spread' needs the entries' clustering features")
            sims = -_farthest_point_rank(placement(reps), int(np.argmax(similarity(reps))))
        elif budget.medoid_order == "member":
            ends = np.cumsum([len(g) for g in groups])
            sims = np.array([pool_sims[end - len(g):end].max() for g, end in zip(groups, ends)])
        else:
            sims = similarity(reps)
        order = [int(i) for i in np.argsort(-sims, kind="stable")[:layer1]]
    first = [reps[i] for i in order if reps[i] not in scored]
    if first:
        scored.update(zip(first, map(float, score(first))))
    ranked = sorted(order, key=lambda i: scored[reps[i]])
    left = total - len(scored)
    expanded = 0
    for i in ranked:
        if left <= 0:
            break
        members = [m for m in groups[i] if m not in scored]
        if similarity and len(members) > left:
            sims = similarity(members)
            members = [members[int(j)] for j in np.argsort(-sims, kind="stable")]
        members = members[:left]
        expanded += 1
        if members:
            for mid, loss in zip(members, score(members)):
                scored[mid] = float(loss)
            left -= len(members)
    best = min(scored, key=scored.get)
    return SearchResult(best, scored[best], scored, expanded)


def _farthest_point_rank(points: np.ndarray, first: int) -> np.ndarray:
    """Rank of each point in the greedy farthest-point order that starts at `first`: each next
    point is the one farthest from all ranked so far."""
    rank = np.zeros(len(points), dtype=np.int64)
    ranked = np.zeros(len(points), dtype=bool)
    dist = np.full(len(points), np.inf)
    current = first
    for r in range(len(points)):
        rank[current], ranked[current] = r, True
        dist = np.minimum(dist, ((points - points[current]) ** 2).sum(1))
        if r + 1 < len(points):
            current = int(np.argmax(np.where(ranked, -1.0, dist)))
    return rank


def selection_regret(ids: list[str], losses: np.ndarray, own: list[int | None],
                     clusters: Clusters, budget: Budget = Budget(),
                     task_features: np.ndarray | None = None,
                     placement: np.ndarray | None = None) -> dict[str, float]:
    """How well a clustering selects, from a loss matrix [tasks, entries] already scored.

    For each task, the task's own entry (own[t]) is left out, as if the task were new; regret
    is the loss of the two-layer pick minus the loss of the exhaustive pick. Lower is better.
    With `task_features` (a row per entry) the search runs as a query's does, the nearest
    entries first, the own entry's task embedding standing in for the new task's.
    `placement` holds the clustering features (`prepared_features` rows) for the spread order.
    """
    regrets, counts = [], []
    column = {eid: j for j, eid in enumerate(ids)}
    for t in range(losses.shape[0]):
        eligible = {eid for j, eid in enumerate(ids) if j != own[t]}
        if not eligible:
            continue
        row = losses[t]
        query = None if task_features is None or own[t] is None else task_features[own[t]]
        similarity = None if query is None else (
            lambda c, q=query: task_features[[column[x] for x in c]] @ q)
        result = two_layer_search(clusters, lambda c: np.array([row[column[x]] for x in c]),
                                  budget, similarity, eligible,
                                  None if placement is None else
                                  lambda c: placement[[column[x] for x in c]])
        best = min(row[column[x]] for x in eligible)
        regrets.append(result.loss - best)
        counts.append(len(result.scored))
    return {"mean_regret": float(np.mean(regrets)) if regrets else 0.0,
            "mean_candidates": float(np.mean(counts)) if counts else 0.0,
            "tasks": len(regrets)}
