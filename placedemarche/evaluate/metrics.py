"""Clustering scores against true categories: ARI, NMI, homogeneity, completeness,
silhouette, and accuracy after matching clusters to categories (Hungarian algorithm).

Noise (label ``-1``, products a clusterer such as HDBSCAN puts in no cluster) is scored so
that leaving a product out is never rewarded:

- ARI, NMI, homogeneity and completeness: each noise product is a cluster of its own (a
  singleton), so it agrees with no other product of its category;
- matched accuracy: noise is matched to no category, so it counts as wrong; clusters are
  matched on the clustered products only;
- silhouette: computed on the clustered products only (a noise point has no cluster to be
  near); it is not a score against the categories, so it is the one that ignores noise;
- ``noise``: the fraction of products labelled noise, reported beside the scores.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

METRICS = ("ari", "nmi", "homogeneity", "completeness", "silhouette", "matched_accuracy")


#: Label of a product in no cluster.
NOISE = -1


def contingency(true: Sequence[int], pred: Sequence[int], n_true: int, n_pred: int) -> np.ndarray:
    """Counts of true category x cluster; noise (label -1) is in no column."""
    true, pred = np.asarray(true), np.asarray(pred)
    clustered = pred >= 0
    table = np.zeros((n_true, n_pred), dtype=np.int64)
    np.add.at(table, (true[clustered], pred[clustered]), 1)
    return table


def noise_counts(true: Sequence[int], pred: Sequence[int], n_true: int) -> np.ndarray:
    """Noise products per true category."""
    true, pred = np.asarray(true), np.asarray(pred)
    return np.bincount(true[pred < 0], minlength=n_true)[:n_true]


def n_clusters_of(pred: Sequence[int]) -> int:
    """Number of cluster labels used (0 .. max), noise aside."""
    pred = np.asarray(pred)
    return int(pred.max()) + 1 if pred.size and pred.max() >= 0 else 0


def _noise_as_singletons(pred: np.ndarray) -> np.ndarray:
    """Each noise product gets a cluster of its own, after the real clusters."""
    noise = pred < 0
    if not noise.any():
        return pred
    pred = pred.copy()
    pred[noise] = n_clusters_of(pred) + np.arange(int(noise.sum()))
    return pred


def match_clusters(true: Sequence[int], pred: Sequence[int], n_true: int, n_pred: int) -> dict[int, int]:
    """Cluster -> category mapping maximising agreement (one category per cluster at most)."""
    from scipy.optimize import linear_sum_assignment

    table = contingency(true, pred, n_true, n_pred)
    rows, cols = linear_sum_assignment(table, maximize=True)
    return {int(c): int(r) for r, c in zip(rows, cols)}


def matched_confusion(true: Sequence[int], pred: Sequence[int], n_true: int, n_pred: int) -> np.ndarray:
    """Confusion matrix (true category x matched cluster), clusters ordered by their category.

    Clusters left unmatched (when there are more clusters than categories) come last.
    """
    mapping = match_clusters(true, pred, n_true, n_pred)
    table = contingency(true, pred, n_true, n_pred)
    order = sorted(range(n_pred), key=lambda c: (mapping.get(c, n_true + c)))
    return table[:, order]


def score_clustering(true: Sequence[int], pred: Sequence[int], X=None, sample=None) -> dict[str, float]:
    """The :data:`METRICS` of one clustering, and ``noise`` (the fraction labelled -1),
    with noise scored as the module docstring says. Every score is linear in the number of
    products but the silhouette (quadratic): with ``sample`` (product indices, e.g. a
    stratified sample of a large catalogue) it is computed on those products only."""
    from sklearn import metrics

    true = np.asarray(true)
    pred = np.asarray(pred)
    n_true = int(true.max()) + 1
    n_pred = n_clusters_of(pred)
    mapping = match_clusters(true, pred, n_true, n_pred)
    lookup = np.full(n_pred + 1, -1)  # noise (-1) reads the last entry: never right
    for cluster, category in mapping.items():
        lookup[cluster] = category
    matched = lookup[pred]
    singletons = _noise_as_singletons(pred)
    clustered = pred >= 0
    scores = {
        "ari": metrics.adjusted_rand_score(true, singletons),
        "nmi": metrics.normalized_mutual_info_score(true, singletons),
        "homogeneity": metrics.homogeneity_score(true, singletons),
        "completeness": metrics.completeness_score(true, singletons),
        "matched_accuracy": float(np.mean(matched == true)),
        "silhouette": float("nan"),
        "noise": float(np.mean(~clustered)),
    }
    rows = np.flatnonzero(clustered) if sample is None else np.asarray(sample)[clustered[sample]]
    kept = pred[rows]
    if X is not None and 1 < len(np.unique(kept)) < len(kept):
        if len(rows) < X.shape[0]:
            X = X[rows]
        scores["silhouette"] = metrics.silhouette_score(X, kept, random_state=0)
    return {k: float(v) for k, v in scores.items()}
