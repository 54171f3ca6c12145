"""Layer 1 of the bank: k-means clusters whose medoid (the member nearest the centroid)
stands for the cluster. ptctl.bank.search searches over them.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from ptctl.bank.store import Clusters


def n_clusters(n: int) -> int:
    """sqrt(N) clusters of about sqrt(N) members: layer 1 + one cluster ~ 2 sqrt(N)."""
    return max(1, min(n, math.ceil(math.sqrt(n))))


def prepared_features(features: np.ndarray, kind: str) -> np.ndarray:
    """The features as k-means sees them: behaviour standardised per dimension, then each row
    normalised."""
    x = np.asarray(features, dtype=np.float32)
    if kind == "behaviour":  # hidden states: per-dimension scales differ by orders of magnitude
        x = (x - x.mean(0)) / (x.std(0) + 1e-6)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x / np.maximum(norms, 1e-8), dtype=np.float32)


def cluster(ids: Sequence[str], features: np.ndarray, kind: str, seed: int = 0) -> Clusters:
    """faiss k-means on the (normalised) features; each medoid is a real entry."""
    import faiss

    ids = list(ids)
    if not ids:
        return Clusters(kind, [], [])
    x = prepared_features(features, kind)
    k = n_clusters(len(ids))
    # OpenMP threads spin-wait: on shared cores they cost more than this small job gains.
    faiss.omp_set_num_threads(1)
    if k == 1:
        centroids = x.mean(0, keepdims=True)
        assign = np.zeros(len(ids), dtype=np.int64)
    else:
        km = faiss.Kmeans(x.shape[1], k, niter=25, seed=seed, verbose=False,
                          min_points_per_centroid=1)
        km.train(x)
        centroids = km.centroids
        _, assign = km.index.search(x, 1)
        assign = assign[:, 0]
    medoids, members = [], []
    for c in range(len(centroids)):
        rows = np.flatnonzero(assign == c)
        if rows.size == 0:
            continue
        dist = ((x[rows] - centroids[c]) ** 2).sum(1)
        medoids.append(ids[int(rows[int(np.argmin(dist))])])
        members.append([ids[int(r)] for r in rows])
    return Clusters(kind, medoids, members)
